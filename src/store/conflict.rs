//! The one conflict classifier of both backends. A write that fails because another writer
//! got there first — a unique key already taken, or PostgreSQL aborting one of two
//! transactions (deadlock, serialisation failure) — is a [`StoreError::Conflict`], which
//! callers answer by reloading and retrying; anything else is a database error.
//!
//! Writes keep the driver's error, with its code, until they return ([`Fail`], [`written`]),
//! so that it is classified once, here.

use super::StoreError;
use crate::store::Result;
use std::future::Future;

/// A failure inside a write: the driver's error, still carrying its code so that conflicts
/// can be told apart, or the store's own verdict.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fail {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Store(e) => e,
            Fail::Sql(e) => classify(e),
        }
    }
}

/// Run a write whose failures are [`Fail`]s and classify what it returns.
pub(crate) async fn written<T>(write: impl Future<Output = Result<T, Fail>>) -> Result<T> {
    Ok(write.await?)
}

/// A guarded write (`… WHERE version = expected`, `… AND status = 'available'`) that
/// changed no row: another writer moved the row on since it was read.
pub(crate) fn guarded(rows_affected: u64, what: impl FnOnce() -> String) -> Result<()> {
    match rows_affected {
        1 => Ok(()),
        _ => Err(StoreError::Conflict(what())),
    }
}

/// A conflict named after what the error says: the table (or, for a refund, the partial
/// index) and, where the server tells it (PostgreSQL), the key's value.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match conflict(&e) {
        Some(Conflict::Unique) => StoreError::Conflict(unique_name(&e)),
        Some(Conflict::Aborted(message)) => StoreError::Conflict(message),
        None => e.into(),
    }
}

/// A conflict named by the caller, who knows better than the error what was taken.
pub(crate) fn conflict_as(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match conflict(&e) {
        Some(_) => StoreError::Conflict(what.into()),
        None => e.into(),
    }
}

enum Conflict {
    Unique,
    /// The server's message (deadlock or serialisation failure), redacted.
    Aborted(String),
}

fn conflict(e: &sqlx::Error) -> Option<Conflict> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if db.is_unique_violation() {
        return Some(Conflict::Unique);
    }
    match db.code().as_deref() {
        Some("40P01") | Some("40001") => Some(Conflict::Aborted(crate::redact(db.message()))),
        _ => None,
    }
}

fn unique_name(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = e else {
        return String::new();
    };
    // SQLite names no table, only its message does: `UNIQUE constraint failed: T.col`.
    let table = db.table().or_else(|| {
        db.message()
            .split_once("constraint failed: ")
            .and_then(|(_, cols)| cols.split_once('.'))
            .map(|(table, _)| table)
    });
    let what = match (table, db.constraint()) {
        (_, Some("balance_ledger_one_refund")) => "refund of account",
        (Some("documents"), _) => "document",
        (Some("outbox"), _) => "outbox message",
        (Some("scheduled_changes"), _) => "change",
        (Some("pending_items"), _) => "pending item",
        (Some("finance_batches"), _) => "finance batch of run",
        (Some(t), _) => t,
        (None, _) => "a unique key",
    };
    match key_value(e) {
        Some(value) => format!("{what} {value}"),
        None => what.to_string(),
    }
}

/// The value in a PostgreSQL unique violation's detail, `Key (doc_key)=(renewal/s1/2026-01-01)
/// already exists.`.
fn key_value(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.detail())
        .and_then(|detail| detail.split_once("=("))
        .and_then(|(_, rest)| rest.rsplit_once(") already exists"))
        .map(|(v, _)| v.to_string())
}
