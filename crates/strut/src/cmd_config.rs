//! `strut config validate`: truss's verdict on a config.yaml plus strut's own checks.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use strut_config::{Report, Severity, ValidateOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Model directory or config file
    #[arg(default_value = "config.yaml")]
    pub path: PathBuf,
    /// Treat unknown keys as errors, as `truss push` does
    #[arg(long)]
    pub strict: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Exit status: 0 without errors, 1 with at least one, 2 when the file cannot be read.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let options = ValidateOptions {
        strict: args.strict,
        ..ValidateOptions::default()
    };
    let report = match strut_config::validate_path(&args.path, &options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shown = strut_config::config_path(&args.path);
    let out = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)
            .map(|s| s + "\n")
            .unwrap_or_default(),
        Format::Text => render_text(&shown.display().to_string(), &report),
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn render_text(file: &str, report: &Report) -> String {
    let count = |s: Severity| {
        report
            .diagnostics
            .iter()
            .filter(|d| d.severity == s)
            .count()
    };
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut out = String::new();
    for d in &report.diagnostics {
        out.push_str(&format!("{d}\n"));
    }
    let n = &report.normalized;
    out.push_str(&format!(
        "\nnormalized: model_name={} python_version={} accelerator={} use_gpu={} cpu={} memory={} predict_concurrency={}\n",
        n.model_name.as_deref().unwrap_or("(none)"),
        n.python_version,
        n.accelerator.as_deref().unwrap_or("(none)"),
        n.use_gpu,
        n.cpu,
        n.memory,
        n.predict_concurrency,
    ));
    let verdict = if report.valid { "valid" } else { "INVALID" };
    out.push_str(&format!(
        "{file}: {verdict} ({}, {})\n",
        plural(errors, "error"),
        plural(warnings, "warning")
    ));
    out
}
