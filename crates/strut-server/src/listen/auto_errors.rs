//! hyper answers some requests itself, before any service runs: a head it
//! cannot parse (400: a bad `Content-Length`, obs-fold, control bytes), one
//! over the head limit (431), a URI too long (414). It writes those with an
//! empty body, where every other strut error carries `{"error", "code"}`
//! and clients log that body. So the connection's writer recognises hyper's
//! automatic answer and sends the same status with the JSON body instead.
//!
//! It is recognised by its shape: one of those statuses, `content-length:
//! 0`, and nothing else but `date` and `connection`. strut's own replies
//! always name a content type, so none of them matches.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose writes pass through, except hyper's automatic error
/// answers, which are replaced whole.
pub struct JsonAutoErrors<S> {
    inner: S,
    /// A replacement still being written, and how much of it is out.
    pending: Option<(Bytes, usize)>,
}

impl<S> JsonAutoErrors<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonAutoErrors<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written when it is an automatic answer: its
    /// replacement goes out now or on the flush hyper calls next.
    fn replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let replacement = replacement(buf)?;
        self.pending = Some((replacement, 0));
        Some(match self.drain(cx) {
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonAutoErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonAutoErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(done) = self.replace(cx, buf) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        // hyper queues a head as one slice; an automatic answer has no body.
        if let Some(first) = bufs.iter().find(|buf| !buf.is_empty())
            && let Some(done) = self.replace(cx, first)
        {
            return done;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON answer for `head` when it is one of hyper's automatic ones.
fn replacement(head: &[u8]) -> Option<Bytes> {
    if !head.starts_with(b"HTTP/1.") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(&head[..head.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    let (error, code) = match status {
        400 => ("the request is not valid HTTP/1.1", "bad_request"),
        414 => ("the request URI is too long", "uri_too_long"),
        431 => (
            "the request head is over the server's limit",
            "headers_too_large",
        ),
        _ => return None,
    };
    let mut empty = false;
    let mut date = "";
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value == "0" => empty = true,
            "date" => date = value,
            "connection" => {}
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::json!({ "error": error, "code": code }).to_string();
    let date = if date.is_empty() {
        String::new()
    } else {
        format!("date: {date}\r\n")
    };
    Some(Bytes::from(format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{date}\r\n{body}",
        body.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn only_hypers_own_empty_answers_are_replaced() {
        let auto = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 07:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(auto).unwrap().to_vec()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(
            out.contains("date: Sun, 06 Dec 2026 07:00:00 GMT\r\n"),
            "{out}"
        );
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "bad_request");
        assert!(
            replacement(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
            )
            .is_some()
        );

        // strut's own answers, a body after the head, other statuses: untouched.
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\n",
            b"\x00\x00\x12\x04",
        ] {
            assert!(replacement(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }
}
