//! The real `strut` binary as a child process, for what only a process can
//! show: signals, exit codes, what reaches the log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn strut() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strut"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

pub struct StrutProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub url: String,
}

impl StrutProcess {
    /// Runs `strut serve ARGS --host 127.0.0.1 --port 0` and waits until it listens.
    pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = strut();
        cmd.arg("serve")
            .args(args)
            .args(["--host", "127.0.0.1", "--port", "0"]);
        cmd.envs(envs.iter().copied());
        let mut process = Self::spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = process.logs().lines().find_map(listen_address) {
                process.url = format!("http://{addr}");
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "strut exited with {status} before listening:\n{}",
                    process.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "strut did not listen in time:\n{}",
                process.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strut");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            logs,
            url: String::new(),
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status and everything it logged.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.logs());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("strut did not exit in time:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StrutProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listen_address(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    // `--log-format json` puts the address in a field of its own.
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json["address"].as_str().map(str::to_owned);
    }
    let rest = &line[line.find("address=")? + "address=".len()..];
    Some(rest.split_whitespace().next()?.to_owned())
}
