//! What the queue keeps about one request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Expired,
    Canceled,
    /// Succeeded, but its webhook could not be delivered (Baseten's meaning).
    WebhookFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::InProgress => "IN_PROGRESS",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Expired => "EXPIRED",
            Status::Canceled => "CANCELED",
            Status::WebhookFailed => "WEBHOOK_FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "QUEUED" => Status::Queued,
            "IN_PROGRESS" => Status::InProgress,
            "SUCCEEDED" => Status::Succeeded,
            "FAILED" => Status::Failed,
            "EXPIRED" => Status::Expired,
            "CANCELED" => Status::Canceled,
            "WEBHOOK_FAILED" => Status::WebhookFailed,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Queued | Status::InProgress)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WebhookStatus {
    Pending,
    Succeeded,
    Failed,
    Canceled,
    NoWebhookProvided,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Pending => "PENDING",
            WebhookStatus::Succeeded => "SUCCEEDED",
            WebhookStatus::Failed => "FAILED",
            WebhookStatus::Canceled => "CANCELED",
            WebhookStatus::NoWebhookProvided => "NO_WEBHOOK_PROVIDED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => WebhookStatus::Pending,
            "SUCCEEDED" => WebhookStatus::Succeeded,
            "FAILED" => WebhookStatus::Failed,
            "CANCELED" => WebhookStatus::Canceled,
            "NO_WEBHOOK_PROVIDED" => WebhookStatus::NoWebhookProvided,
            _ => return None,
        })
    }
}

/// Which API submitted the request: it decides the shape of its webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Baseten,
    Cog,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Baseten => "baseten",
            Protocol::Cog => "cog",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "baseten" => Some(Protocol::Baseten),
            "cog" => Some(Protocol::Cog),
            _ => None,
        }
    }
}

/// Baseten's `inference_retry_config`: attempts and exponential backoff (x2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay_ms: 1000,
            max_delay_ms: 5000,
        }
    }
}

impl RetryConfig {
    /// The wait before attempt `attempt + 1`, after `attempt` failed ones.
    pub fn delay_after(&self, attempt: u32) -> u64 {
        let factor = 1u64 << attempt.saturating_sub(1).min(20);
        self.initial_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    pub code: String,
    pub message: String,
}

impl ErrorEntry {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// One line a model wrote through its request logger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub time_ms: Millis,
    pub level: String,
    pub message: String,
}

/// A request as submitted.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub protocol: Protocol,
    /// Where it runs: `env:<name>` or `deployment:<id>`, resolved when it starts.
    pub target: String,
    pub input: Value,
    pub webhook: Option<String>,
    /// Cog's `webhook_events_filter` as a bit set (the server names the bits).
    pub events: u8,
    /// 0 runs first.
    pub priority: u8,
    pub created_ms: Millis,
    /// A request still queued at this time expires.
    pub expires_ms: Millis,
    pub retry: RetryConfig,
}

/// How a running request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub output: Option<Value>,
    pub errors: Vec<ErrorEntry>,
    pub logs: Vec<LogLine>,
}

/// Everything the store knows about a request.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub protocol: Protocol,
    pub target: String,
    /// The deployment of its latest attempt.
    pub deployment_id: Option<String>,
    pub input: Value,
    pub webhook: Option<String>,
    pub events: u8,
    pub priority: u8,
    pub created_ms: Millis,
    pub expires_ms: Millis,
    pub retry: RetryConfig,
    pub attempts: u32,
    pub status: Status,
    pub started_ms: Option<Millis>,
    pub finished_ms: Option<Millis>,
    pub output: Option<Value>,
    pub errors: Vec<ErrorEntry>,
    pub logs: Vec<LogLine>,
    pub webhook_status: WebhookStatus,
    pub webhook_attempts: u32,
    /// Why the latest delivery attempt failed; `None` once one succeeds.
    pub webhook_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryConfig::default();
        let delays: Vec<u64> = (1..=5).map(|a| retry.delay_after(a)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            Status::Queued,
            Status::InProgress,
            Status::Succeeded,
            Status::Failed,
            Status::Expired,
            Status::Canceled,
            Status::WebhookFailed,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
