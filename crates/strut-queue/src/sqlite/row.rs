//! A SQLite row as a [`RawRecord`].

use rusqlite::{Connection, OptionalExtension, Row};

pub(super) use crate::record::{COLUMNS, RawRecord};
use crate::{QueueError, Record};

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

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<Record>, QueueError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"))?
        .query_row([id], record)
        .optional()?;
    raw.map(RawRecord::parse).transpose()
}
