//! Finding, reading and parsing config.yaml.

use std::path::{Path, PathBuf};

use crate::diagnostics::Diagnostic;
use crate::extract::{Ctx, KeyRef};
use crate::schema::{self, TrussConfig};
use crate::yaml::{self, DuplicateKey, Node};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No config file. `yml` is set when a `config.yml` sits where `config.yaml` was expected,
    /// which truss reports separately.
    #[error("{}", not_found_message(path, yml.as_deref()))]
    NotFound { path: PathBuf, yml: Option<PathBuf> },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid truss config:\n{}", path.display(), list(diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

fn not_found_message(path: &Path, yml: Option<&Path>) -> String {
    match yml {
        Some(_) => "No truss configuration file ending in .yaml but found one ending in .yml. Did you mean to rename it?".to_string(),
        None => format!("Expected a truss configuration file at {}", path.display()),
    }
}

fn list(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A config that loaded: truss accepted (or would accept) it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config file.
    pub path: PathBuf,
    /// The model directory (the file's parent).
    pub root: PathBuf,
    pub config: TrussConfig,
    /// The YAML as written, with positions; `None` for an empty file.
    pub raw: Option<Node>,
    /// Keys truss keeps but `truss push` rejects.
    pub unknown_keys: Vec<KeyRef>,
    /// Keys truss drops without a word.
    pub ignored_keys: Vec<KeyRef>,
    pub duplicate_keys: Vec<DuplicateKey>,
    /// Warnings truss itself gives while loading (deprecations, reserved names).
    pub load_warnings: Vec<Diagnostic>,
}

impl LoadedConfig {
    /// The whole config with every default filled, as truss's `to_dict(verbose=True)`; the
    /// model's `config` init argument.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join(&self.config.data_dir)
    }
}

/// Everything a read produced, valid or not; what `validate` works from.
pub(crate) struct Parsed {
    pub loaded: LoadedConfig,
    pub errors: Vec<Diagnostic>,
}

/// Reads `path`: a model directory holding config.yaml, or a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, LoadError> {
    let parsed = read(path)?;
    if parsed.errors.is_empty() {
        Ok(parsed.loaded)
    } else {
        Err(LoadError::Invalid {
            path: parsed.loaded.path,
            diagnostics: parsed.errors,
        })
    }
}

/// Resolves the config file for `path` as truss does.
pub fn config_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("config.yaml")
    } else {
        path.to_path_buf()
    }
}

pub(crate) fn read(path: &Path) -> Result<Parsed, LoadError> {
    let file = config_path(path);
    if !file.is_file() {
        let yml = file.with_extension("yml");
        return Err(LoadError::NotFound {
            yml: yml.is_file().then_some(yml),
            path: file,
        });
    }
    let bytes = std::fs::read(&file).map_err(|source| LoadError::Io {
        path: file.clone(),
        source,
    })?;
    let root = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    Ok(parse_text(file, root, &bytes))
}

/// Parses config text; `file` and `root` only label the result.
pub(crate) fn parse_text(file: PathBuf, root: PathBuf, bytes: &[u8]) -> Parsed {
    let mut loaded = LoadedConfig {
        path: file,
        root,
        config: TrussConfig::default(),
        raw: None,
        unknown_keys: vec![],
        ignored_keys: vec![],
        duplicate_keys: vec![],
        load_warnings: vec![],
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
        Err(e) => {
            let d = Diagnostic::error(
                "yaml_syntax",
                "",
                format!("the file is not valid UTF-8 (byte {})", e.valid_up_to()),
                "save it as UTF-8",
            );
            return Parsed {
                loaded,
                errors: vec![d],
            };
        }
    };
    let doc = match yaml::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let d = Diagnostic::error(
                "yaml_syntax",
                "",
                format!("{} at line {}, column {}", e.message, e.line, e.col),
                "fix the YAML syntax",
            )
            .at_line(Some(e.line));
            return Parsed {
                loaded,
                errors: vec![d],
            };
        }
    };
    let mut ctx = Ctx::default();
    loaded.config = schema::parse(&mut ctx, doc.root.as_ref());
    loaded.raw = doc.root;
    loaded.duplicate_keys = doc.duplicates;
    loaded.unknown_keys = ctx.unknown;
    loaded.ignored_keys = ctx.ignored;
    loaded.load_warnings = ctx.notes;
    Parsed {
        loaded,
        errors: ctx.errors,
    }
}
