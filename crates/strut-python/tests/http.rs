//! Truss model.py fixtures (tests/truss-fixtures) served by the Python
//! backend behind strut's HTTP server, in-process: the Truss contract, the
//! three stream forms, error mapping, and crash isolation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use strut_model::Registry;
use strut_python::PythonSettings;
use strut_server::{Deployment, Limits, PRODUCTION, Server, SpecOptions};
use tower::ServiceExt;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/truss-fixtures")
        .join(name)
}

fn registry(settings: PythonSettings) -> Registry {
    let mut registry = Registry::new();
    strut_python::register(&mut registry, settings);
    registry
}

struct Served {
    router: axum::Router,
    deployment: Arc<Deployment>,
    _secrets: tempfile::TempDir,
}

/// Request log lines, as the server hands them to its sink.
#[derive(Default)]
struct Lines(std::sync::Mutex<Vec<(String, String)>>);

impl strut_model::LogSink for Lines {
    fn write(&self, request_id: &str, _level: strut_model::LogLevel, message: &str) {
        let line = (request_id.to_owned(), message.to_owned());
        self.0.lock().unwrap().push(line);
    }
}

fn deploy(name: &str, settings: PythonSettings) -> Served {
    deploy_with(name, settings, Arc::new(Lines::default()))
}

fn deploy_with(name: &str, settings: PythonSettings, lines: Arc<Lines>) -> Served {
    let (loaded, _) = strut_server::load_validated(&fixture(name)).expect("the fixture validates");
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("api_token"), "t0k3n").unwrap();
    let options = SpecOptions {
        secrets_dir: secrets.path(),
        environment: None,
    };
    let registry = registry(settings);
    let spec = strut_server::spec_for(&loaded, format!("py-{name}"), &registry, &options)
        .expect("a Python model is accepted");
    let limits = Limits {
        load_retries: 0,
        ..Limits::default()
    };
    let server = Server::with_log_sink(limits, lines);
    let deployment = server.deploy(spec, &registry, &[PRODUCTION]);
    Served {
        router: server.router(),
        deployment,
        _secrets: secrets,
    }
}

async fn serve(name: &str) -> Served {
    let served = deploy(name, PythonSettings::default());
    served.deployment.loaded().await.expect("the fixture loads");
    served
}

struct Reply {
    status: StatusCode,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn post(router: &axum::Router, body: Value, accept: Option<&str>) -> Reply {
    let mut request = Request::post("/predict").header("content-type", "application/json");
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let request = request.body(Body::from(body.to_string())).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn ready(router: &axum::Router) -> StatusCode {
    let request = Request::get("/v1/models/model")
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn echo_round_trips_json() {
    let served = serve("echo").await;
    let reply = post(
        &served.router,
        json!({"x": [1, "two", {"three": 3.5}]}),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json(), json!({"x": [1, "two", {"three": 3.5}]}));
    assert_eq!(ready(&served.router).await, 200);
}

#[tokio::test]
async fn the_truss_lifecycle_runs_in_order_with_only_the_arguments_init_names() {
    let served = serve("lifecycle").await;
    let reply = post(&served.router, json!({"name": "strut"}), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({
            "output": {
                "message": "hello, strut",
                "preprocessed": true,
                "has_token": true,
                "loads": 1,
            },
            "postprocessed": true,
        })
    );
    // `is_healthy` is the model's own (true after exactly one load).
    assert_eq!(ready(&served.router).await, 200);
}

#[tokio::test]
async fn what_the_model_prints_or_logs_lands_in_its_requests_log() {
    let lines = Arc::new(Lines::default());
    let served = deploy_with("lifecycle", PythonSettings::default(), lines.clone());
    served.deployment.loaded().await.unwrap();
    let request = Request::post("/predict")
        .header("x-request-id", "req-42")
        .body(Body::from(r#"{"name": "logs"}"#))
        .unwrap();
    let response = served.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let lines = lines.0.lock().unwrap().clone();
    assert!(
        lines.contains(&("req-42".into(), "predicting for logs".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(
            "req-42".into(),
            "lifecycle: a warning from the model".into()
        )),
        "{lines:?}"
    );
}

#[tokio::test]
async fn output_of_code_that_replaced_sys_stdout_still_lands_in_the_requests_log() {
    let lines = Arc::new(Lines::default());
    let served = deploy_with("stdout", PythonSettings::default(), lines.clone());
    served.deployment.loaded().await.unwrap();
    let request = Request::post("/predict")
        .header("x-request-id", "req-fd")
        .body(Body::from("{}"))
        .unwrap();
    let response = served.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The pipe is read on a thread of the worker: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    for wanted in [
        "printed through a replaced sys.stdout",
        "written straight to file descriptor 2",
    ] {
        loop {
            let seen = lines
                .0
                .lock()
                .unwrap()
                .contains(&("req-fd".into(), wanted.into()));
            if seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{wanted}: {:?}",
                lines.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn generators_stream_as_raw_chunks_sse_or_collected_json() {
    let served = serve("streaming").await;
    let raw = post(&served.router, json!({"n": 3}), None).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.text, "part0;part1;part2;");
    let sse = post(
        &served.router,
        json!({"n": 2, "async": true}),
        Some("text/event-stream"),
    )
    .await;
    assert_eq!(sse.text, "data: async0;\n\ndata: async1;\n\n");
    let collected = post(&served.router, json!({"n": 2}), Some("application/json")).await;
    assert_eq!(collected.json(), json!("part0;part1;"));
    // A long stream goes through the credit window (16 chunks ahead).
    let long = post(&served.router, json!({"n": 200}), None).await;
    assert_eq!(long.text.matches(';').count(), 200);
}

#[tokio::test]
async fn arrays_and_pydantic_models_are_serialised_as_truss_does() {
    let served = serve("outputs").await;
    for (kind, expected) in [
        ("numpy", json!({"vector": [0.5, 1.5]})),
        ("pydantic", json!({"label": "positive", "score": 0.5})),
        ("tuple", json!({"pair": [1, 2]})),
    ] {
        let reply = post(&served.router, json!({"kind": kind}), None).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.text);
        assert_eq!(reply.json(), expected, "{kind}");
    }
}

#[tokio::test]
async fn predict_can_take_the_request_with_its_headers_and_query() {
    let served = serve("request").await;
    for path in [
        "/predict?mode=fast&empty=",
        "/v1/models/model:predict?mode=fast&empty=",
    ] {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .header("user-agent", "strut-test")
            .header("X-Tenant", "acme")
            .body(Body::from(r#"{"x": 1}"#))
            .unwrap();
        let response = served.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            json!({
                "input": {"x": 1},
                "user_agent": "strut-test",
                "tenant": "acme",
                "query": {"mode": "fast", "empty": ""},
                "disconnected": false,
            }),
            "{path}"
        );
    }
}

async fn post_to(router: &axum::Router, path: &str, body: Value) -> (StatusCode, String, String) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("x-tenant", "acme")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn the_openai_routes_reach_the_models_own_methods_with_the_body_as_sent() {
    let served = serve("openai").await;
    let chat = json!({"model": "mine", "messages": [{"role": "user", "content": "one two three"}]});
    for prefix in ["", "/production/sync", "/environments/production/sync"] {
        let (status, _, text) = post_to(
            &served.router,
            &format!("{prefix}/v1/chat/completions"),
            chat.clone(),
        )
        .await;
        assert_eq!(status, 200, "{prefix}: {text}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["choices"][0]["message"]["content"], "three two one",
            "{prefix}"
        );
        assert_eq!(doc["model"], "mine");
        assert_eq!(
            doc["tenant"], "acme",
            "the method's `request` has the headers"
        );
    }
    // A streaming method's frames go out as the model wrote them.
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let (status, content_type, text) =
        post_to(&served.router, "/v1/chat/completions", stream).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(
        text,
        concat!(
            "data: {\"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"three\"}}]}\n\n",
            "data: {\"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"two\"}}]}\n\n",
            "data: {\"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"one\"}}]}\n\n",
            "data: [DONE]\n\n",
        )
    );
    let (status, _, text) = post_to(
        &served.router,
        "/v1/embeddings",
        json!({"input": ["ab", "abc"]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["data"][1]["embedding"], json!([3.0, 1.0]));
    // No `completions` method, and no text generation: 404 naming it.
    let (status, _, text) =
        post_to(&served.router, "/v1/completions", json!({"prompt": "x"})).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("completions"), "{text}");
    // predict is still predict.
    assert_eq!(
        post(&served.router, json!({"a": 1}), None).await.json(),
        json!({"predict": {"a": 1}})
    );
}

#[tokio::test]
async fn a_returned_response_keeps_its_status_headers_and_body() {
    let served = serve("response").await;
    let respond = |kind: &str| {
        Request::post("/predict")
            .header("content-type", "application/json")
            .body(Body::from(json!({"kind": kind}).to_string()))
            .unwrap()
    };
    let response = served
        .router
        .clone()
        .oneshot(respond("plain"))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-model"], "response");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-strut-deployment"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"plain": true}"#);

    let response = served
        .router
        .clone()
        .oneshot(respond("gone"))
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
    // Truss marks a model's own error status as the model's.
    assert_eq!(response.headers()["x-baseten-error-code"], "600");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"no longer here");

    let response = served
        .router
        .clone()
        .oneshot(respond("stream"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-rows"], "3");
    assert_eq!(response.headers()["content-type"], "text/csv");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"row0\nrow1\nrow2\n");
}

#[tokio::test]
async fn an_http_exception_keeps_its_status_and_anything_else_is_a_generic_500() {
    let served = serve("errors").await;
    let teapot = post(&served.router, json!({"fail": "teapot"}), None).await;
    assert_eq!(teapot.status, 418, "{}", teapot.text);
    assert!(teapot.text.contains("I'm a teapot"), "{}", teapot.text);
    let internal = post(&served.router, json!({"fail": "value"}), None).await;
    assert_eq!(internal.status, 500);
    assert!(
        !internal.text.contains("hunter2"),
        "internals leak: {}",
        internal.text
    );
    assert_eq!(
        post(&served.router, json!({}), None).await.json(),
        json!({"ok": true})
    );
}

#[tokio::test]
async fn a_crash_fails_only_its_request_and_the_worker_comes_back() {
    let served = serve("crashy").await;
    let before = post(&served.router, json!({}), None).await.json()["pid"].clone();
    for crash in ["segfault", "exit"] {
        let reply = post(&served.router, json!({"crash": crash}), None).await;
        assert_eq!(reply.status, 500, "{crash}: {}", reply.text);
        assert!(
            reply.text.contains("worker process exited"),
            "{crash}: {}",
            reply.text
        );
        // Restarted and loaded again: ready, serving, in a new process.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = post(&served.router, json!({}), None).await;
            if reply.status == 200 {
                assert_ne!(reply.json()["pid"], before, "{crash}: a new worker");
                break;
            }
            assert_eq!(
                reply.status, 503,
                "{crash}: restarting is 503: {}",
                reply.text
            );
            assert!(
                Instant::now() < deadline,
                "{crash}: the worker did not come back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ready(&served.router).await, 200);
    }
}

#[tokio::test]
async fn a_load_that_hangs_is_ended_by_the_load_timeout() {
    let settings = PythonSettings {
        load_timeout: Duration::from_secs(2),
        ..PythonSettings::default()
    };
    let served = deploy("hang-load", settings);
    let started = Instant::now();
    let err = served.deployment.loaded().await.unwrap_err();
    assert!(err.contains("load did not finish within 2 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(ready(&served.router).await, 503);
}

#[test]
fn a_directory_with_neither_a_class_nor_a_model_file_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "model_class_name: Llama3\npython_version: py311\nmodel_metadata:\n  example_model_input: {}\n",
    )
    .unwrap();
    let (loaded, _) = strut_server::load_validated(dir.path()).unwrap();
    let options = SpecOptions {
        secrets_dir: dir.path(),
        environment: None,
    };
    let err = strut_server::spec_for(
        &loaded,
        "x".into(),
        &registry(PythonSettings::default()),
        &options,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model_class_name `Llama3` is not compiled into this binary"),
        "{err}"
    );
    assert!(
        err.contains("nor does the directory have a Python model class in model/model.py"),
        "{err}"
    );
}

#[tokio::test]
async fn a_python_version_the_interpreter_does_not_satisfy_is_a_clear_load_error() {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.version_info[1])"])
        .output()
        .unwrap();
    let minor: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let other = if minor == 10 { 11 } else { 10 };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    std::fs::copy(
        fixture("echo").join("model/model.py"),
        dir.path().join("model/model.py"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!("python_version: py3{other}\nmodel_metadata:\n  example_model_input: {{}}\n"),
    )
    .unwrap();
    let (loaded, _) = strut_server::load_validated(dir.path()).unwrap();
    let options = SpecOptions {
        secrets_dir: dir.path(),
        environment: None,
    };
    let registry = registry(PythonSettings::default());
    let spec = strut_server::spec_for(&loaded, "v".into(), &registry, &options).unwrap();
    let server = Server::new(Limits {
        load_retries: 0,
        ..Limits::default()
    });
    let deployment = server.deploy(spec, &registry, &[PRODUCTION]);
    let err = deployment.loaded().await.unwrap_err();
    assert!(
        err.contains(&format!(
            "config.yaml asks for python_version py3{other} (Python 3.{other}), but"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("is Python 3.{minor}")), "{err}");
    assert!(!err.contains("Traceback"), "{err}");
}

#[tokio::test]
async fn install_requirements_makes_the_models_environment_once_and_reuses_it() {
    let venvs = tempfile::tempdir().unwrap();
    let settings = || PythonSettings {
        venvs: Some(venvs.path().to_owned()),
        ..PythonSettings::default()
    };
    let first = deploy("requirements", settings());
    first.deployment.loaded().await.expect("installs and loads");
    let reply = post(&first.router, json!({}), None).await.json();
    assert_eq!(reply["six"], "1.16.0", "{reply}");
    let prefix = reply["prefix"].as_str().unwrap().to_owned();
    assert!(
        prefix.starts_with(&venvs.path().display().to_string()),
        "{prefix}"
    );
    let made: Vec<_> = std::fs::read_dir(venvs.path()).unwrap().collect();
    assert_eq!(made.len(), 1, "one environment");
    // A second deployment of the same requirements reuses it.
    let second = deploy("requirements", settings());
    let started = Instant::now();
    second.deployment.loaded().await.expect("loads");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        post(&second.router, json!({}), None).await.json()["prefix"],
        prefix.as_str()
    );
    assert_eq!(std::fs::read_dir(venvs.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn predicts_run_concurrently_and_a_client_that_leaves_cancels_an_async_one() {
    let served = serve("slow").await;
    // predict_concurrency 4: four half-second predicts take about half a second.
    let started = Instant::now();
    let runs = (0..4).map(|_| post(&served.router, json!({"sleep": 0.5}), None));
    for reply in futures::future::join_all(runs).await {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );

    // The client goes away 200 ms into a 5 s predict: the worker's task is cancelled.
    let gone = tokio::time::timeout(
        Duration::from_millis(200),
        post(&served.router, json!({"sleep": 5.0}), None),
    )
    .await;
    assert!(gone.is_err(), "the predict finished early");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = post(&served.router, json!({"cancelled": true}), None)
            .await
            .json();
        if count["cancelled"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not cancelled: {count}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_python_that_cannot_be_started_fails_the_load_naming_it() {
    let settings = PythonSettings {
        python: PathBuf::from("/nonexistent/python3"),
        ..PythonSettings::default()
    };
    let served = deploy("echo", settings);
    let err = served.deployment.loaded().await.unwrap_err();
    assert!(
        err.contains("could not start `/nonexistent/python3`"),
        "{err}"
    );
    assert_eq!(ready(&served.router).await, 503);
    // The server answers; predict says the model is not ready.
    assert_eq!(post(&served.router, json!({}), None).await.status, 503);
}
