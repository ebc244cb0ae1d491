//! Streaming over a real socket: raw chunks, SSE framing byte for byte, the
//! collected form, errors after the head was sent, stalls and disconnects.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use strut_server::Limits;

use crate::common::{self, Probe, client};
use crate::lifecycle::wait_for;

async fn start(
    class: &str,
    probe: &std::sync::Arc<Probe>,
    spec_gap: Option<Duration>,
) -> (common::Running, std::sync::Arc<strut_server::Deployment>) {
    let mut spec = common::spec(class, 1);
    if let Some(gap) = spec_gap {
        spec.stream_read_timeout = gap;
    }
    let (server, deployment) = common::server_with(spec, probe, Limits { ..common::limits() });
    deployment.loaded().await.unwrap();
    (common::serve(server).await, deployment)
}

#[tokio::test]
async fn raw_chunks_arrive_as_they_are_produced() {
    let probe = Probe::new();
    let (running, deployment) = start("Scripted", &probe, None).await;
    let started = Instant::now();
    let response = client()
        .post(format!("{}/predict", running.url))
        .body(r#"{"stream": 4, "delay_ms": 200}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"part0;");
    assert_eq!(
        deployment.admission().in_flight(),
        1,
        "an open stream holds its model slot"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"part1;part2;part3;");
    assert!(
        first_at < Duration::from_millis(450) && started.elapsed() >= Duration::from_millis(600),
        "first chunk at {first_at:?}, all at {:?}",
        started.elapsed()
    );
    wait_for(
        || deployment.admission().in_flight() == 0,
        "slot released when the stream ends",
    )
    .await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn sse_framing_byte_for_byte() {
    let probe = Probe::new();
    let (running, _d) = start("Scripted", &probe, None).await;
    let response = client()
        .post(format!("{}/predict", running.url))
        .header("accept", "text/event-stream")
        .body(r#"{"stream": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(
        response.text().await.unwrap(),
        "data: part0;\n\ndata: part1;\n\ndata: part2;\n\n"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn accept_json_collects_the_stream_unless_the_client_is_openai() {
    for class in ["Scripted", "AsyncScripted"] {
        let probe = Probe::new();
        let (running, _d) = start(class, &probe, None).await;
        let url = format!("{}/predict", running.url);
        let response = client()
            .post(&url)
            .header("accept", "application/json")
            .body(r#"{"stream": 3}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "application/json");
        let expected = if class == "Scripted" {
            "part0;part1;part2;"
        } else {
            "a0;a1;a2;"
        };
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap(),
            expected
        );

        let response = client()
            .post(&url)
            .header("accept", "application/json")
            .header("user-agent", "OpenAI/Python 1.61.0")
            .body(r#"{"stream": 3}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        assert_eq!(response.text().await.unwrap(), expected);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_error_mid_stream_is_an_sse_event_or_a_broken_body() {
    let probe = Probe::new();
    let (running, _d) = start("Scripted", &probe, None).await;
    let url = format!("{}/predict", running.url);
    for input in [
        r#"{"stream": 5, "fail_at": 2}"#,
        r#"{"stream": 5, "panic_at": 2}"#,
    ] {
        let response = client()
            .post(&url)
            .header("accept", "text/event-stream")
            .body(input)
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        let code = if input.contains("panic") {
            "model_panic"
        } else {
            "model_error"
        };
        assert_eq!(
            text,
            format!(
                "data: part0;\n\ndata: part1;\n\nevent: error\ndata: {{\"error\":\"Internal Server Error (in model/chainlet).\",\"code\":\"{code}\"}}\n\n"
            ),
        );

        // A raw stream is cut short so the client can tell: the connection is
        // aborted, before or after the head went out depending on timing.
        let outcome = match client().post(&url).body(input).send().await {
            Ok(response) => response.bytes().await.map(|b| b.to_vec()),
            Err(err) => Err(err),
        };
        assert!(
            outcome.is_err(),
            "a failed stream must not look complete: {outcome:?}"
        );

        let response = client()
            .post(&url)
            .header("accept", "application/json")
            .body(input)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
    // Still serving.
    let response = client()
        .post(&url)
        .body(r#"{"stream": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "part0;part1;");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_stream_is_stopped_and_says_so() {
    let probe = Probe::new();
    let (running, _d) = start("Scripted", &probe, Some(Duration::from_millis(1000))).await;
    let response = client()
        .post(format!("{}/predict", running.url))
        .header("accept", "text/event-stream")
        .body(r#"{"stream": 3, "stall_at": 1}"#)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.starts_with("data: part0;\n\nevent: error\n"), "{text}");
    assert!(text.contains(r#""code":"stream_stalled""#), "{text}");
    wait_for(
        || probe.cancelled.load(Ordering::SeqCst) == 1,
        "the stalled model is cancelled",
    )
    .await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_the_model_and_frees_the_slot() {
    let probe = Probe::new();
    let (running, deployment) = start("Scripted", &probe, None).await;
    let response = client()
        .post(format!("{}/predict", running.url))
        .body(r#"{"stream": 1000, "delay_ms": 20}"#)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    assert_eq!(&body.next().await.unwrap().unwrap()[..], b"part0;");
    drop(body);
    wait_for(
        || probe.cancelled.load(Ordering::SeqCst) == 1,
        "model sees the disconnect",
    )
    .await;
    wait_for(|| deployment.admission().in_flight() == 0, "slot released").await;
    assert_eq!(probe.finished.load(Ordering::SeqCst), 0);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_open_streams_finish() {
    let probe = Probe::new();
    let (running, _d) = start("Scripted", &probe, None).await;
    let url = running.url.clone();
    let response = client()
        .post(format!("{url}/predict"))
        .body(r#"{"stream": 6, "delay_ms": 100}"#)
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(async move { response.text().await.unwrap() });
    running.stop().await.unwrap();
    assert_eq!(
        reader.await.unwrap(),
        "part0;part1;part2;part3;part4;part5;"
    );
}

#[tokio::test]
async fn an_idle_sse_stream_gets_keep_alive_comments() {
    let probe = Probe::new();
    let (running, _d) = start("Scripted", &probe, None).await;
    // Two chunks 17 s apart: past the writer's 15 s keep-alive interval.
    let response = client()
        .post(format!("{}/predict", running.url))
        .header("accept", "text/event-stream")
        .body(r#"{"stream": 2, "delay_ms": 17000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let comment = text
        .find("\n:")
        .or_else(|| text.starts_with(':').then_some(0));
    let second = text.find("data: part1;");
    assert!(
        matches!((comment, second), (Some(c), Some(s)) if c < s),
        "no keep-alive comment between the chunks: {text:?}"
    );
    running.stop().await.unwrap();
}
