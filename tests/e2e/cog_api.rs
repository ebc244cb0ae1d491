//! Cog's predictions API over real sockets: sync and SSE predictions,
//! async ones with webhook events, idempotent PUT, cancel, /health-check.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::process::StrutProcess;
use crate::common::webhooks::{Receiver, serve_async, settings};
use crate::common::{self, Probe, client};

async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = client().post(url).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn post_async(url: &str, body: Value) -> (u16, Value) {
    let response = client()
        .post(url)
        .header("prefer", "respond-async")
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn sync_predictions_have_cogs_shape_with_logs_and_metrics() {
    let probe = Probe::new();
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let url = format!("{}/predictions", server.url);
    let (status, body) = post(&url, json!({"input": {"log": "hello"}})).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "succeeded");
    assert!(body["id"].as_str().unwrap().starts_with("pred_"));
    assert_eq!(body["logs"], "hello\n");
    assert_eq!(body["output"]["output"]["echo"], json!({"log": "hello"}));
    assert!(body["metrics"]["predict_time"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["input"], json!({"log": "hello"}));

    let (status, body) = post(&url, json!({"input": {"fail": "internal"}})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("failed")),
        "a failed prediction is 200"
    );
    assert_eq!(body["error"], "Internal Server Error (in model/chainlet).");
    let (status, body) = post(&url, json!({"input": {"fail": "input"}})).await;
    assert_eq!((status, body["status"].as_str()), (422, Some("failed")));
    assert_eq!(body["error"], "field `x` must be positive");
    // A body whose fields have the wrong type: 422 in pydantic's shape,
    // sync or async, naming the field.
    for (bad, field) in [
        (json!({"input": "text"}), "input"),
        (json!({"input": [1, 2]}), "input"),
        (json!({"input": {}, "webhook": 7}), "webhook"),
        (
            json!({"input": {}, "webhook_events_filter": ["never"]}),
            "webhook_events_filter",
        ),
        (json!({"input": {}, "id": ""}), "id"),
    ] {
        for (status, body) in [
            post(&url, bad.clone()).await,
            post_async(&url, bad.clone()).await,
        ] {
            assert_eq!(status, 422, "{bad}: {body}");
            assert_eq!(
                body["detail"][0]["loc"],
                json!(["body", field]),
                "{bad}: {body}"
            );
            assert!(body["detail"][0]["msg"].is_string(), "{body}");
        }
    }
    let (status, body) = post(&url, json!({"input": {"stream": 2}})).await;
    assert_eq!(
        (status, body["output"].clone()),
        (200, json!(["part0;", "part1;"])),
        "an iterator's output is its list"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sse_goes_out_with_the_same_headers_as_every_stream() {
    let probe = Probe::new();
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let response = client()
        .post(format!("{}/predictions", server.url))
        .header("accept", "text/event-stream")
        .json(&json!({"input": {"stream": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(
        headers["x-accel-buffering"], "no",
        "proxies must not buffer"
    );
    assert!(response.text().await.unwrap().contains("event: completed"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sse_streams_start_outputs_logs_and_completed() {
    let probe = Probe::new();
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let response = client()
        .post(format!("{}/predictions", server.url))
        .header("accept", "text/event-stream")
        .json(&json!({"input": {"stream": 3, "delay_ms": 20, "log": "warming up"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| e.contains("event:"))
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap()
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"), "{names:?}");
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");
    let outputs: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "output")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        outputs,
        [
            &json!({"chunk": "part0;", "index": 0}),
            &json!({"chunk": "part1;", "index": 1}),
            &json!({"chunk": "part2;", "index": 2})
        ]
    );
    let log = events
        .iter()
        .find(|(n, _)| n == "log")
        .expect("a log event");
    assert_eq!(log.1, json!({"source": "stdout", "data": "warming up\n"}));
    let completed = &events.last().unwrap().1;
    assert_eq!(completed["status"], "succeeded");
    assert_eq!(completed["output"], json!(["part0;", "part1;", "part2;"]));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn async_predictions_send_the_filtered_webhook_events() {
    let probe = Probe::new();
    let receiver = Receiver::start().await;
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let url = format!("{}/predictions", server.url);
    let body = json!({"id": "only-completed", "input": {"log": "hi"}, "webhook": receiver.url,
                      "webhook_events_filter": ["completed"]});
    let (status, reply) = post_async(&url, body).await;
    assert_eq!(
        (status, reply["id"].as_str(), reply["status"].as_str()),
        (202, Some("only-completed"), Some("starting"))
    );
    receiver
        .wait_for("the completed event", |d| !d.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let deliveries = receiver.for_request("only-completed");
    assert_eq!(deliveries.len(), 1, "exactly one POST: {deliveries:#?}");
    assert_eq!(deliveries[0].body["status"], "succeeded");
    assert_eq!(deliveries[0].body["logs"], "hi\n");

    let body = json!({"id": "all-events", "input": {"log": "step 1", "sleep_ms": 800}, "webhook": receiver.url});
    assert_eq!(post_async(&url, body).await.0, 202);
    let deliveries = receiver
        .wait_for("every event", |d| {
            d.iter().any(|d| {
                d.body["id"] == "all-events"
                    && d.body["status"] == "succeeded"
                    && d.body["completed_at"].is_string()
            })
        })
        .await;
    let mine: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d.body["id"] == "all-events")
        .map(|d| &d.body)
        .collect();
    assert_eq!(mine[0]["status"], "processing", "start comes first");
    assert!(
        mine.iter()
            .any(|b| b["status"] == "processing" && b["logs"] == "step 1\n"),
        "a logs event: {mine:#?}"
    );
    assert!(
        mine.iter()
            .any(|b| b["status"] == "processing" && !b["output"].is_null()),
        "an output event"
    );
    assert_eq!(
        mine.last().unwrap()["status"],
        "succeeded",
        "completed comes last"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn put_is_idempotent_and_cancel_stops_a_prediction() {
    let probe = Probe::new();
    let receiver = Receiver::start().await;
    let (server, _deployment, _dir) =
        serve_async(common::spec("Scripted", 1), &probe, settings()).await;
    let put = |id: &str, body: Value| {
        client()
            .put(format!("{}/predictions/{id}", server.url))
            .header("prefer", "respond-async")
            .json(&body)
            .send()
    };
    let body = json!({"input": {"sleep_ms": 300}});
    let first = put("abc", body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    let second = put("abc", body).await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(second.json::<Value>().await.unwrap()["id"], "abc");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        probe.finished.load(Ordering::SeqCst),
        1,
        "one predict call for two PUTs"
    );

    let mismatch = put("abc", json!({"id": "xyz", "input": {}})).await.unwrap();
    assert_eq!(mismatch.status(), 422);
    assert_eq!(
        mismatch.json::<Value>().await.unwrap()["detail"][0]["loc"],
        json!(["body", "id"])
    );

    let body = json!({"input": {"sleep_ms": 30_000}, "webhook": receiver.url, "webhook_events_filter": ["completed"]});
    assert_eq!(put("long", body).await.unwrap().status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = client()
        .post(format!("{}/predictions/long/cancel", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    assert_eq!(cancel.json::<Value>().await.unwrap(), json!({}));
    let deliveries = receiver
        .wait_for("the canceled completion", |d| !d.is_empty())
        .await;
    assert_eq!(deliveries[0].body["status"], "canceled");
    let unknown = client()
        .post(format!("{}/predictions/nope/cancel", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap(), json!({}));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_check_reports_starting_ready_busy_and_setup_failed() {
    let health = |url: String| async move {
        let response = client()
            .get(format!("{url}/health-check"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "always 200");
        response.json::<Value>().await.unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (probe, release) = Probe::gated();
    let (server, deployment) = common::server("Scripted", &probe, common::limits());
    let server = common::serve(server).await;
    assert_eq!(health(server.url.clone()).await, "STARTING");
    release.send(()).unwrap();
    deployment.loaded().await.unwrap();
    assert_eq!(health(server.url.clone()).await, "READY");
    let url = server.url.clone();
    let busy = tokio::spawn(async move {
        post(
            &format!("{url}/predictions"),
            json!({"input": {"sleep_ms": 500}}),
        )
        .await
    });
    while deployment.admission().in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(health(server.url.clone()).await, "BUSY");
    assert_eq!(busy.await.unwrap().0, 200);
    server.stop().await.unwrap();

    // A failed startup load ends `serve`, so this part goes in-process.
    let probe = Probe::new();
    let (server, deployment) = common::server("BrokenLoad", &probe, common::limits());
    assert!(deployment.loaded().await.is_err());
    let router = server.router();
    let get = axum::http::Request::get("/health-check")
        .body(axum::body::Body::empty())
        .unwrap();
    let body = common::body_json(common::send(&router, get).await).await;
    assert_eq!(body["status"], "SETUP_FAILED");
    let response = common::send(
        &router,
        common::post_json("/predictions", r#"{"input": {}}"#),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert_eq!(common::body_json(response).await["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_describes_the_routes_and_the_models_example_input() {
    let dir = tempfile::tempdir().unwrap();
    let echo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/echo");
    let args = [
        echo.to_str().unwrap(),
        "--secrets-dir",
        dir.path().to_str().unwrap(),
    ];
    let server = tokio::task::block_in_place(|| StrutProcess::serve(&args, &[]));
    let response = client()
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.0"),
        "{doc:#}"
    );
    assert_eq!(doc["info"]["title"], "echo");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health-check", "get"),
        ("/openapi.json", "get"),
        ("/predictions", "post"),
        ("/predictions/{prediction_id}", "put"),
        ("/predictions/{prediction_id}/cancel", "post"),
    ] {
        assert!(
            paths[path][method]["responses"].is_object(),
            "{path} {method}"
        );
    }
    // models/echo's config.yaml: example_model_input {"prompt": "hello", "n": 3}.
    let input = &doc["components"]["schemas"]["Input"];
    assert_eq!(input["type"], "object");
    assert_eq!(input["properties"]["prompt"]["type"], "string");
    assert_eq!(input["properties"]["n"]["type"], "integer");
    assert!(input.get("required").is_none(), "every field optional");
    // Every reference points at a schema the document defines.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 5);
    for reference in refs {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{reference}"
        );
    }
    // The documented example is a valid prediction.
    let (status, body) = post(
        &format!("{}/predictions", server.url),
        json!({"input": input["example"]}),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("succeeded")));
    assert_eq!(body["output"], json!({"prompt": "hello", "n": 3}));
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => refs.push(reference.clone()),
                    _ => collect_refs(value, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}
