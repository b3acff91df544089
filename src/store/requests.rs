//! What callers hand the store to say which work and on whose behalf: a close's chunk and
//! its pages of due accounts, claims on accounts and outbox messages, how a run ended, the
//! context of a change or of a document an operator asks for, an account's deletion, a run's
//! finance batch, and how a backend overlaps a close's chunks.

use super::{ModuleMap, Numbering, RunId};
use crate::core::domain::AccountId;
use chrono::{DateTime, NaiveDate, Utc};

/// Who gets what when a chunk is committed.
#[derive(Debug, Clone)]
pub struct ChunkContext<'a> {
    pub run: RunId,
    pub numbering: &'a Numbering,
    pub now: DateTime<Utc>,
    /// When the run's customer emails may go: `now`, or the end of its review window.
    pub mail_at: DateTime<Utc>,
    /// Days after an account is canceled before its data may be deleted.
    pub retention_days: u32,
}

/// The next stretch of the accounts a close walks: up to `limit` ids of accounts with a
/// subscription due at `as_of`, in id order, after `after` (keyset pagination, so a run
/// walks each account once).
#[derive(Debug, Clone, Copy)]
pub struct DuePage<'a> {
    pub as_of: NaiveDate,
    /// Where the last page ended: the search starts there, so each page reads only the next
    /// stretch of the id index instead of sorting every due account again (None starts from
    /// the beginning).
    pub after: Option<&'a AccountId>,
    pub limit: u32,
}

impl DuePage<'_> {
    /// `after` as the backends bind it: the empty string sorts before every account id.
    pub(crate) fn after_key(&self) -> &str {
        self.after.map_or("", |a| a.as_str())
    }
}

/// How a run ended: when, how many documents it issued, and the error that failed it.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub at: DateTime<Utc>,
    pub documents: u64,
    pub error: Option<&'a str>,
}

/// What a worker asks for when it claims accounts to close ([`RunStore::claim_accounts`]):
/// a page of due accounts, those of it nobody else holds. A claim after the last one a worker
/// made picks up where that ended; one from the beginning picks up what others left or
/// dropped.
#[derive(Debug, Clone, Copy)]
pub struct AccountClaim<'a> {
    pub due: DuePage<'a>,
    pub worker: &'a str,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
}

/// What a sender asks for when it claims outbox messages ([`OutboxStore::claim_outbox`]).
#[derive(Debug, Clone, Copy)]
pub struct OutboxClaim<'a> {
    pub worker: &'a str,
    /// The last id this pass claimed (0 to start a pass).
    pub after: i64,
    /// Messages whose next attempt is at or before this; it may reach past `now` (`send
    /// --retry-now`) for messages that failed before.
    pub due_before: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub limit: u32,
}

/// What a change or a licence operation is written for: its account, the numbering of the
/// documents it issues outside a close run, and when (a close's chunk has [`ChunkContext`]).
#[derive(Debug, Clone, Copy)]
pub struct ChangeContext<'a> {
    pub account: &'a AccountId,
    pub numbering: &'a Numbering,
    pub now: DateTime<Utc>,
}

/// What a document an operator asked for is issued with (`ChangeStore::issue_requested`):
/// the numbering it takes, who asked (named in its audit row), and when.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub numbering: &'a Numbering,
    pub actor: &'a str,
    pub now: DateTime<Utc>,
}

/// How a close overlaps chunks: while one chunk's transaction is written, the next is read
/// on another connection (its accounts are claimed, so the two never touch the same rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipelining {
    /// Claim the next chunk first, then read it while this one is written: SQLite, whose one
    /// writer at a time would make a claim wait for the chunk's commit, while WAL readers go
    /// on beside the writer.
    ReadNext,
    /// Claim and read the next chunk while this one is written: a server that runs both
    /// transactions at once.
    ClaimAndReadNext,
}

/// An account whose data is to be deleted ([`DeletionStore::delete_account`]), the day it is
/// judged at, the module tables its service data lives in, and who asks.
#[derive(Debug, Clone, Copy)]
pub struct DeletionRequest<'a> {
    pub account: &'a AccountId,
    pub as_of: NaiveDate,
    pub modules: &'a ModuleMap,
    pub actor: &'a str,
    pub now: DateTime<Utc>,
}

/// A run's finance batch to seal ([`FinanceStore::create_finance_batch`]): whose, the day it
/// closes, and who receives it.
#[derive(Debug, Clone, Copy)]
pub struct BatchRequest<'a> {
    pub run: RunId,
    pub as_of: NaiveDate,
    pub recipient: &'a str,
    pub now: DateTime<Utc>,
}
