//! A pod that runs strut, as the image and the manifest together define it,
//! and what `strut serve --help` says it accepts.

use serde_json::Value;

use super::{Manifest, all_of, flag_value, one, strings};
use crate::container::{Image, serve_help};

/// A pod that runs strut: a Deployment's template or KServe's predictor.
pub(super) struct Workload<'a> {
    /// `Deployment <name>` or `InferenceService`.
    pub(super) what: String,
    pub(super) pod: &'a Value,
    pub(super) container: &'a Value,
}

/// Every Deployment (the single replica set-up's `strut`, then the shared
/// store's `strut-shared`), then KServe's predictor.
pub(super) fn workloads(all: &[Manifest]) -> Vec<Workload<'_>> {
    let mut workloads: Vec<_> = all_of(all, "Deployment")
        .into_iter()
        .map(|deployment| {
            let pod = &deployment["spec"]["template"]["spec"];
            Workload {
                what: format!(
                    "Deployment {}",
                    deployment["metadata"]["name"].as_str().unwrap()
                ),
                pod,
                container: &pod["containers"][0],
            }
        })
        .collect();
    let predictor = &one(all, "InferenceService")["spec"]["predictor"];
    workloads.push(Workload {
        what: "InferenceService".into(),
        pod: predictor,
        container: &predictor["containers"][0],
    });
    workloads
}

/// The one workload that is `what`.
pub(super) fn workload<'a>(all: &'a [Manifest], what: &str) -> Workload<'a> {
    workloads(all)
        .into_iter()
        .find(|w| w.what == what)
        .unwrap_or_else(|| panic!("{what} in deploy/"))
}

impl Workload<'_> {
    /// The process the container runs: its command, or the image's
    /// ENTRYPOINT followed by its args or the image's CMD.
    pub(super) fn argv(&self, image: &Image) -> Vec<String> {
        let command = strings(&self.container["command"]);
        let entrypoint = if command.is_empty() {
            image.entrypoint.clone()
        } else {
            command
        };
        let args = match self.container.get("args") {
            Some(args) => strings(args),
            None => image.cmd.clone(),
        };
        entrypoint.into_iter().chain(args).collect()
    }

    /// The image's environment with the container's literal values on top.
    pub(super) fn env(&self, image: &Image) -> Vec<(String, String)> {
        let mut env = image.env.clone();
        for var in self.container["env"].as_array().into_iter().flatten() {
            if let Some(value) = var["value"].as_str() {
                env.push((var["name"].as_str().unwrap().to_owned(), value.to_owned()));
            }
        }
        env
    }

    pub(super) fn env_var(&self, image: &Image, key: &str) -> Option<String> {
        self.env(image)
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The port strut listens on: `--port`, else STRUT_PORT.
    pub(super) fn port(&self, image: &Image) -> u16 {
        flag_value(&self.argv(image), "--port")
            .or_else(|| self.env_var(image, "STRUT_PORT"))
            .expect("a port")
            .parse()
            .unwrap()
    }

    /// The model directory: `strut serve`'s one positional argument.
    pub(super) fn model_path(&self, image: &Image) -> String {
        let argv = self.argv(image);
        let mut positional = Vec::new();
        let mut i = 2; // past `strut serve`
        while i < argv.len() {
            if argv[i].starts_with("--") {
                i += if argv[i].contains('=') { 1 } else { 2 };
            } else {
                positional.push(argv[i].clone());
                i += 1;
            }
        }
        assert_eq!(
            positional.len(),
            1,
            "{}: one model path in {argv:?}",
            self.what
        );
        positional.remove(0)
    }

    pub(super) fn probe_port(&self, probe: &Value) -> u16 {
        let port = &probe["httpGet"]["port"];
        if let Some(n) = port.as_u64() {
            return n as u16;
        }
        let name = port.as_str().expect("a probe port");
        self.container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{}: no container port named {name}", self.what))
            as u16
    }

    pub(super) fn probe_path(&self, probe: &str) -> String {
        self.container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {probe} is an HTTP GET", self.what))
            .to_owned()
    }

    pub(super) fn mount(&self, path: &str) -> Option<&Value> {
        let mount = self.container["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["mountPath"] == path)?;
        self.pod["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == mount["name"])
    }
}

/// What borrows from the manifest rather than from the workload.
impl<'a> Workload<'a> {
    /// Every variable the container sets, literal or from a source
    /// (`valueFrom`: a Secret, a field of the pod).
    pub(super) fn env_names(&self) -> Vec<&'a str> {
        self.container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|var| var["name"].as_str().expect("a variable's name"))
            .collect()
    }

    /// Where the container's variable `name` comes from, when not a literal.
    pub(super) fn env_source(&self, name: &str) -> Option<&'a Value> {
        self.container["env"]
            .as_array()?
            .iter()
            .find(|var| var["name"] == name)?
            .get("valueFrom")
    }
}

/// The flags of `strut serve`, its variables and the drain it defaults to.
pub(super) struct Serve {
    help: String,
}

impl Serve {
    pub(super) fn new() -> Self {
        Self {
            help: serve_help(&[]),
        }
    }

    pub(super) fn has_flag(&self, flag: &str) -> bool {
        self.help.contains(&format!("{flag} <")) || self.help.contains(&format!("{flag} "))
    }

    /// `[env: NAME=value]`, or `[env: NAME]` for a variable whose value
    /// the help hides (STRUT_STORE_URL: it may hold a password).
    pub(super) fn reads_env(&self, name: &str) -> bool {
        self.help.contains(&format!("[env: {name}="))
            || self.help.contains(&format!("[env: {name}]"))
    }

    pub(super) fn default_grace_period(&self) -> u64 {
        let after = self
            .help
            .split("--grace-period <GRACE_PERIOD>")
            .nth(1)
            .expect("--grace-period");
        let default = after
            .split("[default: ")
            .nth(1)
            .expect("a default grace period");
        default[..default.find(']').unwrap()].parse().unwrap()
    }
}
