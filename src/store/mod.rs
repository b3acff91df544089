//! Storage: the store traits, implemented for SQLite (embedded default) and — in the
//! production mode — PostgreSQL. The close run, the CLI and the simulator only see [`Store`],
//! the sum of one trait per concern ([`RunStore`], [`CloseStore`], [`ChangeStore`], …);
//! `use crate::store::prelude::*` brings them all into scope, as calling their methods on a
//! `dyn Store` needs.
//!
//! Writes that belong together happen in one transaction inside one method: a chunk of
//! closed accounts (documents, lines, numbers, ledger, subscription state, outbox) is
//! committed whole or not at all. Idempotency is enforced by unique keys in the schema
//! (`documents.doc_key`, `outbox.message_key`, `finance_batches.run_id`) and by guarded
//! updates (a subscription `… WHERE version = expected`, a balance `… WHERE balance =
//! before`), not by the caller's good behaviour.
//!
//! The code is laid out by concern, and what is the same on both backends is written once:
//! `rows.rs` reads stored rows into domain types, `conflict.rs` tells a conflict (retry) from
//! any other failure, and `shared/` holds every statement and method body the backends share
//! (SQL with `$N` placeholders, bound through each backend's column encoders). `sqlite/` and
//! `postgres/` hold only what differs: how bulk rows travel, how work is claimed, planner
//! hints, the schema.

pub mod modules;
pub mod postgres;
pub mod sqlite;

mod conflict;
mod requests;
mod rows;
mod shared;

pub use requests::*;

use crate::core::billing::{AccountClose, AccountState};
use crate::core::document::{Document, DocumentKind, DraftDocument, RefundOwed};
use crate::core::domain::{Account, AccountId, SubscriptionId};
use crate::core::sanity::PreviousInvoice;
use crate::input::ImportBatch;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// What the store's methods return: `std`'s `Result` with [`StoreError`] by default.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("{0}")]
    Rejected(String),
    /// Someone else changed the rows this write was computed from; reload and retry.
    #[error("concurrent update of {0}; the chunk was rolled back")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(crate::redact(&e.to_string()))
    }
}

pub type RunId = i64;

/// Numbering settings: `{prefix}-{year}-{n:06}`, gapless per prefix and year.
#[derive(Debug, Clone)]
pub struct Numbering {
    pub invoice_prefix: String,
    pub credit_note_prefix: String,
}

impl Numbering {
    pub fn prefix(&self, kind: DocumentKind) -> &str {
        match kind {
            DocumentKind::Invoice => &self.invoice_prefix,
            DocumentKind::CreditNote => &self.credit_note_prefix,
        }
    }
    pub fn format(prefix: &str, year: i32, n: i64) -> String {
        format!("{prefix}-{year}-{n:06}")
    }
}

/// What a document an operator asked for does to the account (`issue_requested`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A credit note correcting an invoice: its amount to the balance, or a refund owed when
    /// the account has no active subscription left; what it corrects and why recorded.
    Correction,
    /// An invoice of a one-off charge issued now: the balance moves from `before` to `after`
    /// (the credit it used).
    Charge { before: Decimal, after: Decimal },
}

/// A close run as `billrun runs` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub run: RunId,
    pub as_of: NaiveDate,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// running, completed, failed, or abandoned (its worker died; the next run finished
    /// its work). A `running` run whose worker is gone is shown as abandoned.
    pub status: String,
    pub documents: i64,
    pub finance_batch: Option<i64>,
    /// Customer emails of the run's documents sent, and not sent yet.
    pub emails_sent: i64,
    pub emails_waiting: i64,
    /// Of those waiting: held for review or by an operator.
    pub emails_held: i64,
    pub error: Option<String>,
    /// The worker that ran it (`host:pid:start:pidns`), where recorded.
    pub worker: Option<String>,
    /// The run that found this one's worker gone and finished its work.
    pub abandoned_by: Option<RunId>,
}

/// A worker holding live claims.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClaimHolder {
    pub worker: String,
    pub accounts: u64,
    pub messages: u64,
    /// The latest of its leases.
    pub until: DateTime<Utc>,
    /// Its database session is gone (PostgreSQL; see `RunStore::sessions_gone`).
    pub session_gone: bool,
}

impl ClaimHolder {
    /// Certainly gone: its session is, or its process on this host is.
    pub fn is_gone(&self) -> bool {
        crate::worker::is_gone(&self.worker, self.session_gone)
    }
}

/// One row of the audit log: what was done, to which account, by whom, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The OS user who asked, `daemon`, or `billrun` for what a run did on its own.
    pub actor: String,
    pub action: String,
    pub account: Option<String>,
    pub subscription: Option<String>,
    pub details: serde_json::Value,
}

/// A stored document with its row id and the id of the batch that reported it.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    pub id: i64,
    pub document: Document,
    pub finance_batch: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxKind {
    Document(i64),
    FinanceBatch(i64),
}

#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: i64,
    pub key: String,
    pub kind: OutboxKind,
    pub recipient: String,
    pub subject: String,
    pub attempts: i64,
    pub sent: bool,
}

/// Messages not sent and not sendable right now, for honest summaries: those waiting out
/// their backoff after a failure, and those another worker (or a dead one, until its lease
/// ends) has claimed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxWaiting {
    pub in_backoff: u64,
    /// The earliest next attempt among them.
    pub next_attempt: Option<DateTime<Utc>>,
    pub claimed: u64,
    /// When the last of those claims ends, if its worker never finishes.
    pub claimed_until: Option<DateTime<Utc>>,
    /// Customer emails held for review: in a run's review window, or held by an operator
    /// (`billrun hold RUN`) until released. Not a failure.
    pub held: u64,
    /// When the last review window ends (messages held by an operator wait for `release`).
    pub review_until: Option<DateTime<Utc>>,
}

/// Unsent messages held back, by why (`billrun status`, the daemon's `billrun_outbox_held`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxHolds {
    /// Customer emails in their run's review window (`review_hours`): they go when it ends.
    pub review: u64,
    /// Customer emails held by an operator (`billrun hold RUN`) until `billrun release RUN`.
    pub operator: u64,
    /// Messages that will never go: their invoice was voided while they waited (and the
    /// credit note voiding it). Finance has them in its files.
    pub withdrawn: u64,
}

#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub at: NaiveDate,
    pub amount: Decimal,
    pub reason: String,
    pub document: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangeRecord {
    pub subscription: String,
    pub kind: String,
    pub target: crate::core::domain::Target,
    pub requested_at: NaiveDate,
    pub effective_at: NaiveDate,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct BalanceReport {
    pub account: Account,
    pub balance: Decimal,
    pub entries: Vec<LedgerEntry>,
}

/// Per module, the tables (and account-id column) holding its data. Identifiers are
/// validated by the configuration; the store quotes them as well.
pub type ModuleMap = std::collections::BTreeMap<String, Vec<modules::ModuleTable>>;

/// What deleting an account removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Deletion {
    pub account: String,
    pub licence_assignments: u64,
    /// Rows deleted per module table.
    pub module_rows: std::collections::BTreeMap<String, u64>,
}

/// What a finance batch reports besides its documents.
#[derive(Debug, Clone, Default)]
pub struct BatchExtras {
    /// Each refund owed the batch reports.
    pub refunds: Vec<RefundOwed>,
    pub deleted_accounts: Vec<String>,
    /// (account, reason) of each account parked by the run(s) the batch reports. Filled by
    /// [`ParkingStore::batch_parked`].
    pub parked: Vec<(String, String)>,
}

/// A parked account waits for an operator; a released one is closed once by the next close
/// without the plausibility bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkStatus {
    Parked,
    Released,
}

impl ParkStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParkStatus::Parked => "parked",
            ParkStatus::Released => "released",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "parked" => Some(ParkStatus::Parked),
            "released" => Some(ParkStatus::Released),
            _ => None,
        }
    }
}

/// An account a close did not issue anything for because its close failed a sanity bound.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedAccount {
    pub account: AccountId,
    pub reason: String,
    pub status: ParkStatus,
    /// When it was parked (in a dry run: when it would have been).
    pub since: DateTime<Utc>,
    /// The run that parked it; None in a dry run.
    pub run: Option<RunId>,
    pub released_at: Option<DateTime<Utc>>,
}

/// Every concern of the store, for callers that hold one `dyn Store`; each backend is one.
pub trait Store:
    SchemaStore
    + ImportStore
    + RunStore
    + CloseStore
    + ChangeStore
    + DeletionStore
    + FinanceStore
    + OutboxStore
    + QueryStore
    + ParkingStore
{
}

/// The store traits, to call their methods on a `dyn Store`.
pub mod prelude {
    pub use super::{
        ChangeStore, CloseStore, DeletionStore, FinanceStore, ImportStore, OutboxStore,
        ParkingStore, QueryStore, RunStore, SchemaStore, Store,
    };
}

/// The schema and what the configuration expects of it.
#[async_trait]
pub trait SchemaStore: Send + Sync {
    /// Create or upgrade the schema.
    async fn migrate(&self) -> Result<()>;

    /// Check that every configured module table and column exists.
    async fn check_module_tables(&self, modules: &ModuleMap) -> Result<()>;

    /// The latest migration applied (`None` on an empty database) and the latest this build
    /// carries.
    async fn schema_version(&self) -> Result<SchemaVersion>;
}

/// Where a database's schema stands against this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    pub applied: Option<i64>,
    pub expected: i64,
}

impl SchemaVersion {
    /// Refuse to work on a schema this build does not expect, naming the way out. For the
    /// commands that must not migrate (a dry run opens the database read-only).
    pub fn require_current(self) -> Result<()> {
        match self.applied {
            Some(v) if v == self.expected => Ok(()),
            Some(v) if v > self.expected => Err(StoreError::Migrate(format!(
                "the database's schema is at version {v}, newer than this billrun knows ({}); upgrade billrun",
                self.expected
            ))),
            Some(v) => Err(StoreError::Migrate(format!(
                "the database's schema is at version {v}, this billrun needs {}; run `billrun migrate` first",
                self.expected
            ))),
            None => Err(StoreError::Migrate(
                "the database has no billrun schema; run `billrun migrate` (and import) first"
                    .into(),
            )),
        }
    }
}

/// Imports of accounts and subscriptions.
#[async_trait]
pub trait ImportStore: Send + Sync {
    /// Insert a validated import in one transaction; any id already stored rejects it whole.
    async fn import(&self, batch: &ImportBatch, now: DateTime<Utc>) -> Result<()>;
}

/// Runs, and the claims that keep two workers from closing the same account.
#[async_trait]
pub trait RunStore: Send + Sync {
    async fn begin_run(&self, as_of: NaiveDate, now: DateTime<Utc>, worker: &str) -> Result<RunId>;

    /// Runs still marked `running`, but for `except` (the caller's own), with their worker:
    /// (run, worker, whether the worker's database session is gone — see `sessions_gone`).
    async fn running_runs(
        &self,
        except: Option<RunId>,
    ) -> Result<Vec<(RunId, Option<String>, bool)>>;

    /// Record a run whose worker is gone as abandoned (failed, `abandoned_by` the run `by`
    /// that found it and finishes its work); a run that has finished meanwhile is left alone.
    async fn abandon_run(&self, run: RunId, by: RunId, now: DateTime<Utc>) -> Result<()>;

    /// Who holds live claims (accounts or outbox messages) at `now`, by worker.
    async fn claim_holders(&self, now: DateTime<Utc>) -> Result<Vec<ClaimHolder>>;

    /// Take over everything `worker` holds — a worker known to be gone: its account claims
    /// are dropped and its outbox messages unclaimed, so any worker can take them now.
    /// Returns (accounts, messages) released.
    async fn take_over(&self, worker: &str) -> Result<(u64, u64)>;
    /// Every run, newest first, with its finance batch and its customer emails.
    async fn runs(&self, now: DateTime<Utc>) -> Result<Vec<RunRecord>>;
    /// Hold a run's unsent customer emails until `release_run` (SPEC §10); returns how many.
    async fn hold_run(&self, run: RunId, actor: &str, now: DateTime<Utc>) -> Result<u64>;
    /// Let a run's held customer emails go now (held, or in their review window); returns
    /// how many. Those withdrawn by a void stay unsent.
    async fn release_run(&self, run: RunId, actor: &str, now: DateTime<Utc>) -> Result<u64>;
    async fn finish_run(&self, run: RunId, end: &RunEnd<'_>) -> Result<()>;

    /// Claim the accounts of a page of due ones for `worker` until `lease_until` (see
    /// [`AccountClaim`]): accounts nobody holds, or whose claim has expired (a worker that
    /// died). Two workers never hold the same account; `commit_chunk` releases the claims it
    /// wrote.
    async fn claim_accounts(&self, claim: &AccountClaim<'_>) -> Result<Vec<AccountId>>;

    /// Of these workers, those whose database session is certainly gone. On PostgreSQL each
    /// claiming worker holds an advisory lock on a session of its own for its whole life
    /// (recorded in `workers`); a worker without a session there is not reported. SQLite has
    /// no sessions: none.
    async fn sessions_gone(&self, workers: &[String]) -> Result<BTreeSet<String>>;

    /// Drop every claim `worker` still holds (accounts it could not close, at the end of a run).
    async fn release_claims(&self, worker: &str) -> Result<()>;

    /// The ids of a page of due accounts, claimed or not.
    async fn due_accounts(&self, page: &DuePage<'_>) -> Result<Vec<AccountId>>;

    /// How many accounts have a subscription due at `as_of` (for progress reports).
    async fn count_due(&self, as_of: NaiveDate) -> Result<u64>;

    /// How a close overlaps the next chunk with the writing of the current one.
    fn pipelining(&self) -> Pipelining;
}

/// What a close reads and writes per chunk.
#[async_trait]
pub trait CloseStore: Send + Sync {
    /// The state the billing core needs to close these accounts.
    async fn load_accounts(&self, ids: &[AccountId]) -> Result<Vec<AccountState>>;

    /// Write the outcome of closing a chunk of accounts in one transaction: numbered
    /// documents, lines, ledger, subscription state, account balances and one outbox message
    /// per document. Returns the documents as issued.
    async fn commit_chunk(
        &self,
        ctx: &ChunkContext<'_>,
        closes: &[AccountClose],
    ) -> Result<Vec<StoredDocument>>;

    /// Bring the query planner's statistics of the documents and the outbox up to date after
    /// a close wrote many of them, so the delivery that follows is planned on the tables as
    /// they now are. Does nothing where the statements name their own plans (SQLite).
    async fn refresh_statistics(&self) -> Result<()>;
}

/// Plan changes, cancellations and licences.
#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// Write an applied or queued change in one transaction: subscription state (guarded by
    /// the version it was computed from), items, the change record, pending items, documents
    /// and the balance.
    async fn apply_change(
        &self,
        outcome: &crate::core::change::ChangeOutcome,
        ctx: &ChangeContext<'_>,
        modules: &ModuleMap,
    ) -> Result<Vec<StoredDocument>>;

    async fn subscription_account(&self, subscription: &str) -> Result<Option<AccountId>>;
    /// Schedule (or, with `cancel_at = None`, withdraw) a subscription's cancellation.
    async fn set_cancel(
        &self,
        outcome: &crate::core::change::CancelOutcome,
        account: &AccountId,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Issue one document an operator asked for (SPEC §10) in one transaction: its number,
    /// lines and outbox message, its effect on the balance (`Requested`), and an audit row
    /// naming the actor. A second void of one invoice meets the unique document key.
    async fn issue_requested(
        &self,
        doc: &DraftDocument,
        effect: Requested,
        ctx: &RequestContext<'_>,
    ) -> Result<StoredDocument>;

    /// Queue a one-off charge for `subscription`'s next invoice (a pending item of kind
    /// `one_off`, not discountable), with an audit row naming `actor`. `key` is unique.
    #[allow(clippy::too_many_arguments)]
    async fn add_charge(
        &self,
        account: &AccountId,
        subscription: &str,
        description: &str,
        amount: Decimal,
        key: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Licences of a subscription, removed ones included.
    async fn licences(&self, subscription: &str) -> Result<Vec<crate::core::licence::Licence>>;

    /// Write a licence operation in one transaction (rows, items, documents, balance).
    async fn apply_licence_op(
        &self,
        outcome: &crate::core::licence::LicenceOutcome,
        ctx: &ChangeContext<'_>,
    ) -> Result<Vec<StoredDocument>>;

    /// (assigned, available) licences of a subscription.
    async fn licence_counts(&self, subscription: &str) -> Result<(u32, u32)>;

    /// Every change requested, applied or queued, in order.
    async fn changes(&self) -> Result<Vec<ChangeRecord>>;
}

/// Deleting the data of canceled accounts past their retention.
#[async_trait]
pub trait DeletionStore: Send + Sync {
    /// Canceled accounts whose retention has passed at `as_of`.
    async fn deletable_accounts(&self, as_of: NaiveDate) -> Result<Vec<AccountId>>;

    /// Delete an account's personal and service data, keep its documents, audit it. Refuses
    /// (Rejected) anything not canceled and past its date — checked again inside the
    /// transaction, whatever the caller believed.
    async fn delete_account(&self, request: &DeletionRequest<'_>) -> Result<Deletion>;

    /// Ids of deleted accounts.
    async fn deleted_accounts(&self) -> Result<Vec<String>>;
}

/// Finance batches: what is reported to finance, once.
#[async_trait]
pub trait FinanceStore: Send + Sync {
    /// Put every document not yet reported to finance into a batch for `run`, and queue its
    /// message. None when there is nothing to report.
    async fn create_finance_batch(&self, request: &BatchRequest<'_>) -> Result<Option<i64>>;

    /// Refunds and deletions a batch reports.
    async fn batch_extras(&self, batch: i64) -> Result<BatchExtras>;
}

/// The outbox: one message per document and per sealed finance batch.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Outbox messages not yet sent whose next attempt is due.
    async fn due_outbox(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<OutboxEntry>>;
    /// Claim up to `limit` unsent messages with ids above `after`, in id order, whose next
    /// attempt is at or before `due_before`, for `worker` until `lease_until`, skipping
    /// messages another worker is sending. Only the claimant sends a message, so two workers
    /// never send it twice. A pass walks the outbox by passing the last id it claimed.
    async fn claim_outbox(&self, claim: &OutboxClaim<'_>) -> Result<Vec<OutboxEntry>>;
    /// Extend `worker`'s claim on these messages to `lease_until`, for those it still holds
    /// (claimed by it, not sent): their ids, which are the ones it may send now. Delivery
    /// renews a slice of a batch just before rendering it, so a message waiting in the
    /// pipeline past its lease is sent only if nobody else took it meanwhile.
    async fn renew_outbox_claims(
        &self,
        worker: &str,
        ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<i64>>;
    /// Every outbox message, in the order queued.
    async fn outbox(&self) -> Result<Vec<OutboxEntry>>;
    /// Mark these messages sent (the transport accepted each): one statement for the lot.
    async fn mark_sent(&self, ids: &[i64], now: DateTime<Utc>) -> Result<()>;

    /// Unsent messages that a send at `now` cannot take: in backoff, or claimed.
    async fn outbox_waiting(&self, now: DateTime<Utc>) -> Result<OutboxWaiting>;

    /// Messages not yet sent (for the outbox-depth metric).
    async fn outbox_depth(&self) -> Result<u64>;
    async fn mark_failed(&self, id: i64, error: &str, next_attempt: DateTime<Utc>) -> Result<()>;
}

/// Documents, balances and accounts as stored, for the CLI, delivery and the reports.
#[async_trait]
pub trait QueryStore: Send + Sync {
    /// Accounts with these ids that exist.
    async fn accounts(&self, ids: &[String]) -> Result<Vec<Account>>;

    async fn document(&self, number: &str) -> Result<Option<StoredDocument>>;
    async fn document_by_id(&self, id: i64) -> Result<Option<StoredDocument>>;
    /// The documents with these ids that exist, in id order: two queries for the lot
    /// (delivery reads a claimed batch's documents with it).
    async fn documents_by_ids(&self, ids: &[i64]) -> Result<Vec<StoredDocument>>;
    /// Available (unassigned) licences per subscription, for those of these subscriptions
    /// that have any. One query.
    async fn available_licences(&self, subscriptions: &[&str]) -> Result<BTreeMap<String, u32>>;
    /// Documents in issue order, optionally of one account.
    async fn documents(&self, account: Option<&str>) -> Result<Vec<StoredDocument>>;
    /// Up to `limit` documents of finance batch `batch` with ids above `after`, in id order
    /// (delivery pages through a batch's documents).
    async fn batch_documents(
        &self,
        batch: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredDocument>>;
    /// The audit log, oldest first, optionally of one account.
    async fn audit_log(&self, account: Option<&str>) -> Result<Vec<AuditEntry>>;
    /// The credit notes that correct invoice `number`, in issue order.
    async fn credit_notes_against(&self, number: &str) -> Result<Vec<StoredDocument>>;
    /// Up to `limit` documents issued on these days with ids above `after`, in id order
    /// (`billrun export` pages through them).
    async fn documents_issued(
        &self,
        days: Range<NaiveDate>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredDocument>>;
    /// How many documents were issued on these days.
    async fn count_issued(&self, days: Range<NaiveDate>) -> Result<u64>;
    /// Refunds owed that were recorded on these days (`billrun export`).
    async fn refunds_recorded(&self, days: Range<NaiveDate>) -> Result<Vec<RefundOwed>>;
    /// Up to `limit` documents with ids above `after`, in id order (to walk every document
    /// with bounded memory).
    async fn documents_page(&self, after: i64, limit: u32) -> Result<Vec<StoredDocument>>;

    async fn balance(&self, account: &str) -> Result<Option<BalanceReport>>;
    /// Balances of every account, by id.
    async fn balances(&self) -> Result<Vec<(AccountId, Decimal)>>;

    /// Unsent messages held back at `now`: in a review window, held by an operator, withdrawn.
    async fn outbox_holds(&self, now: DateTime<Utc>) -> Result<OutboxHolds>;
    /// How many accounts each run from `first` on parked (its `parked_events`, released or
    /// not since), by run; runs that parked none are absent.
    async fn parks_per_run(&self, first: RunId) -> Result<BTreeMap<RunId, u64>>;
}

/// Parked accounts (sanity bounds, src/core/sanity.rs).
#[async_trait]
pub trait ParkingStore: Send + Sync {
    /// The latest period invoice (an invoice with a period: a renewal) issued to each of
    /// these subscriptions that has one. One query for the lot.
    async fn previous_invoice_totals(
        &self,
        subscriptions: &[&str],
    ) -> Result<BTreeMap<SubscriptionId, PreviousInvoice>>;

    /// The parked or released rows of these accounts (accounts with neither are absent).
    /// One query.
    async fn park_status(
        &self,
        accounts: &[AccountId],
    ) -> Result<BTreeMap<AccountId, ParkedAccount>>;

    /// Park accounts for `run` with their reasons, in one transaction: each row upserted as
    /// parked, one `parked_events` row each (what the finance batch reports) and one audit
    /// row each.
    async fn park_accounts(
        &self,
        run: RunId,
        parked: &[(AccountId, String)],
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// These released accounts were just closed by a chunk that committed: their release is
    /// used up, so their rows go (audited). Rows parked again meanwhile stay.
    async fn consume_releases(&self, accounts: &[AccountId], now: DateTime<Utc>) -> Result<()>;

    /// Every parked or released account, by id.
    async fn parked(&self) -> Result<Vec<ParkedAccount>>;

    /// Release a parked account (audited): the next close bills it once without the
    /// plausibility bounds. An unknown account, or one that is not parked, is `Rejected` and
    /// nothing is written. Returns the row as released.
    async fn unpark(&self, account: &str, actor: &str, now: DateTime<Utc>)
    -> Result<ParkedAccount>;

    /// (account, reason) of each parking a finance batch reports, by account.
    async fn batch_parked(&self, batch: i64) -> Result<Vec<(String, String)>>;
}

/// Whether a store may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// The database refuses every write (SQLite opened read-only, PostgreSQL sessions with
    /// `default_transaction_read_only`): for a dry run, whose promise is to change nothing,
    /// down to the SQLite file's bytes (a read-write SQLite connection checkpoints its WAL
    /// into the file when it closes).
    ReadOnly,
}

/// Open the store a database URL names.
pub async fn open(url: &str) -> Result<Box<dyn Store>> {
    open_with(url, Access::ReadWrite).await
}

/// Open the store a database URL names, read-only: no migration, no write of any kind.
pub async fn open_read_only(url: &str) -> Result<Box<dyn Store>> {
    open_with(url, Access::ReadOnly).await
}

async fn open_with(url: &str, access: Access) -> Result<Box<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Box::new(sqlite::SqliteStore::open_with(url, access).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(postgres::PgStore::open_with(url, access).await?))
    } else {
        Err(StoreError::Connect(format!(
            "database URL {:?} must start with sqlite:// or postgres://",
            crate::display_url(url)
        )))
    }
}
