//! Truss model directories served as they are: the user's `model/model.py`
//! runs in a worker process the server starts and supervises, the Rust
//! server in front of it does everything else (routes, admission, deadlines,
//! the async queue, environments, metrics).
//!
//! The worker is a pure-Python script shipped inside the binary
//! (`worker.py`, standard library only): it imports the model, runs Truss's
//! lifecycle and speaks framed JSON over a Unix socket. A crash, an
//! `os._exit` or an OOM kill in user code ends only the worker; the requests
//! it held fail with a 5xx, and the server restarts it and loads again.

mod conn;
mod model;
mod venv;

use std::path::PathBuf;
use std::time::Duration;

use strut_model::{InitContext, ModelInstance, Registry};

pub use model::PythonModel;

/// How the Python backend starts its workers.
#[derive(Debug, Clone)]
pub struct PythonSettings {
    /// The interpreter that runs the model (its environment has the model's
    /// requirements).
    pub python: PathBuf,
    /// How long a worker may take to import the model and run `load`.
    pub load_timeout: Duration,
    /// With `--install-requirements`: where the models' environments are
    /// made (one per set of requirements), each from `python`.
    pub venvs: Option<PathBuf>,
}

impl Default for PythonSettings {
    fn default() -> Self {
        Self {
            python: PathBuf::from("python3"),
            // Truss's own limit for `load`.
            load_timeout: Duration::from_secs(30 * 60),
            venvs: None,
        }
    }
}

/// Serves, through the Python backend, every config whose class is not
/// compiled into `registry` and whose directory has the Truss model file.
pub fn register(registry: &mut Registry, settings: PythonSettings) {
    registry.set_fallback(
        |ctx| format!("a Python model class in {}", relative_model_file(ctx)),
        |ctx| model_file(ctx).is_some(),
        move |ctx| PythonModel::new(ctx, settings.clone()).map(ModelInstance::asynchronous),
    );
}

/// The model file a config names (`model_module_dir`/`model_class_filename`,
/// Truss's defaults `model/model.py`), if the directory has it.
pub fn model_file(ctx: &InitContext) -> Option<PathBuf> {
    let path = ctx.model_dir.as_ref()?.join(relative_model_file(ctx));
    path.is_file().then_some(path)
}

fn relative_model_file(ctx: &InitContext) -> String {
    let field = |name: &str, default: &'static str| {
        ctx.config
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_owned()
    };
    format!(
        "{}/{}",
        field("model_module_dir", "model").trim_end_matches('/'),
        field("model_class_filename", "model.py")
    )
}
