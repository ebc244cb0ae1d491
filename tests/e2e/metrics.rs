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
