//! Findings about a config and the report the validator returns.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One finding. `code` is stable and snake_case so tools can match on it; `path` is the key
/// path in the config (`resources.accelerator`, `model_cache[1].use_volume`, "" for the file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub code: String,
    pub severity: Severity,
    pub path: String,
    pub message: String,
    pub hint: String,
    /// Line in config.yaml where the offending key or value starts, when known. Kept out of
    /// the JSON form, whose shape is fixed; the text form prints it.
    #[serde(skip)]
    pub line: Option<usize>,
}

impl Diagnostic {
    pub fn new(
        severity: Severity,
        code: &str,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code: code.to_string(),
            severity,
            path: path.into(),
            message: message.into(),
            hint: hint.into(),
            line: None,
        }
    }

    pub fn error(
        code: &str,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, code, path, message, hint)
    }

    pub fn warning(
        code: &str,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, code, path, message, hint)
    }

    pub fn info(
        code: &str,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Info, code, path, message, hint)
    }

    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line.filter(|l| *l > 0);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.severity, self.code)?;
        if !self.path.is_empty() {
            write!(f, " {}", self.path)?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// The values truss derives that matter most when reading a config, as `strut config
/// validate --format json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalized {
    pub model_name: Option<String>,
    pub model_class_name: String,
    pub python_version: String,
    /// truss's string form (`A10G:2`), or null without a GPU.
    pub accelerator: Option<String>,
    pub use_gpu: bool,
    pub cpu: String,
    pub memory: String,
    pub predict_concurrency: i64,
    pub streaming_read_timeout: u64,
    pub has_example_input: bool,
    pub n_requirements: usize,
    /// The memory-fit estimate, when one could be made.
    pub memory_estimate: Option<crate::memory::EstimateSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub valid: bool,
    pub diagnostics: Vec<Diagnostic>,
    pub normalized: Normalized,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.diagnostics.iter().any(|d| d.code == code)
    }
}
