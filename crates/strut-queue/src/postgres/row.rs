//! A PostgreSQL row as a [`RawRecord`].

use tokio_postgres::Row;

pub(super) use crate::record::{COLUMNS, RawRecord};
use crate::{QueueError, Record};

/// Columns are wider in PostgreSQL (no unsigned types); values were written
/// from the narrower Rust types, so a value that does not fit is corruption.
fn narrow<T: TryFrom<i64>>(value: i64, column: &str) -> Result<T, QueueError> {
    T::try_from(value)
        .map_err(|_| QueueError::Storage(format!("stored {column} {value} is out of range")))
}

pub(super) fn record(row: &Row) -> Result<Record, QueueError> {
    let small = |i: usize| -> Result<i64, QueueError> { Ok(row.try_get::<_, i16>(i)?.into()) };
    let int = |i: usize| -> Result<i64, QueueError> { Ok(row.try_get::<_, i32>(i)?.into()) };
    let big = |i: usize| -> Result<i64, QueueError> { Ok(row.try_get::<_, i64>(i)?) };
    RawRecord {
        id: row.try_get(0)?,
        protocol: row.try_get(1)?,
        target: row.try_get(2)?,
        deployment_id: row.try_get(3)?,
        input: row.try_get(4)?,
        webhook: row.try_get(5)?,
        events: narrow(small(6)?, "events")?,
        priority: narrow(small(7)?, "priority")?,
        created_ms: big(8)?,
        expires_ms: big(9)?,
        retry: (
            narrow(int(10)?, "max_attempts")?,
            narrow(big(11)?, "initial_delay_ms")?,
            narrow(big(12)?, "max_delay_ms")?,
        ),
        attempts: narrow(int(13)?, "attempts")?,
        status: row.try_get(14)?,
        started_ms: row.try_get(15)?,
        finished_ms: row.try_get(16)?,
        output: row.try_get(17)?,
        errors: row.try_get(18)?,
        logs: row.try_get(19)?,
        webhook_status: row.try_get(20)?,
        webhook_attempts: narrow(int(21)?, "webhook_attempts")?,
        webhook_error: row.try_get(22)?,
    }
    .parse()
}

pub(super) fn records(rows: &[Row]) -> Result<Vec<Record>, QueueError> {
    rows.iter().map(record).collect()
}

/// `SELECT {COLUMNS} FROM the table`, for `get`-like reads.
pub(super) fn select() -> String {
    format!("SELECT {COLUMNS} FROM strut_async_requests")
}
