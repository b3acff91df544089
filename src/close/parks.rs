//! The sanity check of each chunk (`core::sanity` over the chunk's closes, with the park
//! status and previous invoices read in two queries), and what it parks: recorded, and
//! releases used up, only once the chunk has committed.

use super::CloseReport;
use crate::clock::Clock;
use crate::context::CloseSettings;
use crate::core::billing;
use crate::core::domain::{AccountId, SubscriptionId};
use crate::core::money::Currency;
use crate::core::sanity::{self, SanityBounds};
use crate::store::prelude::*;
use crate::store::{ParkStatus, ParkedAccount, StoreError};
use std::collections::BTreeMap;

/// What the sanity check made of one chunk.
pub(super) struct ChunkParks {
    /// Parked by this close.
    pub(super) new: Vec<ParkedAccount>,
    /// Parked by an earlier run, still waiting for an operator.
    pub(super) still: Vec<ParkedAccount>,
    /// Released accounts this chunk closes without the plausibility bounds: their release is
    /// used up once the chunk commits.
    released: Vec<AccountId>,
}

/// Check each close of the chunk against the sanity bounds (two queries: park status and
/// previous invoices) and move every account that fails one, or is still parked, out of
/// `closes` into `kept_here`, so the run neither bills it, nor loops on it, nor waits for it.
/// A released account skips the plausibility bounds once, not the balance invariant.
pub(super) async fn sanity_check(
    store: &dyn Store,
    settings: &CloseSettings,
    clock: &dyn Clock,
    run: Option<i64>,
    states: &[billing::AccountState],
    closes: &mut Vec<billing::AccountClose>,
    kept_here: &mut std::collections::HashSet<AccountId>,
) -> Result<ChunkParks, StoreError> {
    let mut parks = ChunkParks {
        new: Vec::new(),
        still: Vec::new(),
        released: Vec::new(),
    };
    if closes.is_empty() {
        return Ok(parks);
    }
    let ids: Vec<AccountId> = closes.iter().map(|c| c.account.clone()).collect();
    let status = store.park_status(&ids).await?;
    let subs: std::collections::BTreeSet<&str> = closes
        .iter()
        .filter(|c| !status.contains_key(&c.account))
        .flat_map(|c| &c.documents)
        .filter_map(|d| d.subscription.as_ref().map(SubscriptionId::as_str))
        .collect();
    let previous = if settings.sanity.max_increase.is_zero() || subs.is_empty() {
        BTreeMap::new()
    } else {
        store
            .previous_invoice_totals(&subs.into_iter().collect::<Vec<_>>())
            .await?
    };
    let now = clock.now();
    // Looked up once per close: a scan of `states` per close is quadratic in the chunk size.
    let currencies: std::collections::HashMap<&AccountId, Currency> = states
        .iter()
        .map(|s| (&s.account.id, s.account.currency))
        .collect();
    closes.retain(|c| {
        let currency = currencies.get(&c.account).copied();
        let row = status.get(&c.account);
        let released = match row.map(|p| p.status) {
            Some(ParkStatus::Parked) => {
                parks.still.extend(row.cloned());
                kept_here.insert(c.account.clone());
                return false;
            }
            Some(ParkStatus::Released) => true,
            None => false,
        };
        let bounds = if released {
            &SanityBounds::NONE
        } else {
            &settings.sanity
        };
        let reasons = match currency {
            Some(cur) => sanity::check(c, cur, &previous, bounds),
            None => Vec::new(),
        };
        if reasons.is_empty() {
            if released {
                parks.released.push(c.account.clone());
            }
            return true;
        }
        let reason = sanity::describe(&reasons);
        tracing::warn!(account = %c.account, reason = %reason, "account parked");
        kept_here.insert(c.account.clone());
        parks.new.push(ParkedAccount {
            account: c.account.clone(),
            reason,
            status: ParkStatus::Parked,
            since: now,
            run,
            released_at: None,
        });
        false
    });
    Ok(parks)
}

impl ChunkParks {
    /// Into the report (a dry run, or after the chunk's commit).
    pub(super) fn report(self, report: &mut CloseReport) {
        report.parked.extend(self.new);
        report.still_parked.extend(self.still);
    }

    /// After the chunk committed: record the parks and use up the releases. Separate small
    /// transactions: a crash before them leaves the parked accounts due (the next run parks
    /// them again) and a release unused until the account's next close.
    pub(super) async fn commit(
        self,
        store: &dyn Store,
        run: i64,
        clock: &dyn Clock,
        report: &mut CloseReport,
    ) -> Result<(), StoreError> {
        let now = clock.now();
        let rows: Vec<(AccountId, String)> = self
            .new
            .iter()
            .map(|p| (p.account.clone(), p.reason.clone()))
            .collect();
        store.park_accounts(run, &rows, now).await?;
        store.consume_releases(&self.released, now).await?;
        self.report(report);
        Ok(())
    }
}
