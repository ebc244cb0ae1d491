//! Connection limits over real sockets: half-sent headers, stalled bodies,
//! idle keep-alive connections, oversized heads and a slowloris crowd.

use std::time::{Duration, Instant};

use serde_json::Value;
use strut_server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{self, Probe, Running};

async fn echo_server() -> Running {
    let (server, deployment) = common::server(
        "Echo",
        &Probe::new(),
        Limits {
            header_read_timeout: Duration::from_secs(1),
            body_idle_timeout: Duration::from_secs(1),
            max_header_bytes: 16 * 1024,
            ..common::limits()
        },
    );
    deployment.loaded().await.unwrap();
    common::serve(server).await
}

async fn connect(server: &Running) -> TcpStream {
    TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection, and when.
async fn until_closed(socket: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .unwrap_or_default();
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

const HEAD: &str = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";

#[tokio::test]
async fn half_sent_headers_and_idle_connections_are_closed() {
    let server = echo_server().await;
    let mut half = connect(&server).await;
    half.write_all(HEAD.as_bytes()).await.unwrap();
    let (reply, after) = until_closed(&mut half).await;
    assert!(reply.is_empty(), "{reply}");
    assert!(after < Duration::from_secs(5), "{after:?}");

    // A keep-alive connection gets its answer, then is closed once idle.
    let mut idle = connect(&server).await;
    let body = r#"{"x": 1}"#;
    idle.write_all(format!("{HEAD}Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
        .await
        .unwrap();
    let (reply, after) = until_closed(&mut idle).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(after < Duration::from_secs(5), "{after:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let server = echo_server().await;
    let mut socket = connect(&server).await;
    socket
        .write_all(format!("{HEAD}Content-Length: 100\r\n\r\n{{\"x\": ").as_bytes())
        .await
        .unwrap();
    let (reply, after) = until_closed(&mut socket).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let body: Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["code"], "body_timeout", "{body}");
    assert!(after < Duration::from_secs(5), "{after:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let server = echo_server().await;
    let mut socket = connect(&server).await;
    let big = "a".repeat(32 * 1024);
    socket
        .write_all(format!("{HEAD}X-Big: {big}\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes())
        .await
        .unwrap();
    let (reply, _) = until_closed(&mut socket).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(json_body(&reply)["code"], "headers_too_large", "{reply}");
    server.stop().await.unwrap();
}

fn json_body(reply: &str) -> Value {
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("content-type: application/json"), "{reply}");
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {reply}"))
}

/// The heads hyper refuses before strut sees them still get strut's JSON
/// error body, and the server keeps serving.
#[tokio::test]
async fn unparseable_heads_get_a_json_400() {
    let server = echo_server().await;
    for head in [
        format!("{HEAD}Content-Length: abc\r\n\r\n"),
        format!("{HEAD}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"),
        format!("{HEAD}X-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{{}}"),
        format!("{HEAD}X-Request-Id: a\x01b\r\nContent-Length: 2\r\n\r\n{{}}"),
        "GET / HTTP/9.9\r\n\r\n".to_owned(),
    ] {
        let mut socket = connect(&server).await;
        socket.write_all(head.as_bytes()).await.unwrap();
        let (reply, _) = until_closed(&mut socket).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{head:?}: {reply}");
        let body = json_body(&reply);
        assert_eq!(body["code"], "bad_request", "{reply}");
        assert!(body["error"].as_str().unwrap().contains("HTTP"), "{reply}");
    }
    let response = common::client()
        .post(format!("{}/predict", server.url))
        .body(r#"{"x": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_slowloris_crowd_does_not_stop_normal_requests() {
    let server = echo_server().await;
    let mut crowd = Vec::new();
    for _ in 0..500 {
        let mut socket = connect(&server).await;
        socket
            .write_all(b"POST /predict HTTP/1.1\r\nHo")
            .await
            .unwrap();
        crowd.push(socket);
    }
    let client = common::client();
    for _ in 0..20 {
        let started = Instant::now();
        let response = client
            .post(format!("{}/predict", server.url))
            .body(r#"{"x": 1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    // And the crowd is gone after the header timeout.
    for socket in &mut crowd[..10] {
        let (reply, _) = until_closed(socket).await;
        assert!(reply.is_empty());
    }
    server.stop().await.unwrap();
}
