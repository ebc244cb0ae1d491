//! The accept loop: HTTP/1 and HTTP/2 over hyper, with the connection
//! limits `axum::serve` has no knob for. A client that sends half its
//! headers, or stops sending a body it announced, or leaves a keep-alive
//! connection idle, does not hold a connection (and its memory) forever:
//! each is closed after its timeout, so a slowloris run of idle connections
//! costs sockets, not service.
//!
//! - headers: hyper's `header_read_timeout`, which also bounds how long an
//!   idle keep-alive connection waits for its next request (hyper arms it
//!   when it starts waiting for a request head);
//! - head size: hyper's read buffer (`max_buf_size`), past which it answers
//!   431 itself;
//! - bodies: [`IdleBody`], which fails a body whose next bytes do not come
//!   within the idle timeout; `codec::read_body` answers that with 408;
//! - hyper's own error answers (unparseable head, 431) get strut's JSON
//!   error body ([`auto_errors`]).

mod auto_errors;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection-level limits (see `Settings` for the flags).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_header_bytes: usize,
}

/// The error an [`IdleBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes for {0:?}")]
pub struct BodyIdle(pub Duration);

/// Accepts until `stop` fires, then lets every open connection finish its
/// in-flight requests (graceful shutdown) and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    // Connections hold `closed_rx` clones; `closed_tx.closed()` resolves
    // when the last is dropped.
    let (closed_tx, closed_rx) = watch::channel(());
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, as
                    // axum::serve does, rather than spin.
                    tracing::warn!("accepting a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |req: Request<Incoming>| {
            req.map(|body| Body::new(IdleBody::new(body, limits.body_idle_timeout)))
        });
        let stop = stop.clone();
        let closed_rx = closed_rx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.header_read_timeout);
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(auto_errors::JsonAutoErrors::new(stream)),
                TowerToHyperService::new(service),
            );
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::trace!("connection ended: {err:#}");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(closed_rx);
        });
    }
    drop(listener);
    drop(closed_rx);
    closed_tx.closed().await;
}

/// A request body whose next frame must come within `idle` of the last
/// one (or of the handler's first read: a request that waited for a model
/// slot before reading its body is not penalised for that wait).
pub struct IdleBody {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(BodyIdle(idle).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
