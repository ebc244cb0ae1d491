//! `strut tokenizer export`: writes the served model's tokenizer as a
//! directory that `transformers.AutoTokenizer.from_pretrained` loads, so
//! benchmark clients (genai-bench) build prompts of exactly N tokens and
//! count output tokens as the model does, with no hub access.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use strut_model::{ModelInstance, Registry, capabilities::TokenizerFiles};
use strut_server::{SpecOptions, load_validated, spec_for};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The model directory (or its config.yaml).
    #[arg(default_value = ".")]
    pub model: PathBuf,
    /// The directory to write tokenizer.json and tokenizer_config.json into.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Where the model's declared secrets are read from.
    #[arg(long, env = "STRUT_SECRETS_DIR", default_value = "/secrets")]
    pub secrets_dir: PathBuf,
}

pub fn export(args: &ExportArgs, registry: &Registry) -> ExitCode {
    match run(args, registry) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ExportArgs, registry: &Registry) -> anyhow::Result<Vec<PathBuf>> {
    let files = tokenizer_files(&args.model, &args.secrets_dir, registry)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let tokenizer = args.out.join("tokenizer.json");
    let config = args.out.join("tokenizer_config.json");
    std::fs::write(&tokenizer, files.tokenizer)
        .with_context(|| format!("writing {}", tokenizer.display()))?;
    std::fs::write(&config, serde_json::to_string_pretty(&files.config)?)
        .with_context(|| format!("writing {}", config.display()))?;
    Ok(vec![tokenizer, config])
}

/// Loads the model as `serve` would (the same config checks, secrets and
/// weights) and asks its text-generation capability for the files.
fn tokenizer_files(
    model: &Path,
    secrets_dir: &Path,
    registry: &Registry,
) -> anyhow::Result<TokenizerFiles> {
    let (loaded, _warnings) = load_validated(model)?;
    let class = &loaded.config.model_class_name;
    if !registry.contains(class)
        && let Some(why) = crate::models::missing_builtin(class)
    {
        bail!(why);
    }
    let options = SpecOptions {
        secrets_dir,
        environment: None,
    };
    let spec = spec_for(&loaded, "export".into(), registry, &options)?;
    let mut instance = registry
        .create(&spec.model_class, spec.init)
        .map_err(|e| anyhow!("{e}"))?;
    instance
        .load()
        .map_err(|e| anyhow!("loading the model: {e}"))?;
    let generation = match &instance {
        ModelInstance::Blocking(m) => m.text_generation(),
        ModelInstance::Async(m) => m.text_generation(),
    };
    let Some(generation) = generation else {
        bail!(
            "model class `{}` does not generate text, so it has no tokenizer to export",
            spec.model_class
        );
    };
    generation.tokenizer_files().ok_or_else(|| {
        anyhow!(
            "model `{}` cannot export its tokenizer in Hugging Face form",
            generation.model_id()
        )
    })
}
