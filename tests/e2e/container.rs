//! The image's entrypoint without Docker: the final stage of /Dockerfile is
//! parsed (ENV, EXPOSE, ENTRYPOINT, CMD, HEALTHCHECK, USER, COPY) and the real
//! `strut` binary is run with exactly that command line and environment, so a
//! renamed flag or variable, a moved port or path, or a liveness route that
//! changes breaks this suite instead of a deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::client;
use crate::common::process::{StrutProcess, strut};

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the final stage of the Dockerfile declares; values as written, with
/// the stage's ARG defaults substituted where Docker would substitute them.
#[derive(Debug, Default)]
pub(crate) struct Image {
    pub env: Vec<(String, String)>,
    pub expose: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The HEALTHCHECK's command, exec form (shell form becomes `sh -c`).
    pub healthcheck: Vec<String>,
    pub user: String,
    pub copies: Vec<CopyInstr>,
}

#[derive(Debug)]
pub(crate) struct CopyInstr {
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

impl Image {
    pub fn parse(text: &str) -> Self {
        let instructions = instructions(text);
        let last_from = instructions
            .iter()
            .rposition(|(op, _)| op == "FROM")
            .expect("the Dockerfile has a FROM");
        let mut image = Image::default();
        let mut args = BTreeMap::new();
        for (op, rest) in &instructions[last_from + 1..] {
            match op.as_str() {
                "ARG" => {
                    let (name, default) = rest.split_once('=').unwrap_or((rest, ""));
                    args.insert(name.trim().to_owned(), unquote(default.trim()));
                }
                "ENV" => {
                    for word in rest.split_whitespace() {
                        let (key, value) = word
                            .split_once('=')
                            .unwrap_or_else(|| panic!("ENV in KEY=VALUE form: {rest}"));
                        image.env.push((key.to_owned(), unquote(value)));
                    }
                }
                "EXPOSE" => image.expose = rest.split_whitespace().map(str::to_owned).collect(),
                "ENTRYPOINT" => image.entrypoint = command_form(rest),
                "CMD" => image.cmd = command_form(rest),
                "USER" => image.user = rest.clone(),
                "HEALTHCHECK" => {
                    let command = rest
                        .split_once("CMD")
                        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {rest}"))
                        .1;
                    image.healthcheck = command_form(command.trim());
                }
                "COPY" => {
                    let mut from = None;
                    let mut paths = Vec::new();
                    for word in rest.split_whitespace() {
                        if let Some(stage) = word.strip_prefix("--from=") {
                            from = Some(stage.to_owned());
                        } else if !word.starts_with("--") {
                            paths.push(expand_args(word, &args));
                        }
                    }
                    let dest = paths.pop().expect("COPY has a destination");
                    image.copies.push(CopyInstr {
                        from,
                        sources: paths,
                        dest,
                    });
                }
                _ => {}
            }
        }
        image
    }

    pub fn from_repo() -> Self {
        let path = repo().join("Dockerfile");
        Self::parse(&std::fs::read_to_string(&path).expect("read the Dockerfile"))
    }

    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The model path the image serves: CMD's one argument that a COPY from
    /// the build context fills.
    pub fn model_dir(&self) -> (&str, &CopyInstr) {
        self.cmd
            .iter()
            .find_map(|arg| {
                let copy = self
                    .copies
                    .iter()
                    .find(|c| c.from.is_none() && same_path(&c.dest, arg))?;
                Some((arg.as_str(), copy))
            })
            .unwrap_or_else(|| panic!("no CMD argument is a directory COPY fills: {self:?}"))
    }

    /// A temporary copy of the model directory baked into the image.
    pub fn model_copy(&self) -> tempfile::TempDir {
        let (_, copy) = self.model_dir();
        assert_eq!(copy.sources.len(), 1, "one model directory: {copy:?}");
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join(&copy.sources[0]), dir.path());
        dir
    }

    /// `strut` with the image's ENTRYPOINT, CMD and ENV, the model path
    /// replaced by `model` and each variable in `overrides` replaced.
    pub fn command(&self, model: &Path, overrides: &[(&str, &str)]) -> Command {
        let (model_arg, _) = self.model_dir();
        let mut cmd = strut();
        cmd.args(&self.entrypoint[1..]);
        for arg in &self.cmd {
            if arg == model_arg {
                cmd.arg(model);
            } else {
                cmd.arg(arg);
            }
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.envs(overrides.iter().copied());
        cmd
    }
}

/// Instructions as (upper-cased keyword, rest), continuation lines joined and
/// comments dropped, as the Dockerfile frontend reads them.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (op, rest) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((op.to_ascii_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

fn command_form(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        serde_json::from_str(rest).unwrap_or_else(|e| panic!("bad exec form {rest}: {e}"))
    } else {
        vec!["/bin/sh".into(), "-c".into(), rest.to_owned()]
    }
}

fn unquote(value: &str) -> String {
    value.trim_matches('"').to_owned()
}

fn expand_args(word: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = word.to_owned();
    for (name, value) in args {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `strut serve --help` with whitespace collapsed, so that help text wrapped
/// at any terminal width reads the same.
pub(crate) fn serve_help(envs: &[(String, String)]) -> String {
    let out = strut()
        .args(["serve", "--help"])
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One JSON log line's field, whether the formatter flattens event fields to
/// the top level or nests them under `fields`.
pub(crate) fn log_field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get(name).or_else(|| line.get("fields")?.get(name))
}

pub(crate) enum Started {
    Listening(String),
    Failed(String),
}

/// Waits for the JSON "listening" line (its `address`) or an ERROR line.
pub(crate) fn wait_started(process: &StrutProcess) -> Started {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = process.logs();
        for line in logs.lines() {
            let Ok(json) = serde_json::from_str::<Value>(line) else {
                // clap refuses bad arguments in plain text before logging starts.
                if line.starts_with("error:") {
                    return Started::Failed(logs);
                }
                continue;
            };
            let message = log_field(&json, "message").and_then(Value::as_str);
            if message.is_some_and(|m| m.starts_with("listening")) {
                let address = log_field(&json, "address").and_then(Value::as_str);
                return Started::Listening(address.expect("listening line has address").into());
            }
            if json["level"] == "ERROR" {
                return Started::Failed(logs);
            }
        }
        assert!(Instant::now() < deadline, "strut did not start:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) async fn wait_ready(base: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client().get(format!("{base}{path}")).send().await;
        if response.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{base}{path} not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The secret the tests declare in the model's config: startup must read it
/// from STRUT_SECRETS_DIR or refuse to serve.
const SECRET: &str = "strut_container_test_token";

fn model_with_secret(image: &Image) -> tempfile::TempDir {
    let model = image.model_copy();
    let config = model.path().join("config.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains("\nsecrets:"),
        "the baked model declares no secrets of its own"
    );
    text.push_str(&format!("\nsecrets:\n  {SECRET}: null\n"));
    std::fs::write(config, text).unwrap();
    model
}

#[test]
fn final_stage_runs_strut_serve_as_a_numeric_non_root_user_on_its_exposed_port() {
    let image = Image::from_repo();

    let (uid, gid) = image.user.split_once(':').unwrap_or((&image.user, ""));
    let uid: u32 = uid
        .parse()
        .expect("USER is numeric, so runAsNonRoot can check it");
    assert_ne!(uid, 0, "USER is not root");
    assert!(gid.is_empty() || gid.parse::<u32>().is_ok_and(|g| g != 0));

    let binary = image
        .copies
        .iter()
        .find(|c| c.from.as_deref() == Some("build"))
        .expect("the binary comes from the build stage");
    assert_eq!(
        image.entrypoint.first(),
        Some(&binary.dest),
        "ENTRYPOINT runs the copied binary"
    );
    assert_eq!(image.entrypoint.get(1).map(String::as_str), Some("serve"));

    let port = image.env("STRUT_PORT").expect("STRUT_PORT is set");
    assert_eq!(image.expose, [port], "EXPOSE is the port strut listens on");
    assert_eq!(
        image.env("STRUT_HOST"),
        Some("0.0.0.0"),
        "reachable from outside the container"
    );
    assert_eq!(image.env("STRUT_LOG_FORMAT"), Some("json"));

    // The model directory is baked from a directory that exists and is one
    // that strut accepts.
    let (model, copy) = image.model_dir();
    assert!(model.starts_with('/'));
    let status = strut()
        .args(["config", "validate"])
        .arg(repo().join(&copy.sources[0]))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

#[test]
fn strut_serve_reads_every_variable_the_image_sets() {
    let image = Image::from_repo();
    let help = serve_help(&image.env);
    let strut_vars: Vec<_> = image
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("STRUT_"))
        .collect();
    assert!(strut_vars.len() >= 4, "{strut_vars:?}");
    for (key, value) in strut_vars {
        // clap prints `[env: NAME=VALUE]` for a flag bound to NAME, with the
        // value it sees, so this is strut reading exactly this variable.
        assert!(
            help.contains(&format!("[env: {key}={value}]")),
            "`strut serve` does not read {key}={value}:\n{help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_command_serves_the_baked_model_with_secrets_and_json_logs() {
    let image = Image::from_repo();
    let model = model_with_secret(&image);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join(SECRET), "s3cr3t\n").unwrap();
    // /secrets is the image's path; on this machine the mount is a temp dir.
    let secrets_dir = secrets.path().to_str().unwrap();
    let declared_port = image.env("STRUT_PORT").unwrap().to_owned();

    let spawn = |overrides: &[(&str, &str)]| {
        let mut cmd = image.command(model.path(), overrides);
        cmd.env_remove(format!("TRUSS_SECRET_{SECRET}"));
        StrutProcess::spawn(cmd)
    };
    let mut process = spawn(&[("STRUT_SECRETS_DIR", secrets_dir)]);
    let address = match wait_started(&process) {
        Started::Listening(address) => {
            assert_eq!(address, format!("0.0.0.0:{declared_port}"));
            address
        }
        // The declared port is fixed, so another server on this machine may
        // hold it. strut naming it in the bind error shows it read the port;
        // the rest of the test then needs some free port, the only override.
        Started::Failed(logs) if logs.contains(&format!("binding 0.0.0.0:{declared_port}")) => {
            assert!(logs.contains("in use"), "{logs}");
            eprintln!("port {declared_port} is taken here; going on with a free one");
            drop(process);
            process = spawn(&[("STRUT_SECRETS_DIR", secrets_dir), ("STRUT_PORT", "0")]);
            match wait_started(&process) {
                Started::Listening(address) => address,
                Started::Failed(logs) => panic!("strut did not start:\n{logs}"),
            }
        }
        Started::Failed(logs) => panic!("strut did not start:\n{logs}"),
    };
    let port = address.rsplit_once(':').unwrap().1.to_owned();
    let base = format!("http://127.0.0.1:{port}");

    // The HEALTHCHECK's URL, as its shell would expand it, answers 2xx (what
    // `curl -f` needs) on liveness.
    let check = image.healthcheck.join(" ");
    assert!(
        check.contains("curl") && check.contains("-f"),
        "fails on HTTP errors: {check}"
    );
    let url = check
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("HEALTHCHECK has a URL")
        .replace("${STRUT_PORT}", &port)
        .replace("$STRUT_PORT", &port);
    assert_eq!(
        url,
        format!("http://127.0.0.1:{port}/"),
        "the check probes liveness"
    );
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    if Command::new("curl").arg("--version").output().is_ok() {
        // And the check itself, run the way Docker runs it.
        let run = |port: &str| {
            Command::new(&image.healthcheck[0])
                .args(&image.healthcheck[1..])
                .env("STRUT_PORT", port)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
        };
        assert!(run(&port).success());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port().to_string();
        drop(closed);
        assert!(
            !run(&closed_port).success(),
            "the check fails when nothing listens"
        );
    }

    wait_ready(&base, "/v1/models/model").await;
    let reply = client()
        .post(format!("{base}/predict"))
        .json(&serde_json::json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        serde_json::json!({"prompt": "hello"})
    );

    process.sigterm();
    let (status, logs) = process.wait(Duration::from_secs(60));
    assert!(status.success(), "SIGTERM drains and exits 0:\n{logs}");
    let lines: Vec<_> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in lines {
        let json: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            json["level"].is_string() && json["timestamp"].is_string(),
            "{line}"
        );
        assert!(
            log_field(&json, "message").is_some_and(Value::is_string),
            "{line}"
        );
    }
    assert!(
        !logs.contains("s3cr3t"),
        "the secret's value is never logged"
    );
}

#[test]
fn the_secrets_dir_the_image_names_is_where_strut_looks() {
    let image = Image::from_repo();
    let model = model_with_secret(&image);
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    // Port 0: should a regression let it start, it must not take the port
    // that the test above binds.
    let mut cmd = image.command(
        model.path(),
        &[("STRUT_SECRETS_DIR", dir), ("STRUT_PORT", "0")],
    );
    cmd.env_remove(format!("TRUSS_SECRET_{SECRET}"));
    let (status, logs) = StrutProcess::spawn(cmd).wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{logs}");
    let error = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|j| j["level"] == "ERROR")
        .unwrap_or_else(|| panic!("a JSON error line:\n{logs}"));
    let message = log_field(&error, "message")
        .and_then(Value::as_str)
        .unwrap();
    assert!(message.contains(&format!("{dir}/{SECRET}")), "{message}");
}
