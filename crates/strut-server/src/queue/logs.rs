//! Per-request log capture: a [`LogSink`] that writes to the server's log as
//! before and also keeps the request's lines (bounded) for its async status,
//! its Cog response and live SSE log events.

use std::sync::{Arc, Mutex};

use strut_model::{LogLevel, LogSink};
use strut_queue::{LogLine, now_ms};
use tokio::sync::mpsc;

/// Lines kept per request; later ones are counted, not kept.
pub const MAX_LINES: usize = 1000;
/// Bytes of messages kept per request.
pub const MAX_BYTES: usize = 256 * 1024;

#[derive(Default)]
pub struct Capture {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    lines: Vec<LogLine>,
    bytes: usize,
    dropped: usize,
    /// A live listener (a Cog SSE client); lines it cannot take are skipped.
    live: Option<mpsc::Sender<LogLine>>,
}

impl Capture {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn follow(&self, live: mpsc::Sender<LogLine>) {
        self.inner.lock().expect("capture lock").live = Some(live);
    }

    fn push(&self, level: LogLevel, message: &str) {
        let mut kept = self.inner.lock().expect("capture lock");
        let line = LogLine {
            time_ms: now_ms(),
            level: level.as_str().to_owned(),
            message: message.to_owned(),
        };
        if let Some(live) = &kept.live {
            let _ = live.try_send(line.clone());
        }
        if kept.lines.len() >= MAX_LINES || kept.bytes + message.len() > MAX_BYTES {
            kept.dropped += 1;
            return;
        }
        kept.bytes += message.len();
        kept.lines.push(line);
    }

    /// Lines written so far, kept or dropped: a change means new lines.
    pub fn written(&self) -> usize {
        let kept = self.inner.lock().expect("capture lock");
        kept.lines.len() + kept.dropped
    }

    /// The lines kept so far, with a last line saying how many were dropped.
    pub fn lines(&self) -> Vec<LogLine> {
        let kept = self.inner.lock().expect("capture lock");
        let mut lines = kept.lines.clone();
        if kept.dropped > 0 {
            lines.push(LogLine {
                time_ms: now_ms(),
                level: "warn".into(),
                message: format!(
                    "{} more log lines were dropped (at most {MAX_LINES} lines and {MAX_BYTES} \
                     bytes are kept per request)",
                    kept.dropped
                ),
            });
        }
        lines
    }
}

/// Tees a request's lines into its [`Capture`] and the server's own sink.
pub struct CaptureSink {
    pub server: Arc<dyn LogSink>,
    pub capture: Arc<Capture>,
}

impl LogSink for CaptureSink {
    fn write(&self, request_id: &str, level: LogLevel, message: &str) {
        self.server.write(request_id, level, message);
        self.capture.push(level, message);
    }
}

/// Cog's `logs`: one string, a line per message.
pub fn joined(lines: &[LogLine]) -> String {
    lines.iter().map(|l| format!("{}\n", l.message)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;
    impl LogSink for Nowhere {
        fn write(&self, _: &str, _: LogLevel, _: &str) {}
    }

    #[test]
    fn keeps_a_bounded_number_of_lines_and_says_how_many_it_dropped() {
        let capture = Capture::new();
        let sink = CaptureSink {
            server: Arc::new(Nowhere),
            capture: capture.clone(),
        };
        for i in 0..MAX_LINES + 5 {
            sink.write("r", LogLevel::Info, &format!("step {i}"));
        }
        let lines = capture.lines();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert_eq!(lines[0].message, "step 0");
        assert!(lines[MAX_LINES].message.starts_with("5 more log lines"));
    }
}
