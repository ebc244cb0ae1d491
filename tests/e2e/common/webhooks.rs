//! Async-inference harness: a real webhook receiver on loopback (http, or
//! https with a certificate made here) that can be told to fail, signature
//! checks done independently of the server, and a library server with the
//! async queue enabled.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Version};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use strut_queue::{Durability, SqliteStore};
use strut_server::{AsyncSettings, Deployment, DeploymentSpec};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use super::{Probe, Running};

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub raw: Bytes,
    pub body: Value,
    /// The status the receiver answered.
    pub answered: u16,
    pub version: Version,
}

#[derive(Default)]
pub struct Receiver {
    pub url: String,
    deliveries: Mutex<Vec<Delivery>>,
    /// Answer 500 to this many more requests.
    pub fail_next: AtomicUsize,
    /// Answer 500 until this instant.
    pub down_until: Mutex<Option<Instant>>,
    /// TLS handshakes that failed (a client that did not trust the certificate).
    pub handshake_failures: AtomicUsize,
    /// Take (record) this many more payloads but hold the answer back until
    /// `release` fires: the sender cannot know they arrived.
    pub hold_next: AtomicUsize,
    pub release: tokio::sync::Notify,
}

impl Receiver {
    pub async fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Arc::new(Self {
            url,
            ..Self::default()
        });
        tokio::spawn(axum::serve(listener, receiver.app()).into_future());
        receiver
    }

    /// An https receiver whose certificate for 127.0.0.1 is self-signed,
    /// made now; returns it with that certificate in PEM, for a client to trust.
    pub async fn start_tls() -> (Arc<Self>, String) {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key.into())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/hook", tcp.local_addr().unwrap());
        let receiver = Arc::new(Self {
            url,
            ..Self::default()
        });
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            receiver: receiver.clone(),
        };
        tokio::spawn(axum::serve(listener, receiver.app()).into_future());
        (receiver, made.cert.pem())
    }

    fn app(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone())
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// Deliveries answered 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.answered < 300)
            .collect()
    }

    pub fn for_request(&self, id: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.headers["x-baseten-request-id"] == id)
            .collect()
    }

    /// Waits until `done` holds over the deliveries so far.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let deliveries = self.deliveries();
            if done(&deliveries) {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {deliveries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// TCP with a TLS handshake per connection; a failed handshake is counted
/// and the connection dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    receiver: Arc<Receiver>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            match tokio::time::timeout(Duration::from_secs(5), handshake).await {
                Ok(Ok(tls)) => return (tls, addr),
                _ => {
                    self.receiver
                        .handshake_failures
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    version: Version,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    let down = receiver
        .down_until
        .lock()
        .unwrap()
        .is_some_and(|until| Instant::now() < until);
    let failing = down
        || receiver
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let hold = !failing
        && receiver
            .hold_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    receiver.deliveries.lock().unwrap().push(Delivery {
        headers,
        raw,
        body,
        answered: status.as_u16(),
        version,
    });
    if hold {
        let _ = tokio::time::timeout(Duration::from_secs(30), receiver.release.notified()).await;
    }
    status
}

/// The hex HMAC-SHA256 of `body` under `secret`, computed here, not by strut.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Settings with quick webhook retries for tests.
pub fn settings() -> AsyncSettings {
    AsyncSettings {
        webhook_initial_backoff: Duration::from_millis(50),
        webhook_max_backoff: Duration::from_millis(200),
        webhook_timeout: Duration::from_secs(5),
        ..AsyncSettings::default()
    }
}

/// A library server on a real socket with `spec` behind production and
/// development and the async queue on a fresh SQLite file.
pub async fn serve_async(
    spec: DeploymentSpec,
    probe: &Arc<Probe>,
    settings: AsyncSettings,
) -> (Running, Arc<Deployment>, tempfile::TempDir) {
    let (server, deployment) = super::server_with(spec, probe, super::limits());
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("queue.sqlite3"), Durability::Full).unwrap();
    server
        .enable_async(Arc::new(store), settings)
        .await
        .unwrap();
    deployment.loaded().await.expect("model loads");
    (super::serve(server).await, deployment, dir)
}

/// Polls `GET /async_request/{id}` until `done` holds; returns that status body.
pub async fn wait_status(base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let client = super::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = client
            .get(format!("{base}/async_request/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; last status: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn terminal(body: &Value) -> bool {
    !matches!(
        body["status"].as_str(),
        Some("QUEUED" | "IN_PROGRESS") | None
    )
}

/// Submits `body` to `POST {base}{path}`; returns the request id.
pub async fn submit(base: &str, path: &str, body: Value) -> String {
    let response = super::client()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{path}");
    let body: Value = response.json().await.unwrap();
    body["request_id"].as_str().unwrap().to_owned()
}
