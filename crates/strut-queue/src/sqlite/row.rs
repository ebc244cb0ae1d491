//! A stored row and its decoding into a [`Record`].

use rusqlite::{Connection, OptionalExtension, Row};

use crate::record::{Protocol, Record, Status, WebhookStatus};
use crate::{Millis, QueueError, RetryConfig};

/// The columns [`record`] reads, in its order.
pub(super) const COLUMNS: &str = "id, protocol, target, deployment_id, input, webhook, events, \
    priority, created_ms, expires_ms, max_attempts, initial_delay_ms, max_delay_ms, attempts, \
    status, started_ms, finished_ms, output, errors, logs, webhook_status, webhook_attempts, \
    webhook_error";

pub(super) fn record(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(0)?,
        protocol: row.get(1)?,
        target: row.get(2)?,
        deployment_id: row.get(3)?,
        input: row.get(4)?,
        webhook: row.get(5)?,
        events: row.get(6)?,
        priority: row.get(7)?,
        created_ms: row.get(8)?,
        expires_ms: row.get(9)?,
        retry: (row.get(10)?, row.get(11)?, row.get(12)?),
        attempts: row.get(13)?,
        status: row.get(14)?,
        started_ms: row.get(15)?,
        finished_ms: row.get(16)?,
        output: row.get(17)?,
        errors: row.get(18)?,
        logs: row.get(19)?,
        webhook_status: row.get(20)?,
        webhook_attempts: row.get(21)?,
        webhook_error: row.get(22)?,
    })
}

/// A row as stored, before its JSON columns are parsed.
pub(super) struct RawRecord {
    pub(super) id: String,
    protocol: String,
    target: String,
    deployment_id: Option<String>,
    input: String,
    webhook: Option<String>,
    events: u8,
    priority: u8,
    created_ms: Millis,
    expires_ms: Millis,
    retry: (u32, u64, u64),
    attempts: u32,
    status: String,
    started_ms: Option<Millis>,
    finished_ms: Option<Millis>,
    output: Option<String>,
    errors: String,
    logs: String,
    webhook_status: String,
    webhook_attempts: u32,
    webhook_error: Option<String>,
}

impl RawRecord {
    pub(super) fn parse(self) -> Result<Record, QueueError> {
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

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<Record>, QueueError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"))?
        .query_row([id], record)
        .optional()?;
    raw.map(RawRecord::parse).transpose()
}
