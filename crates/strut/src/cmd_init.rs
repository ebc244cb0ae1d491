//! `strut init NAME`: a model directory that validates cleanly and serves strut's built-in
//! echo model until it is pointed at a real one.

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};
use strut_config::{Gpu, Severity, ValidateOptions};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Name of the new model directory
    pub name: String,
    /// Python version to pin (one truss supports)
    #[arg(long, default_value = "py312", value_parser = clap::builder::PossibleValuesParser::new(strut_config::schema::PYTHON_VERSIONS))]
    pub python_version: String,
    /// GPU to request, as TYPE or TYPE:COUNT (e.g. A10G, H100:2); CPU only when omitted
    #[arg(long)]
    pub accelerator: Option<String>,
}

pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    let dir = Path::new(&args.name);
    let model_name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .context("NAME must name a directory")?;
    check_name(model_name)?;
    if dir.exists()
        && fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    if let Some(a) = &args.accelerator {
        let gpu = a.split(':').next().unwrap_or("");
        if Gpu::parse(gpu).is_none() {
            bail!(
                "unsupported accelerator type `{gpu}`; valid: {}",
                Gpu::valid_list()
            );
        }
    }
    let text = config_yaml(model_name, args);
    // The scaffold promises a clean validation; check the text before writing anything
    // (a bad --accelerator count, or a name whose size does not fit the GPU, stops here).
    let report = strut_config::validate_str(&text, dir, &ValidateOptions::default());
    let problems: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity != Severity::Info)
        .map(|d| d.to_string())
        .collect();
    if !problems.is_empty() {
        bail!(
            "the new config would not validate cleanly:\n{}",
            problems.join("\n")
        );
    }
    fs::create_dir_all(dir.join("data")).with_context(|| format!("creating {}", dir.display()))?;
    // Keeps the empty data directory in version control.
    fs::write(dir.join("data/.gitkeep"), "")?;
    fs::write(dir.join("config.yaml"), text)?;
    println!("Created {}/ with config.yaml and data/.", dir.display());
    println!("  strut config validate {}", dir.display());
    println!("  strut serve {}", dir.display());
    Ok(())
}

/// A model name that is also a safe directory name everywhere: 1 to 64
/// ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit
/// (so no hidden directory, no `..`, no spaces or shell characters).
fn check_name(name: &str) -> anyhow::Result<()> {
    let starts_well = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !(starts_well && chars_ok && name.len() <= 64) {
        bail!(
            "`{name}` is not a valid model name: use 1 to 64 letters, digits, `-`, `_` or `.`, \
             starting with a letter or digit"
        );
    }
    Ok(())
}

fn config_yaml(model_name: &str, args: &InitArgs) -> String {
    // JSON strings are valid YAML double-quoted scalars, so any name is safe to embed.
    let name = serde_json::to_string(model_name).unwrap_or_else(|_| "\"model\"".into());
    let accelerator = match &args.accelerator {
        Some(a) => format!("  accelerator: {a}\n"),
        None => {
            "  # accelerator: A10G      # a GPU type, or TYPE:COUNT such as H100:2\n".to_string()
        }
    };
    format!(
        "# Truss-compatible model config, created by `strut init`.\n\
         model_name: {name}\n\
         # The class serving requests; `Echo` is strut's built-in echo model.\n\
         model_class_name: Echo\n\
         model_metadata:\n\
         \x20 # Sample input for the playground and `strut predict`.\n\
         \x20 example_model_input:\n\
         \x20   prompt: \"Hello, world\"\n\
         python_version: {python}\n\
         # Pin every package to one version (name==X.Y.Z).\n\
         requirements: []\n\
         resources:\n\
         \x20 cpu: \"1\"\n\
         \x20 memory: 2Gi\n\
         {accelerator}\
         runtime:\n\
         \x20 predict_concurrency: 1\n\
         # Secret names the model reads; values live in the secret store, never here.\n\
         secrets: {{}}\n",
        python = args.python_version,
    )
}
