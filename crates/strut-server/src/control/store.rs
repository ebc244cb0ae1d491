//! The data directory: deployment snapshots, the state file (records and
//! environment pointers, replaced atomically) and the append-only deploy log.
//!
//! ```text
//! DATA_DIR/state.json            records + environments, written to a temp file then renamed
//! DATA_DIR/deploy-log.jsonl      one JSON object per line, appended
//! DATA_DIR/deployments/<id>/     the snapshot: config.yaml and data/
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "state.json";
const LOG_FILE: &str = "deploy-log.jsonl";
const DEPLOYMENTS: &str = "deployments";
const STATE_VERSION: u32 = 1;
const INCOMING: &str = ".incoming-";

/// What is kept about a deployment beyond its snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub created_at: String,
    pub created_by: String,
    pub fingerprint: String,
    /// The environment handed to the model's init.
    pub environment: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub current: Option<String>,
    /// Previous deployments, newest last.
    pub history: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub deployments: Vec<DeploymentRecord>,
    pub environments: BTreeMap<String, EnvironmentRecord>,
}

/// One line of the deploy log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// The API key's name, or `startup`.
    pub who: String,
    /// RFC 3339, UTC.
    pub when: String,
    /// `push`, `promote`, `rollback` or `load`.
    pub action: String,
    pub environment: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `succeeded`, `rejected` (a precondition or conflict) or `failed`.
    pub outcome: String,
    pub error: Option<String>,
}

pub struct Store {
    dir: PathBuf,
    /// Serialises state writes so the last one written is the newest.
    state_lock: Mutex<()>,
    log_lock: Mutex<()>,
}

impl Store {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let deployments = dir.join(DEPLOYMENTS);
        std::fs::create_dir_all(&deployments)?;
        // Pushes that were being unpacked when the process stopped.
        for entry in std::fs::read_dir(&deployments)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(INCOMING) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            state_lock: Mutex::new(()),
            log_lock: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn deployment_dir(&self, id: &str) -> PathBuf {
        self.dir.join(DEPLOYMENTS).join(id)
    }

    /// A scratch directory next to the snapshots (same filesystem, so the
    /// finished snapshot is renamed into place, never half-written).
    pub fn incoming_dir(&self) -> PathBuf {
        let name = format!("{INCOMING}{}", uuid::Uuid::new_v4().simple());
        self.dir.join(DEPLOYMENTS).join(name)
    }

    pub fn read_state(&self) -> std::io::Result<StateFile> {
        match std::fs::read(self.dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state built by `make` (called under the lock, so it sees
    /// the newest state) to a temp file, syncs it and renames it over the old one.
    pub fn write_state(&self, make: impl FnOnce() -> StateFile) -> std::io::Result<()> {
        let _guard = self.state_lock.lock().expect("state lock");
        let mut state = make();
        state.version = STATE_VERSION;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(STATE_FILE))
    }

    pub fn append_log(&self, entry: &LogEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let _guard = self.log_lock.lock().expect("log lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        // One write per line, so a crash leaves at worst a torn last line,
        // which reading skips.
        file.write_all(&line)?;
        file.sync_data()
    }

    /// The newest `limit` entries, oldest first.
    pub fn read_log(&self, limit: usize) -> std::io::Result<Vec<LogEntry>> {
        let file = match std::fs::File::open(self.dir.join(LOG_FILE)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries = std::collections::VecDeque::with_capacity(limit.min(1024));
        for line in std::io::BufReader::new(file).lines() {
            let Ok(entry) = serde_json::from_str::<LogEntry>(&line?) else {
                continue;
            };
            if entries.len() == limit {
                entries.pop_front();
            }
            entries.push_back(entry);
        }
        Ok(entries.into())
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
