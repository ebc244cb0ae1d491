//! What the queue keeps about one request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Millis, QueueError};

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

/// The columns both stores keep a [`Record`] in, in [`RawRecord`]'s order.
pub(crate) const COLUMNS: &str = "id, protocol, target, deployment_id, input, webhook, events, \
    priority, created_ms, expires_ms, max_attempts, initial_delay_ms, max_delay_ms, attempts, \
    status, started_ms, finished_ms, output, errors, logs, webhook_status, webhook_attempts, \
    webhook_error";

/// A row as stored, before its JSON columns are parsed.
pub(crate) struct RawRecord {
    pub(crate) id: String,
    pub(crate) protocol: String,
    pub(crate) target: String,
    pub(crate) deployment_id: Option<String>,
    pub(crate) input: String,
    pub(crate) webhook: Option<String>,
    pub(crate) events: u8,
    pub(crate) priority: u8,
    pub(crate) created_ms: Millis,
    pub(crate) expires_ms: Millis,
    pub(crate) retry: (u32, u64, u64),
    pub(crate) attempts: u32,
    pub(crate) status: String,
    pub(crate) started_ms: Option<Millis>,
    pub(crate) finished_ms: Option<Millis>,
    pub(crate) output: Option<String>,
    pub(crate) errors: String,
    pub(crate) logs: String,
    pub(crate) webhook_status: String,
    pub(crate) webhook_attempts: u32,
    pub(crate) webhook_error: Option<String>,
}

impl RawRecord {
    pub(crate) fn parse(self) -> Result<Record, QueueError> {
        let bad =
            |what: &str, value: &str| QueueError::Storage(format!("unknown {what} `{value}`"));
        Ok(Record {
            protocol: Protocol::parse(&self.protocol)
                .ok_or_else(|| bad("protocol", &self.protocol))?,
            status: Status::parse(&self.status).ok_or_else(|| bad("status", &self.status))?,
            webhook_status: WebhookStatus::parse(&self.webhook_status)
                .ok_or_else(|| bad("webhook status", &self.webhook_status))?,
            input: serde_json::from_str(&self.input)?,
            output: self
                .output
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            errors: serde_json::from_str(&self.errors)?,
            logs: serde_json::from_str(&self.logs)?,
            retry: RetryConfig {
                max_attempts: self.retry.0,
                initial_delay_ms: self.retry.1,
                max_delay_ms: self.retry.2,
            },
            id: self.id,
            target: self.target,
            deployment_id: self.deployment_id,
            webhook: self.webhook,
            events: self.events,
            priority: self.priority,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            attempts: self.attempts,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            webhook_attempts: self.webhook_attempts,
            webhook_error: self.webhook_error,
        })
    }
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
