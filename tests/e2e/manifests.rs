//! deploy/ against strut: every manifest is read, and what only strut can say
//! is checked against the image (/Dockerfile), `strut serve --help` and the
//! real binary: probe paths and ports, container args and variables, the
//! drain time, and that the Service, autoscaler and disruption budget reach
//! the pods. Field-level Kubernetes schemas are deploy/validate.py's job (run
//! by .ci/run); this needs only the repository.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use strut_config::yaml::{self, Node};

use crate::common::client;
use crate::common::process::StrutProcess;
use crate::container::{Image, Started, repo, serve_help, wait_ready, wait_started};

/// The kinds deploy/ may hold, at the API versions current clusters serve.
const KNOWN: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "PersistentVolumeClaim"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
];

/// What strut exports at /metrics for in-flight and queued requests.
const AUTOSCALING_METRICS: &[&str] = &["strut_requests_in_flight", "strut_queue_depth"];

const RESOURCE_NAMES: &[&str] = &["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"];

struct Manifest {
    path: PathBuf,
    doc: Value,
}

fn manifests() -> Vec<Manifest> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&repo().join("deploy"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            // One resource per file: the reader refuses a second document.
            let parsed = yaml::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                parsed.duplicates.is_empty(),
                "{}: {:?}",
                path.display(),
                parsed.duplicates
            );
            let root = parsed
                .root
                .unwrap_or_else(|| panic!("{} is empty", path.display()));
            Manifest {
                doc: to_json(&root),
                path,
            }
        })
        .collect()
}

fn to_json(node: &Node) -> Value {
    match &node.value {
        yaml::Value::Null => Value::Null,
        yaml::Value::Bool(b) => json!(b),
        yaml::Value::Int(i) => json!(i64::try_from(*i).expect("integer fits i64")),
        yaml::Value::Float(f) => json!(f),
        yaml::Value::Str(s) | yaml::Value::Timestamp(s) => json!(s),
        yaml::Value::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        yaml::Value::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (yaml::scalar_text(&k.value), to_json(v)))
                .collect(),
        ),
    }
}

fn one<'a>(all: &'a [Manifest], kind: &str) -> &'a Value {
    let found: Vec<_> = all.iter().filter(|m| m.doc["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/");
    &found[0].doc
}

fn named<'a>(all: &'a [Manifest], kind: &str, name: &str) -> Option<&'a Value> {
    all.iter()
        .map(|m| &m.doc)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// A pod that runs strut: the Deployment's template or KServe's predictor.
struct Workload<'a> {
    what: String,
    pod: &'a Value,
    container: &'a Value,
}

fn workloads(all: &[Manifest]) -> Vec<Workload<'_>> {
    let deployment = one(all, "Deployment");
    let isvc = one(all, "InferenceService");
    let pod = &deployment["spec"]["template"]["spec"];
    let predictor = &isvc["spec"]["predictor"];
    vec![
        Workload {
            what: "Deployment".into(),
            pod,
            container: &pod["containers"][0],
        },
        Workload {
            what: "InferenceService".into(),
            pod: predictor,
            container: &predictor["containers"][0],
        },
    ]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_owned)
        }
    })
}

fn seconds(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

impl Workload<'_> {
    /// The process the container runs: its command, or the image's
    /// ENTRYPOINT followed by its args or the image's CMD.
    fn argv(&self, image: &Image) -> Vec<String> {
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
    fn env(&self, image: &Image) -> Vec<(String, String)> {
        let mut env = image.env.clone();
        for var in self.container["env"].as_array().into_iter().flatten() {
            if let Some(value) = var["value"].as_str() {
                env.push((var["name"].as_str().unwrap().to_owned(), value.to_owned()));
            }
        }
        env
    }

    fn env_var(&self, image: &Image, key: &str) -> Option<String> {
        self.env(image)
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The port strut listens on: `--port`, else STRUT_PORT.
    fn port(&self, image: &Image) -> u16 {
        flag_value(&self.argv(image), "--port")
            .or_else(|| self.env_var(image, "STRUT_PORT"))
            .expect("a port")
            .parse()
            .unwrap()
    }

    /// The model directory: `strut serve`'s one positional argument.
    fn model_path(&self, image: &Image) -> String {
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

    fn probe_port(&self, probe: &Value) -> u16 {
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

    fn probe_path(&self, probe: &str) -> String {
        self.container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {probe} is an HTTP GET", self.what))
            .to_owned()
    }

    fn mount(&self, path: &str) -> Option<&Value> {
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

/// The flags of `strut serve`, its variables and the drain it defaults to.
struct Serve {
    help: String,
}

impl Serve {
    fn new() -> Self {
        Self {
            help: serve_help(&[]),
        }
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.help.contains(&format!("{flag} <")) || self.help.contains(&format!("{flag} "))
    }

    fn reads_env(&self, name: &str) -> bool {
        self.help.contains(&format!("[env: {name}="))
    }

    fn default_grace_period(&self) -> u64 {
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

#[test]
fn every_manifest_is_a_known_kind_with_a_valid_name() {
    let all = manifests();
    for m in &all {
        let (api, kind) = (m.doc["apiVersion"].as_str(), m.doc["kind"].as_str());
        assert!(
            KNOWN
                .iter()
                .any(|&(a, k)| Some(a) == api && Some(k) == kind),
            "{}: unknown {api:?} {kind:?}",
            m.path.display()
        );
        let name = m.doc["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "{}: `{name}` is not a DNS-1123 label",
            m.path.display()
        );
    }
    let kinds: BTreeSet<_> = all
        .iter()
        .map(|m| m.doc["kind"].as_str().unwrap())
        .collect();
    for &(_, kind) in KNOWN {
        assert!(kinds.contains(kind), "deploy/ has a {kind}");
    }
}

#[test]
fn containers_run_strut_serve_with_flags_and_variables_it_has() {
    let all = manifests();
    let image = Image::from_repo();
    let serve = Serve::new();
    for w in workloads(&all) {
        let argv = w.argv(&image);
        assert_eq!(
            argv[..2],
            image.entrypoint[..],
            "{}: runs `strut serve`",
            w.what
        );
        for arg in argv[2..].iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap();
            assert!(
                serve.has_flag(flag),
                "{}: `strut serve` has no {flag}",
                w.what
            );
        }
        for (name, _) in w
            .env(&image)
            .iter()
            .filter(|(k, _)| k.starts_with("STRUT_"))
        {
            assert!(
                serve.reads_env(name),
                "{}: `strut serve` does not read {name}",
                w.what
            );
        }
        let port = w.port(&image);
        assert!(
            w.container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["containerPort"] == port),
            "{}: declares containerPort {port}",
            w.what
        );

        let resources = &w.container["resources"];
        for kind in ["requests", "limits"] {
            for name in resources[kind]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                assert!(
                    RESOURCE_NAMES.contains(&name.as_str()),
                    "{}: resource {name}",
                    w.what
                );
            }
        }
        assert!(
            resources["limits"]["nvidia.com/gpu"].is_string(),
            "{}: asks for a GPU",
            w.what
        );
        assert_eq!(
            resources["requests"]["nvidia.com/gpu"], resources["limits"]["nvidia.com/gpu"],
            "{}: a GPU request equals its limit (extended resources cannot be overcommitted)",
            w.what
        );

        // The image's user is numeric and non-root, so runAsNonRoot holds.
        assert_eq!(w.pod["securityContext"]["runAsNonRoot"], true, "{}", w.what);
        let uid: u64 = image.user.split(':').next().unwrap().parse().unwrap();
        if let Some(run_as) = w.pod["securityContext"]["runAsUser"].as_u64() {
            assert_eq!(run_as, uid, "{}: runs as the image's user", w.what);
        }

        // Secrets come from a Secret in deploy/, where strut looks for them.
        let secrets_dir = flag_value(&argv, "--secrets-dir")
            .or_else(|| w.env_var(&image, "STRUT_SECRETS_DIR"))
            .unwrap();
        let volume = w
            .mount(&secrets_dir)
            .unwrap_or_else(|| panic!("{}: {secrets_dir} mounted", w.what));
        let secret = volume["secret"]["secretName"]
            .as_str()
            .expect("a Secret volume");
        assert!(
            named(&all, "Secret", secret).is_some(),
            "{}: Secret {secret} in deploy/",
            w.what
        );
    }
}

#[test]
fn model_volumes_are_where_strut_serves_from() {
    let all = manifests();
    let image = Image::from_repo();
    let workloads = workloads(&all);
    let deployment = &workloads[0];
    let model = deployment.model_path(&image);
    let volume = deployment
        .mount(&model)
        .expect("the model directory is a mounted volume");
    let claim = volume["persistentVolumeClaim"]["claimName"]
        .as_str()
        .expect("a claim");
    assert!(
        named(&all, "PersistentVolumeClaim", claim).is_some(),
        "PVC {claim} in deploy/"
    );

    // KServe's storage initializer fills /mnt/models from STORAGE_URI.
    let isvc = &workloads[1];
    assert_eq!(isvc.container["name"], "kserve-container");
    assert_eq!(isvc.model_path(&image), "/mnt/models");
    let uri = isvc.env_var(&image, "STORAGE_URI").expect("STORAGE_URI");
    assert!(uri.starts_with(&format!("pvc://{claim}/")), "{uri}");
}

#[test]
fn probes_target_strut_routes_on_its_port_and_the_grace_period_covers_the_drain() {
    let all = manifests();
    let image = Image::from_repo();
    let serve = Serve::new();
    let health_check = strut_server::Limits::default()
        .health_check_timeout
        .as_secs();
    for w in workloads(&all) {
        let port = w.port(&image);
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(
                w.probe_port(&w.container[probe]),
                port,
                "{}: {probe} port",
                w.what
            );
        }
        // Liveness is the route the image's HEALTHCHECK uses, which answers
        // while the model loads; readiness is the model's.
        assert_eq!(w.probe_path("livenessProbe"), "/", "{}", w.what);
        let ready = w.probe_path("readinessProbe");
        assert!(ready.starts_with("/v1/models/"), "{}: {ready}", w.what);
        assert_eq!(
            w.probe_path("startupProbe"),
            ready,
            "{}: startup waits for the load",
            w.what
        );
        let readiness = &w.container["readinessProbe"];
        assert!(
            seconds(&readiness["timeoutSeconds"]) > health_check,
            "{}: the readiness timeout outlasts strut's {health_check} s model health check",
            w.what
        );
        // Loading weights onto a GPU from a network volume takes minutes.
        let startup = &w.container["startupProbe"];
        let budget = seconds(&startup["initialDelaySeconds"])
            + seconds(&startup["periodSeconds"]) * seconds(&startup["failureThreshold"]);
        assert!(
            budget >= 300,
            "{}: startup allows {budget} s for loading",
            w.what
        );

        let argv = w.argv(&image);
        let drain = flag_value(&argv, "--grace-period")
            .or_else(|| w.env_var(&image, "STRUT_GRACE_PERIOD"))
            .map_or_else(|| serve.default_grace_period(), |s| s.parse().unwrap());
        let pre_stop = strings(&w.container["lifecycle"]["preStop"]["exec"]["command"]);
        let pre_stop = match pre_stop.as_slice() {
            [] => 0,
            [sleep, n] if sleep == "sleep" => n.parse().unwrap(),
            other => panic!("{}: preStop {other:?} has no known length", w.what),
        };
        let grace = seconds(&w.pod["terminationGracePeriodSeconds"]);
        assert!(
            grace >= pre_stop + drain + 5,
            "{}: {grace} s to terminate < preStop {pre_stop} s + drain {drain} s + 5 s",
            w.what
        );
    }
    // KServe's convention: the model is named after the InferenceService.
    let isvc = one(&all, "InferenceService");
    let name = isvc["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        workloads(&all)[1].probe_path("readinessProbe"),
        format!("/v1/models/{name}")
    );
}

#[test]
fn service_autoscaler_and_disruption_budget_reach_the_deployment() {
    let all = manifests();
    let deployment = one(&all, "Deployment");
    let name = &deployment["metadata"]["name"];
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let selects_pods = |selector: &Value, what: &str| {
        let selector = selector
            .as_object()
            .unwrap_or_else(|| panic!("{what} has a selector"));
        assert!(!selector.is_empty(), "{what} selects something");
        for (key, value) in selector {
            assert_eq!(
                labels.get(key),
                Some(value),
                "{what} selects the pods by {key}"
            );
        }
    };
    selects_pods(&deployment["spec"]["selector"]["matchLabels"], "Deployment");
    let strategy = &deployment["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(
        strategy["rollingUpdate"]["maxUnavailable"], 0,
        "rollouts keep serving capacity"
    );

    let service = one(&all, "Service");
    selects_pods(&service["spec"]["selector"], "Service");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    for port in service["spec"]["ports"].as_array().unwrap() {
        let target = &port["targetPort"];
        assert!(
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| match target {
                    Value::String(_) => &p["name"] == target,
                    _ => &p["containerPort"] == target,
                }),
            "Service targetPort {target} is a container port"
        );
    }

    let hpa = one(&all, "HorizontalPodAutoscaler");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (&target["apiVersion"], &target["kind"], &target["name"]),
        (&json!("apps/v1"), &json!("Deployment"), name)
    );
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the autoscaler owns replicas; `kubectl apply` would reset them"
    );
    let metrics = hpa["spec"]["metrics"].as_array().unwrap();
    assert!(!metrics.is_empty());
    for metric in metrics {
        assert_eq!(metric["type"], "Pods", "per-pod load, not CPU: {metric}");
        let metric_name = metric["pods"]["metric"]["name"].as_str().unwrap();
        assert!(
            AUTOSCALING_METRICS.contains(&metric_name),
            "strut exports {metric_name}"
        );
    }
    let min_replicas = hpa["spec"]["minReplicas"].as_u64().unwrap();
    assert!(
        min_replicas >= 2,
        "one pod alone cannot survive a disruption"
    );
    assert!(hpa["spec"]["maxReplicas"].as_u64().unwrap() >= min_replicas);

    let pdb = one(&all, "PodDisruptionBudget");
    selects_pods(
        &pdb["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget",
    );
    // A budget that allows no disruption at the minimum size blocks every drain.
    let allowed = match (&pdb["spec"]["maxUnavailable"], &pdb["spec"]["minAvailable"]) {
        (Value::Number(n), Value::Null) => n.as_u64().unwrap(),
        (Value::Null, Value::Number(n)) => min_replicas.saturating_sub(n.as_u64().unwrap()),
        other => panic!("PodDisruptionBudget with an integer budget: {other:?}"),
    };
    assert!(allowed >= 1, "the budget lets a drain proceed");
}

#[test]
fn the_example_secret_holds_no_values() {
    let all = manifests();
    let secret = one(&all, "Secret");
    let mut keys = 0;
    for field in ["data", "stringData"] {
        for (key, value) in secret[field].as_object().into_iter().flatten() {
            keys += 1;
            assert_eq!(value, "", "Secret key {key} must stay empty in git");
        }
    }
    assert!(keys > 0, "the example shows the shape of a key");
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_answer_on_the_real_server_run_as_the_containers_run_it() {
    let all = manifests();
    let image = Image::from_repo();
    for w in workloads(&all) {
        let model = image.model_copy();
        let secrets = tempfile::tempdir().unwrap();
        let model_path = w.model_path(&image);
        let mut cmd = crate::common::process::strut();
        for arg in &w.argv(&image)[1..] {
            if *arg == model_path {
                cmd.arg(model.path());
            } else {
                cmd.arg(arg);
            }
        }
        cmd.envs(w.env(&image));
        // The container paths do not exist here; the port is checked against
        // the probes above, and a fixed one would collide between the runs.
        cmd.env("STRUT_SECRETS_DIR", secrets.path())
            .env("STRUT_PORT", "0");
        let process = StrutProcess::spawn(cmd);
        let address = match wait_started(&process) {
            Started::Listening(address) => address,
            Started::Failed(logs) => panic!("{}: strut did not start:\n{logs}", w.what),
        };
        let base = format!("http://127.0.0.1:{}", address.rsplit_once(':').unwrap().1);

        let live = client()
            .get(format!("{base}{}", w.probe_path("livenessProbe")))
            .send();
        assert_eq!(live.await.unwrap().status(), 200, "{}: liveness", w.what);
        for probe in ["readinessProbe", "startupProbe"] {
            wait_ready(&base, &w.probe_path(probe)).await;
        }
        if w.what == "InferenceService" {
            // The path KServe's ingress sends predictions to.
            let ready = w.probe_path("readinessProbe");
            let reply = client()
                .post(format!("{base}{ready}:predict"))
                .json(&json!({"instances": [1, 2]}))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200, "{}: {ready}:predict", w.what);
            assert_eq!(
                reply.json::<Value>().await.unwrap(),
                json!({"predictions": [1, 2]})
            );
        }
        process.sigterm();
        let (status, logs) = process.wait(Duration::from_secs(60));
        assert!(status.success(), "{}:\n{logs}", w.what);
    }
}
