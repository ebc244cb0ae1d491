//! `/metrics` after real traffic: every family moves by exactly what was sent
//! (each server has its own registry).

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;

use crate::common::{self, Probe, body_bytes, client, post_json, send};

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(router: &axum::Router) -> String {
    let response = send(
        router,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    String::from_utf8(body_bytes(response).await.to_vec()).unwrap()
}

#[tokio::test]
async fn counters_and_histograms_move_with_traffic() {
    let probe = Probe::new();
    let (server, deployment) = common::server("Scripted", &probe, common::limits());
    deployment.loaded().await.unwrap();
    let router = server.router();
    let dep = deployment.id().to_owned();

    let before = scrape(&router).await;
    assert_eq!(
        sample(
            &before,
            &format!("strut_model_ready{{deployment=\"{dep}\"}}")
        ),
        Some(1.0),
        "{before}"
    );
    assert!(
        sample(
            &before,
            &format!("strut_model_load_duration_seconds{{deployment=\"{dep}\"}}")
        )
        .is_some()
    );
    assert!(
        sample(&before, "strut_process_resident_memory_bytes").is_some_and(|v| v > 1e6),
        "{before}"
    );
    assert_eq!(
        sample(
            &before,
            &format!(
                "strut_requests_total{{route=\"/predict\",status=\"200\",deployment=\"{dep}\"}}"
            )
        ),
        None
    );

    for _ in 0..3 {
        assert_eq!(
            send(&router, post_json("/predict", "{}")).await.status(),
            200
        );
    }
    assert_eq!(
        send(&router, post_json("/predict", r#"{"fail": "input"}"#))
            .await
            .status(),
        400
    );
    assert_eq!(
        send(&router, post_json("/v1/models/model:predict", "{}"))
            .await
            .status(),
        200
    );
    let streamed = send(&router, post_json("/predict", r#"{"stream": 3}"#)).await;
    assert_eq!(body_bytes(streamed).await.as_ref(), b"part0;part1;part2;");

    let after = scrape(&router).await;
    let count =
        |series: &str| sample(&after, series).unwrap_or_else(|| panic!("no {series} in\n{after}"));
    assert_eq!(
        count(&format!(
            "strut_requests_total{{route=\"/predict\",status=\"200\",deployment=\"{dep}\"}}"
        )),
        4.0
    );
    assert_eq!(
        count(&format!(
            "strut_requests_total{{route=\"/predict\",status=\"400\",deployment=\"{dep}\"}}"
        )),
        1.0
    );
    assert_eq!(
        count(&format!(
            "strut_requests_total{{route=\"/v1/models/{{*rest}}\",status=\"200\",deployment=\"{dep}\"}}"
        )),
        1.0
    );
    assert_eq!(
        count(&format!(
            "strut_request_duration_seconds_count{{route=\"/predict\",deployment=\"{dep}\"}}"
        )),
        5.0
    );
    // The invalid input was refused by the model, after it got a slot.
    assert_eq!(
        count(&format!(
            "strut_queue_duration_seconds_count{{deployment=\"{dep}\"}}"
        )),
        6.0
    );
    assert_eq!(
        count(&format!(
            "strut_inference_duration_seconds_count{{deployment=\"{dep}\"}}"
        )),
        6.0
    );
    assert_eq!(
        count(&format!(
            "strut_time_to_first_byte_seconds_count{{deployment=\"{dep}\"}}"
        )),
        1.0
    );
    assert_eq!(
        count(&format!("strut_requests_in_flight{{deployment=\"{dep}\"}}")),
        0.0
    );
    assert_eq!(
        count(&format!("strut_queue_depth{{deployment=\"{dep}\"}}")),
        0.0
    );
    assert!(after.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn in_flight_and_queue_depth_are_live() {
    let probe = Probe::new();
    let (server, deployment) = common::server("Scripted", &probe, common::limits());
    deployment.loaded().await.unwrap();
    let dep = deployment.id().to_owned();
    let running = common::serve(server).await;
    let url = running.url.clone();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                client()
                    .post(format!("{url}/predict"))
                    .body(r#"{"sleep_ms": 800}"#)
                    .send()
                    .await
            })
        })
        .collect();
    crate::lifecycle::wait_for(|| deployment.admission().queued() == 2, "two waiting").await;
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(
            &text,
            &format!("strut_requests_in_flight{{deployment=\"{dep}\"}}")
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("strut_queue_depth{{deployment=\"{dep}\"}}")),
        Some(2.0),
        "{text}"
    );
    for r in slow {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.stop().await.unwrap();
}

/// Reports what its input says through the contract's `Telemetry`, as a
/// batching or generating model does.
struct Reporter(strut_model::Telemetry);

impl strut_model::Model for Reporter {
    fn predict(
        &self,
        input: serde_json::Value,
        _ctx: &strut_model::RequestContext,
    ) -> Result<strut_model::Output, strut_model::ModelError> {
        let n = |key: &str| input[key].as_u64().unwrap_or(0);
        if input.get("running").is_none() {
            self.0.batch(n("batch") as usize);
            self.0.generation(&strut_model::GenerationStats {
                prompt_tokens: n("prompt") as u32,
                completion_tokens: n("generated") as u32,
                time_to_first_token: Duration::from_millis(n("ttft_ms")),
                total: Duration::from_millis(n("total_ms")),
            });
        } else {
            self.0.scheduler_step(&strut_model::SchedulerStep {
                running: n("running") as usize,
                max_batch: 8,
                waiting: n("waiting") as usize,
                waiting_tokens: n("waiting_tokens") as usize,
                kv_used_tokens: 300,
                kv_budget_tokens: 1000,
                prefix_cached_tokens: 120,
                duration: Duration::from_millis(n("step_ms")),
                ..Default::default()
            });
            self.0
                .prefix_lookup(n("prompt") as usize, n("reused") as usize);
        }
        Ok(strut_model::Output::Json(serde_json::Value::Null))
    }
}

#[tokio::test]
async fn model_telemetry_reaches_the_deployments_series() {
    let mut registry = strut_model::Registry::new();
    registry.register("Reporter", |ctx| Ok(Reporter(ctx.telemetry.clone())));
    let server = strut_server::Server::new(common::limits());
    let deployment = server.deploy(
        common::spec("Reporter", 1),
        &registry,
        &[strut_server::PRODUCTION],
    );
    deployment.loaded().await.unwrap();
    let router = server.router();
    let dep = deployment.id().to_owned();

    for body in [
        r#"{"batch": 4, "prompt": 7, "generated": 11, "ttft_ms": 100, "total_ms": 600}"#,
        r#"{"batch": 1, "prompt": 3, "generated": 1, "ttft_ms": 50, "total_ms": 50}"#,
        // A scheduler's step: the batch, the queue in tokens, KV and prefix use.
        r#"{"prompt": 40, "reused": 30, "running": 6, "waiting": 2,
            "waiting_tokens": 250, "step_ms": 12}"#,
    ] {
        assert_eq!(
            send(&router, post_json("/predict", body)).await.status(),
            200
        );
    }
    let text = scrape(&router).await;
    let at = |name: &str| {
        sample(&text, &format!("{name}{{deployment=\"{dep}\"}}"))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(at("strut_batch_size_count"), 2.0);
    assert_eq!(at("strut_batch_size_sum"), 5.0);
    assert_eq!(at("strut_prompt_tokens_total"), 10.0);
    assert_eq!(at("strut_generated_tokens_total"), 12.0);
    assert_eq!(at("strut_time_to_first_token_seconds_count"), 2.0);
    // Only the first generation decoded past its first token: 10 tokens in 0.5 s.
    assert_eq!(at("strut_generation_tokens_per_second_count"), 1.0);
    assert_eq!(at("strut_generation_tokens_per_second_sum"), 20.0);
    assert_eq!(at("strut_batch_running_sequences"), 6.0);
    assert_eq!(at("strut_batch_occupancy_ratio"), 0.75);
    assert_eq!(at("strut_batch_waiting_requests"), 2.0);
    assert_eq!(at("strut_batch_waiting_tokens"), 250.0);
    assert_eq!(at("strut_kv_cache_used_tokens"), 300.0);
    assert_eq!(at("strut_kv_cache_budget_tokens"), 1000.0);
    assert_eq!(at("strut_prefix_cache_tokens"), 120.0);
    assert_eq!(at("strut_batch_step_duration_seconds_count"), 1.0);
    assert_eq!(at("strut_prefix_cache_prompt_tokens_total"), 40.0);
    assert_eq!(at("strut_prefix_cache_hit_tokens_total"), 30.0);
}

#[tokio::test]
async fn readiness_probes_are_counted_for_the_deployment_they_checked() {
    let probe = Probe::new();
    let (server, deployment) = common::server("Scripted", &probe, common::limits());
    deployment.loaded().await.unwrap();
    let router = server.router();
    let response = send(
        &router,
        Request::get("/v1/models/model")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[strut_server::DEPLOYMENT_HEADER],
        deployment.id()
    );
    let text = scrape(&router).await;
    let series = format!(
        "strut_requests_total{{route=\"/v1/models/{{*rest}}\",status=\"200\",deployment=\"{}\"}}",
        deployment.id()
    );
    assert_eq!(sample(&text, &series), Some(1.0), "{text}");
}
