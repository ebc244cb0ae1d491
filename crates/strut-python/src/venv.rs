//! `--install-requirements`: a virtual environment per set of requirements,
//! made once under the data directory and reused. Its name is a hash of
//! `python_version`, `requirements` and the `requirements_file`'s content,
//! so a change of any of them makes a new one and models that share them
//! share it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Marks a finished environment: one that failed half-way is made again.
const READY: &str = ".strut-ready";

/// The interpreter of the model's environment, made (and its requirements
/// installed with pip) if it does not exist yet.
pub(crate) fn ensure(
    python: &Path,
    venvs: &Path,
    config: &Value,
    model_dir: &Path,
) -> Result<PathBuf, String> {
    let requirements = requirements(config, model_dir)?;
    let mut hash = Sha256::new();
    hash.update(config["python_version"].as_str().unwrap_or("").as_bytes());
    hash.update([0]);
    hash.update(requirements.as_bytes());
    let key: String = hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = venvs.join(&key);
    let interpreter = dir.join("bin").join("python");
    if dir.join(READY).is_file() {
        tracing::info!(venv = %dir.display(), "reusing the model's Python environment");
        return Ok(interpreter);
    }
    // Built beside its final place and renamed there, so a concurrent or
    // interrupted build never leaves a half environment under the key.
    std::fs::create_dir_all(venvs).map_err(|e| format!("{}: {e}", venvs.display()))?;
    let building = venvs.join(format!("{key}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    tracing::info!(venv = %dir.display(), "making the model's Python environment");
    run(
        Command::new(python).args(["-m", "venv"]).arg(&building),
        "python -m venv",
    )?;
    if !requirements.trim().is_empty() {
        let file = building.join("strut-requirements.txt");
        std::fs::write(&file, &requirements).map_err(|e| format!("{}: {e}", file.display()))?;
        let pip = building.join("bin").join("python");
        run(
            Command::new(pip)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                ])
                .arg(&file)
                .current_dir(model_dir),
            "pip install",
        )?;
    }
    std::fs::write(building.join(READY), &requirements).map_err(|e| e.to_string())?;
    match std::fs::rename(&building, &dir) {
        Ok(()) => {}
        // Another process finished the same environment first: use that one.
        Err(_) if dir.join(READY).is_file() => {
            let _ = std::fs::remove_dir_all(&building);
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    // The venv's scripts name the directory they were made in: make them
    // again where it now lives, keeping what pip installed.
    run(
        Command::new(python).args(["-m", "venv"]).arg(&dir),
        "python -m venv",
    )?;
    Ok(interpreter)
}

/// `requirements` and the `requirements_file`'s lines, one per line.
fn requirements(config: &Value, model_dir: &Path) -> Result<String, String> {
    let mut lines: Vec<String> = config["requirements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    if let Some(file) = config["requirements_file"]
        .as_str()
        .filter(|f| !f.is_empty())
    {
        let path = model_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("requirements_file {}: {e}", path.display()))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    Ok(lines.join("\n"))
}

/// Runs a step of the build with its output in the server log, line by
/// line, so a long install shows its progress.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut tail = Vec::new();
        for line in stderr
            .into_iter()
            .flat_map(|s| BufReader::new(s).lines())
            .map_while(Result::ok)
        {
            tracing::warn!(target: "strut_python::install", "{line}");
            tail.push(line);
        }
        tail
    });
    for line in child
        .stdout
        .take()
        .into_iter()
        .flat_map(|s| BufReader::new(s).lines())
        .map_while(Result::ok)
    {
        tracing::info!(target: "strut_python::install", "{line}");
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    let tail = errors.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        let last = tail
            .iter()
            .rev()
            .take(3)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ");
        Err(format!("{what} failed ({status}): {last}"))
    }
}
