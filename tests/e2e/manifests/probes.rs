//! Probes and termination: what Kubernetes asks of strut's routes, port and
//! drain, checked on paper and then against the real binary.

use std::time::Duration;

use serde_json::{Value, json};

use super::workload::{Serve, workload, workloads};
use super::{flag_value, manifests, one, seconds, strings};
use crate::common::client;
use crate::common::postgres::TestDatabase;
use crate::common::process::StrutProcess;
use crate::container::{Image, Started, wait_ready, wait_started};

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
        workload(&all, "InferenceService").probe_path("readinessProbe"),
        format!("/v1/models/{name}")
    );
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
        // What the pod takes from its Secret and its own name: a database of
        // the test's own on the machine's PostgreSQL, and a pod's name.
        let store = match w.env_source("STRUT_STORE_URL") {
            Some(_) => {
                let db = TestDatabase::create().await;
                cmd.env("STRUT_STORE_URL", &db.url);
                Some(db)
            }
            None => None,
        };
        if let Some(source) = w.env_source("STRUT_REPLICA_ID") {
            assert_eq!(source["fieldRef"]["fieldPath"], "metadata.name");
            cmd.env("STRUT_REPLICA_ID", "strut-shared-7d9c5b6f4-x2x8q");
        }
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
        if store.is_some() {
            assert!(
                logs.contains("async queue on PostgreSQL")
                    && logs.contains("strut-shared-7d9c5b6f4-x2x8q"),
                "{}: the queue on the store, under the pod's name:\n{logs}",
                w.what
            );
        }
    }
}
