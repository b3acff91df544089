//! Work held by other workers: claims of a worker that is certainly gone are taken over at
//! once, and while a live worker holds work this one needs, it says so — which worker, how
//! much, until when — instead of waiting in silence. A live worker's claims are never taken
//! early: "gone" is only what `crate::worker` can prove on this host, or what PostgreSQL
//! proves by the worker's session having ended (`RunStore::sessions_gone`).
//!
//! Runs of gone workers still marked `running` are recorded as `abandoned` by the next run.

use crate::store::prelude::*;
use crate::store::{ClaimHolder, RunId, StoreError};
use chrono::{DateTime, Utc};

/// What one look at the other workers found.
#[derive(Debug, Default)]
pub struct Others {
    /// Accounts and messages taken over from gone workers.
    pub taken_accounts: u64,
    pub taken_messages: u64,
    /// Live (or not provably gone) workers holding work, by worker.
    pub live: Vec<ClaimHolder>,
}

/// Take over whatever gone workers hold; report the live holders (not `me`).
pub async fn take_over_gone(
    store: &dyn Store,
    me: &str,
    now: DateTime<Utc>,
) -> Result<Others, StoreError> {
    let mut others = Others::default();
    for holder in store.claim_holders(now).await? {
        if holder.worker == me {
            continue;
        }
        if holder.is_gone() {
            let (accounts, messages) = store.take_over(&holder.worker).await?;
            tracing::warn!(
                worker = %holder.worker,
                accounts,
                messages,
                "took over the claims of a worker that is gone"
            );
            others.taken_accounts += accounts;
            others.taken_messages += messages;
        } else {
            others.live.push(holder);
        }
    }
    Ok(others)
}

/// Say, once per worker and lease, that this run waits for a live worker.
#[derive(Debug, Default)]
pub struct WaitNotice {
    said: std::collections::BTreeSet<(String, DateTime<Utc>)>,
}

impl WaitNotice {
    pub fn tell(&mut self, live: &[ClaimHolder]) {
        for h in live {
            if self.said.insert((h.worker.clone(), h.until)) {
                tracing::warn!(
                    worker = %h.worker,
                    accounts = h.accounts,
                    messages = h.messages,
                    until = %h.until.format("%Y-%m-%d %H:%M:%S UTC"),
                    "waiting for work claimed by another worker that is still running (or \
                     cannot be checked from here); its claims are free at the latest when \
                     its lease ends"
                );
            }
        }
    }
}

/// Record as `abandoned` every other run still marked `running` whose worker is gone.
pub async fn abandon_gone_runs(
    store: &dyn Store,
    me: RunId,
    now: DateTime<Utc>,
) -> Result<Vec<RunId>, StoreError> {
    let mut abandoned = Vec::new();
    for (run, worker, session_gone) in store.running_runs(Some(me)).await? {
        if let Some(worker) = worker
            && crate::worker::is_gone(&worker, session_gone)
        {
            store.abandon_run(run, me, now).await?;
            tracing::warn!(run, %worker, "run abandoned by a worker that is gone");
            abandoned.push(run);
        }
    }
    Ok(abandoned)
}
