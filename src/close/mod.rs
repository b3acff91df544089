//! `close(as_of)`: the period-close run. The daemon, the CLI and the simulator all call this
//! one function.
//!
//! It walks the accounts with something due in chunks (keyset pagination by account id), lets
//! the pure core compute each account's documents, and commits each chunk in one transaction.
//! A crash loses at most the chunk in flight, which rolled back; the next run finds those
//! subscriptions still due and issues their documents then — never twice, because the schema
//! refuses a second document with the same key and a subscription update from a stale state.
//! At the end, every document not yet reported goes into one finance batch, and the outbox is
//! sent if a transport is given.

use crate::clock::Clock;
use crate::context::Billing;
pub use crate::context::CloseSettings;
use crate::core::billing;
use crate::core::catalog::Catalog;
use crate::core::document::{DocumentKind, DraftDocument, REFUND_ON_CANCEL, RefundOwed};
use crate::core::domain::AccountId;
use crate::core::money::Total;
use crate::panics::catch_panic;
use parks::{ChunkParks, sanity_check};

mod parks;
use crate::store::prelude::*;
use crate::store::{
    AccountClaim, BatchRequest, ChunkContext, DeletionRequest, DuePage, OutboxWaiting, ParkStatus,
    ParkedAccount, Pipelining, RunEnd, StoreError, StoredDocument,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// A run that issues at least this many documents refreshes the store's statistics before
/// delivery ([`CloseStore::refresh_statistics`]); autovacuum keeps up with smaller ones.
const REFRESH_STATISTICS_AFTER: u64 = 1_000;

#[derive(Debug, Clone, Default)]
pub struct CloseOptions {
    /// Keep every document in the report (for `--json` and the simulator); off for big runs.
    pub keep_documents: bool,
    /// Set to true to stop: the run finishes the chunk in flight and returns (the daemon's
    /// graceful shutdown). What it did not reach stays due for the next run.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Close as of this instant instead of one date: each account at its own local date
    /// (boundaries are 00:00 in the account's timezone). The daemon sets it; `--as-of DATE`
    /// means that date everywhere.
    pub instant: Option<DateTime<Utc>>,
    /// Told how many accounts are due and each chunk done (a terminal's bar, the daemon's log).
    pub progress: Option<crate::progress::Watcher>,
    /// Test hook: fail the run after this many chunks have been committed, as a crash would.
    #[doc(hidden)]
    pub fail_after_chunks: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportedDocument {
    /// None in a dry run: numbers are given only when a document is really issued.
    pub number: Option<String>,
    #[serde(flatten)]
    pub document: DraftDocument,
}

/// A run's totals in one currency: kept as [`Total`]s, so a run of any size sums without
/// overflowing.
#[derive(Debug, Clone, Serialize)]
pub struct CurrencySummary {
    pub invoices: u64,
    pub credit_notes: u64,
    pub invoiced: Total,
    pub credited: Total,
    pub amount_due: Total,
}

#[derive(Debug, Clone, Serialize)]
pub struct CloseReport {
    pub as_of: NaiveDate,
    pub dry_run: bool,
    pub run: Option<i64>,
    pub invoices: u64,
    pub credit_notes: u64,
    pub per_currency: BTreeMap<String, CurrencySummary>,
    /// Accounts that could not be closed, and why; every other account went on.
    pub failed: Vec<FailedAccount>,
    pub finance_batch: Option<i64>,
    pub emails_sent: u64,
    pub emails_failed: u64,
    /// Unsent messages this run could not take: in backoff or claimed by another worker.
    pub emails_waiting: OutboxWaiting,
    pub documents: Vec<ReportedDocument>,
    /// Accounts whose data this run deleted (a dry run: would delete).
    pub deleted_accounts: Vec<String>,
    /// The run was asked to stop before it finished; what remains is still due.
    pub stopped: bool,
    /// Balances owed back to accounts this run canceled.
    pub refunds: Vec<RefundOwed>,
    /// Accounts this run parked (a dry run: would park) because their close failed a sanity
    /// bound: nothing was issued for them. `billrun unpark` releases one.
    pub parked: Vec<ParkedAccount>,
    /// Accounts parked by an earlier run and not released yet: not closed by this run.
    pub still_parked: Vec<ParkedAccount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedAccount {
    pub account: AccountId,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("injected failure after {0} chunk(s)")]
    Injected(usize),
    #[error("internal error (a bug; please report it): {0}")]
    Panicked(String),
}

impl CloseReport {
    fn record(&mut self, number: Option<String>, doc: &DraftDocument, keep: bool) {
        let cur = doc.currency;
        let s = self
            .per_currency
            .entry(cur.to_string())
            .or_insert_with(|| CurrencySummary {
                invoices: 0,
                credit_notes: 0,
                invoiced: Total::new(cur),
                credited: Total::new(cur),
                amount_due: Total::new(cur),
            });
        match doc.kind {
            DocumentKind::Invoice => {
                self.invoices += 1;
                s.invoices += 1;
                s.invoiced.add(doc.total);
            }
            DocumentKind::CreditNote => {
                self.credit_notes += 1;
                s.credit_notes += 1;
                s.credited.add(-doc.total);
            }
        }
        s.amount_due.add(doc.amount_due);
        if keep {
            self.documents.push(ReportedDocument {
                number,
                document: doc.clone(),
            });
        }
    }
}

impl Billing<'_> {
    /// Close every period due at `as_of`, writing each chunk; then delete what retention
    /// allows, seal the finance batch and send the outbox (when there is a transport).
    pub async fn close(
        &self,
        as_of: NaiveDate,
        options: &CloseOptions,
    ) -> Result<CloseReport, CloseError> {
        run(self, as_of, options, false).await
    }

    /// Compute the same close and write nothing: no numbers, no claims, no mail.
    pub async fn dry_run(
        &self,
        as_of: NaiveDate,
        options: &CloseOptions,
    ) -> Result<CloseReport, CloseError> {
        run(self, as_of, options, true).await
    }
}

async fn run(
    billing: &Billing<'_>,
    as_of: NaiveDate,
    options: &CloseOptions,
    dry_run: bool,
) -> Result<CloseReport, CloseError> {
    let &Billing {
        store,
        catalog,
        settings,
        clock,
        ..
    } = billing;
    let mut report = CloseReport {
        as_of,
        dry_run,
        run: None,
        invoices: 0,
        credit_notes: 0,
        per_currency: BTreeMap::new(),
        failed: Vec::new(),
        finance_batch: None,
        emails_sent: 0,
        emails_failed: 0,
        emails_waiting: OutboxWaiting::default(),
        documents: Vec::new(),
        deleted_accounts: Vec::new(),
        stopped: false,
        refunds: Vec::new(),
        parked: Vec::new(),
        still_parked: Vec::new(),
    };
    if !settings.modules.is_empty() {
        store.check_module_tables(&settings.modules).await?;
    }
    let run = if dry_run {
        None
    } else {
        Some(
            store
                .begin_run(as_of, clock.now(), &settings.worker)
                .await?,
        )
    };
    report.run = run;
    if let Some(run) = run {
        // An earlier run whose worker died is over: this one finishes its work.
        crate::takeover::abandon_gone_runs(store, run, clock.now()).await?;
    }
    tracing::info!(%as_of, dry_run, run, "close started");

    let inputs = ChunkInputs {
        store,
        catalog,
        settings,
        clock,
        as_of,
        options,
        run,
    };
    // A panic is a bug, but it must not leave the run `running` nor take a daemon down with
    // it: the run is recorded as failed with the panic's message, and the caller gets an error.
    let result = match catch_panic(close_chunks(&inputs, &mut report)).await {
        Ok(r) => r,
        Err(panic) => Err(CloseError::Panicked(panic)),
    };
    if run.is_some() {
        // Accounts this worker could not close are free for the next run at once.
        if let Err(e) = store.release_claims(&settings.worker).await {
            tracing::error!(error = %e, "could not release this worker's claims; they expire with their lease");
        }
    }
    let issued = report.invoices + report.credit_notes;
    if let Some(run) = run {
        let error = result.as_ref().err().map(|e| e.to_string());
        // A connection cut at this moment would leave the run `running` for ever: try a few
        // times over about ten seconds (the pool reconnects), then log and go on.
        let mut wait = std::time::Duration::from_millis(200);
        for attempt in 1..=5 {
            match store
                .finish_run(
                    run,
                    &RunEnd {
                        at: clock.now(),
                        documents: issued,
                        error: error.as_deref(),
                    },
                )
                .await
            {
                Ok(()) => break,
                Err(e) if attempt == 5 => {
                    tracing::error!(run, error = %e, "could not record the end of the run")
                }
                Err(e) => {
                    tracing::warn!(run, attempt, error = %e, "recording the end of the run failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
    let would_delete = result?;
    if run.is_some() && issued >= REFRESH_STATISTICS_AFTER {
        // Not a reason to fail a close whose documents are written: delivery only runs
        // slower on old statistics.
        if let Err(e) = store.refresh_statistics().await {
            tracing::warn!(error = %e, "could not refresh the planner's statistics");
        }
    }

    // Then delete the data of canceled accounts whose retention has passed.
    let mut due = store.deletable_accounts(as_of).await?;
    if let Some(run) = run {
        for account in due {
            match store
                .delete_account(&DeletionRequest {
                    account: &account,
                    as_of,
                    modules: &settings.modules,
                    actor: &settings.actor,
                    now: clock.now(),
                })
                .await
            {
                Ok(d) => {
                    tracing::info!(run, account = %account, "account data deleted");
                    report.deleted_accounts.push(d.account);
                }
                Err(StoreError::Rejected(why)) => {
                    tracing::warn!(account = %account, %why, "account not deleted")
                }
                Err(e) => return Err(e.into()),
            }
        }
    } else {
        due.extend(would_delete);
        due.sort();
        due.dedup();
        report.deleted_accounts = due.into_iter().map(|a| a.to_string()).collect();
    }

    if let Some(run) = run {
        report.finance_batch = store
            .create_finance_batch(&BatchRequest {
                run,
                as_of,
                recipient: &settings.finance_to,
                now: clock.now(),
            })
            .await?;
        if billing.transport.is_some() {
            let delivery = billing.deliver_due().await?;
            report.emails_sent = delivery.sent;
            report.emails_failed = delivery.failed;
            report.emails_waiting = delivery.waiting;
        }
    }
    tracing::info!(
        %as_of,
        invoices = report.invoices,
        credit_notes = report.credit_notes,
        failed_accounts = report.failed.len(),
        parked_accounts = report.parked.len() + report.still_parked.len(),
        "close finished"
    );
    Ok(report)
}

/// One chunk read and billed, not yet written: its claimed accounts, their states, the
/// closes to commit and the accounts that failed or were parked on the way.
struct PreparedChunk {
    ids: Vec<AccountId>,
    states: Vec<billing::AccountState>,
    closes: Vec<billing::AccountClose>,
    failed: Vec<FailedAccount>,
    parks: ChunkParks,
}

/// What every chunk of one close shares.
struct ChunkInputs<'a> {
    store: &'a dyn Store,
    catalog: &'a Catalog,
    settings: &'a CloseSettings,
    clock: &'a dyn Clock,
    as_of: NaiveDate,
    options: &'a CloseOptions,
    run: Option<i64>,
}

impl ChunkInputs<'_> {
    /// Read the accounts and bill them (the pure core), then hold implausible closes back
    /// (sanity bounds). Accounts left due go into `kept_here`. Yields now and then: this
    /// runs while the previous chunk is written, and the write must not wait for a whole
    /// chunk's billing to send its next statement.
    async fn prepare(
        &self,
        ids: Vec<AccountId>,
        kept_here: &mut std::collections::HashSet<AccountId>,
        times: &mut PhaseTimes,
    ) -> Result<PreparedChunk, StoreError> {
        let t = std::time::Instant::now();
        let states = self.store.load_accounts(&ids).await?;
        times.load += t.elapsed();
        let t = std::time::Instant::now();
        let mut closes = Vec::with_capacity(states.len());
        let mut failed = Vec::new();
        let mut overflowed = Vec::new();
        for (i, state) in states.iter().enumerate() {
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
            let account_as_of = match self.options.instant {
                Some(t) => crate::clock::today_at(t, &state.account.timezone),
                None => self.as_of,
            };
            match billing::close_account(state, self.catalog, self.settings.terms, account_as_of) {
                Ok(c) if c.documents.is_empty() && c.updates.is_empty() => {
                    kept_here.insert(state.account.id.clone());
                }
                Ok(c) => closes.push(c),
                // Amounts beyond what can be computed: implausible by any measure, so the
                // account is parked with the reason, like a sanity bound, and the run goes on.
                Err(billing::BillingError::Overflow(e)) => {
                    kept_here.insert(state.account.id.clone());
                    tracing::warn!(account = %state.account.id, error = %e, "account parked");
                    overflowed.push(ParkedAccount {
                        account: state.account.id.clone(),
                        reason: e.to_string(),
                        status: ParkStatus::Parked,
                        since: self.clock.now(),
                        run: self.run,
                        released_at: None,
                    });
                }
                Err(e) => {
                    kept_here.insert(state.account.id.clone());
                    tracing::error!(account = %state.account.id, error = %e, "account not closed");
                    failed.push(FailedAccount {
                        account: state.account.id.clone(),
                        error: e.to_string(),
                    });
                }
            }
        }
        times.compute += t.elapsed();
        // Sanity bounds: implausible closes leave `closes` and are parked (core::sanity).
        let mut parks = sanity_check(
            self.store,
            self.settings,
            self.clock,
            self.run,
            &states,
            &mut closes,
            kept_here,
        )
        .await?;
        if !overflowed.is_empty() {
            // One still parked from an earlier run stays that, not parked anew.
            let ids: Vec<AccountId> = overflowed.iter().map(|p| p.account.clone()).collect();
            let status = self.store.park_status(&ids).await?;
            for p in overflowed {
                match status.get(&p.account) {
                    Some(row) if row.status == ParkStatus::Parked => parks.still.push(row.clone()),
                    _ => parks.new.push(p),
                }
            }
        }
        Ok(PreparedChunk {
            ids,
            states,
            closes,
            failed,
            parks,
        })
    }

    /// The accounts of the next chunk after `after`, when none was prepared ahead. A real run
    /// claims its work, so several workers share it; a dry run only reads.
    async fn next_ids(
        &self,
        query_date: NaiveDate,
        after: Option<&AccountId>,
    ) -> Result<Vec<AccountId>, StoreError> {
        if self.run.is_none() {
            return self.store.due_accounts(&self.page(query_date, after)).await;
        }
        let ids = self.claim(query_date, after).await?;
        if ids.is_empty() && after.is_some() {
            // Past the end: start over for what others dropped or left behind.
            return self.claim(query_date, None).await;
        }
        Ok(ids)
    }

    /// The next chunk's worth of due accounts after `after` (from the start when `None`).
    fn page<'a>(&self, as_of: NaiveDate, after: Option<&'a AccountId>) -> DuePage<'a> {
        DuePage {
            as_of,
            after,
            limit: self.settings.chunk_size,
        }
    }

    /// Claim the next chunk after `after` (from the start when `None`).
    async fn claim(
        &self,
        query_date: NaiveDate,
        after: Option<&AccountId>,
    ) -> Result<Vec<AccountId>, StoreError> {
        let now = self.clock.now();
        self.store
            .claim_accounts(&AccountClaim {
                due: self.page(query_date, after),
                worker: &self.settings.worker,
                now,
                lease_until: now + Duration::seconds(i64::from(self.settings.lease_seconds)),
            })
            .await
    }
}

impl PreparedChunk {
    /// Into the report, once the chunk is written (or, in a dry run, computed): what it
    /// issued, refunded and could not close.
    fn record(
        &mut self,
        issued: Option<Vec<StoredDocument>>,
        report: &mut CloseReport,
        keep: bool,
    ) {
        match issued {
            Some(issued) => {
                for d in &issued {
                    report.record(Some(d.document.number.clone()), &d.document.draft, keep);
                }
            }
            None => {
                for doc in self.closes.iter().flat_map(|c| &c.documents) {
                    report.record(None, doc, keep);
                }
            }
        }
        for c in &self.closes {
            if c.refund.is_zero() {
                continue;
            }
            let account = self
                .states
                .iter()
                .find(|s| s.account.id == c.account)
                .map(|s| &s.account);
            let currency = match (c.documents.first(), account) {
                (Some(d), _) => d.currency.to_string(),
                (None, Some(a)) => a.currency.to_string(),
                (None, None) => String::new(),
            };
            report.refunds.push(RefundOwed {
                account: c.account.to_string(),
                customer_name: account.map(|a| a.name.clone()).unwrap_or_default(),
                currency,
                amount: c.refund,
                reason: REFUND_ON_CANCEL.into(),
            });
        }
        report.failed.append(&mut self.failed);
    }
}

/// Where a run's time goes, for the log at its end. Load and compute of the next chunk
/// overlap the commit of the current one, so the four do not add up to the run's time.
#[derive(Debug, Default, Clone, Copy)]
struct PhaseTimes {
    claim: std::time::Duration,
    load: std::time::Duration,
    compute: std::time::Duration,
    commit: std::time::Duration,
}

impl PhaseTimes {
    fn log(&self, chunks: usize) {
        tracing::debug!(
            chunks,
            claim_ms = self.claim.as_millis() as u64,
            load_ms = self.load.as_millis() as u64,
            compute_ms = self.compute.as_millis() as u64,
            commit_ms = self.commit.as_millis() as u64,
            "close phases (load and compute overlap the commit)"
        );
    }
}

/// The chunk pipeline's state across one run.
struct Pipeline<'i, 'a> {
    inputs: &'i ChunkInputs<'a>,
    /// The latest local date anywhere (UTC+14) bounds which accounts may be due.
    query_date: NaiveDate,
    /// Accounts this run looked at but left due: they failed, or (closing as of an instant)
    /// their local date has not reached their boundary yet. They stay claimed until the run
    /// ends, so the run neither loops on them nor waits for them.
    kept_here: std::collections::HashSet<AccountId>,
    /// The next chunk, claimed, read and billed while the previous one was being written.
    prepared_next: Option<PreparedChunk>,
    times: PhaseTimes,
    /// Which live workers this run has said it waits for.
    waiting_for: crate::takeover::WaitNotice,
}

async fn close_chunks(
    inputs: &ChunkInputs<'_>,
    report: &mut CloseReport,
) -> Result<Vec<AccountId>, CloseError> {
    let &ChunkInputs {
        settings,
        as_of,
        options,
        run,
        ..
    } = inputs;
    let mut pipeline = Pipeline {
        inputs,
        query_date: options
            .instant
            .map_or(as_of, |t| (t + Duration::hours(14)).date_naive().max(as_of)),
        kept_here: std::collections::HashSet::new(),
        prepared_next: None,
        times: PhaseTimes::default(),
        waiting_for: Default::default(),
    };
    if let Some(p) = &options.progress {
        let due = inputs.store.count_due(pipeline.query_date).await?;
        p.0.start("accounts", Some(due));
    }
    // In a dry run, the accounts this close would cancel and whose retention is already over.
    let mut would_delete = Vec::new();
    let mut after: Option<AccountId> = None;
    let mut chunks = 0;
    loop {
        if options.stop.as_ref().is_some_and(|s| *s.borrow()) {
            report.stopped = true;
            break;
        }
        let Some(mut chunk) = pipeline.next_chunk(after.as_ref()).await? else {
            break;
        };
        let Some(last) = chunk.ids.last().cloned() else {
            break;
        };
        let last_len = chunk.ids.len() as u64;
        match run {
            None => {
                for c in &chunk.closes {
                    if let Some(d) = c.canceled_at
                        && d + chrono::Days::new(u64::from(settings.retention_days)) <= as_of
                    {
                        would_delete.push(c.account.clone());
                    }
                }
                chunk.record(None, report, options.keep_documents);
                chunk.parks.report(report);
            }
            Some(run) => pipeline.commit(chunk, run, &last, report).await?,
        }
        chunks += 1;
        if let Some(p) = &options.progress {
            p.0.advance(last_len);
        }
        if run.is_some() && options.fail_after_chunks == Some(chunks) {
            return Err(CloseError::Injected(chunks));
        }
        after = Some(last);
    }
    pipeline.times.log(chunks);
    if let Some(p) = &options.progress {
        p.0.finish();
    }
    Ok(would_delete)
}

impl Pipeline<'_, '_> {
    /// The next chunk to write: the one prepared during the last commit, or one claimed (read,
    /// in a dry run) after `after`. `None` when nothing is left — a real run first waits for
    /// accounts another worker holds, so it never ends with due accounts silently left behind.
    async fn next_chunk(
        &mut self,
        after: Option<&AccountId>,
    ) -> Result<Option<PreparedChunk>, CloseError> {
        if let Some(chunk) = self.prepared_next.take() {
            return Ok(Some(chunk));
        }
        let inputs = self.inputs;
        loop {
            let t = std::time::Instant::now();
            let ids = inputs.next_ids(self.query_date, after).await?;
            if ids.is_empty() && inputs.run.is_some() {
                let due = inputs
                    .store
                    .due_accounts(&DuePage {
                        as_of: self.query_date,
                        after: None,
                        limit: self.kept_here.len() as u32 + 1,
                    })
                    .await?;
                if due.iter().any(|a| !self.kept_here.contains(a)) {
                    // Held by another worker: take them now if it is gone, else wait for it
                    // (its chunk commits, or its lease ends) and say so.
                    let others = crate::takeover::take_over_gone(
                        inputs.store,
                        &inputs.settings.worker,
                        inputs.clock.now(),
                    )
                    .await?;
                    if others.taken_accounts > 0 {
                        continue;
                    }
                    self.waiting_for.tell(&others.live);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            }
            self.times.claim += t.elapsed();
            if ids.is_empty() {
                return Ok(None);
            }
            let chunk = inputs
                .prepare(ids, &mut self.kept_here, &mut self.times)
                .await?;
            return Ok(Some(chunk));
        }
    }

    /// Write one chunk, preparing the next beside it; on a conflict with another writer, read
    /// and bill the chunk again (the accounts the other finished are no longer due) and retry,
    /// three times at most.
    async fn commit(
        &mut self,
        mut chunk: PreparedChunk,
        run: i64,
        last: &AccountId,
        report: &mut CloseReport,
    ) -> Result<(), CloseError> {
        let inputs = self.inputs;
        let &ChunkInputs {
            store,
            settings,
            clock,
            options,
            ..
        } = inputs;
        let mut attempts = 0;
        loop {
            let now = clock.now();
            let ctx = ChunkContext {
                run,
                numbering: &settings.numbering,
                now,
                // Customer emails wait out the review window; the finance batch does not.
                mail_at: now + chrono::Duration::hours(i64::from(settings.review_hours)),
                retention_days: settings.retention_days,
            };
            let t = std::time::Instant::now();
            // Claim, read and bill the next chunk while this one is written, on another
            // connection. Claims keep the two apart; a conflict retries this chunk alone.
            let pipelining = store.pipelining();
            let prefetch = attempts == 0 && self.prepared_next.is_none();
            let claimed_next = if prefetch && pipelining == Pipelining::ReadNext {
                // One writer (SQLite): the claim, a write, goes before this chunk's.
                inputs.claim(self.query_date, Some(last)).await?
            } else {
                Vec::new()
            };
            let mut next_times = PhaseTimes::default();
            let query_date = self.query_date;
            let kept_here = &mut self.kept_here;
            let (committed, next) = tokio::join!(store.commit_chunk(&ctx, &chunk.closes), async {
                let next = if !claimed_next.is_empty() {
                    claimed_next
                } else if prefetch && pipelining == Pipelining::ClaimAndReadNext {
                    inputs.claim(query_date, Some(last)).await?
                } else {
                    Vec::new()
                };
                if next.is_empty() {
                    return Ok(None);
                }
                inputs
                    .prepare(next, kept_here, &mut next_times)
                    .await
                    .map(Some)
            });
            if let Some(next) = next? {
                self.prepared_next = Some(next);
            }
            self.times.commit += t.elapsed();
            self.times.load += next_times.load;
            self.times.compute += next_times.compute;
            match committed {
                Ok(issued) => {
                    chunk.record(Some(issued), report, options.keep_documents);
                    chunk.parks.commit(store, run, clock, report).await?;
                    return Ok(());
                }
                Err(StoreError::Conflict(what)) if attempts < 3 => {
                    attempts += 1;
                    tracing::warn!(%what, attempts, "chunk conflicted with another writer; retrying");
                    chunk = inputs
                        .prepare(chunk.ids, &mut self.kept_here, &mut self.times)
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
