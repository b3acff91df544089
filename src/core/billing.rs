//! Renewals: which periods an account's subscriptions must be invoiced for at `as_of`, and
//! the documents that bills them. Pure: state in, documents and state updates out.
//!
//! Periods are billed in advance, at their start. A worker that was down catches up every
//! missed period, oldest first. The account's balance is applied to the account's documents
//! in issue order (date, then subscription id), so the result does not depend on how the
//! store happened to return rows.

use super::catalog::{Catalog, CatalogError};
use super::document::{DocumentBuilder, DraftDocument, LineKind, apply_balance};
use super::domain::{
    Account, AccountId, Item, Subscription, SubscriptionId, SubscriptionStatus, Target,
};
use super::money::{AmountOverflow, Currency};
use super::period::Period;
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// Everything the core needs to close one account.
#[derive(Debug, Clone)]
pub struct AccountState {
    pub account: Account,
    pub balance: Decimal,
    pub subscriptions: Vec<Subscription>,
}

/// How documents are dated, from configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Terms {
    /// Days between issue and due date (0: due on issue).
    pub payment_terms_days: u32,
}

impl Terms {
    pub fn due(&self, issued: NaiveDate) -> NaiveDate {
        // At the end of chrono's calendar the due date stops there.
        issued
            .checked_add_days(chrono::Days::new(u64::from(self.payment_terms_days)))
            .unwrap_or(NaiveDate::MAX)
    }
}

/// New state of a subscription after the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    pub id: SubscriptionId,
    /// Version the update was computed from: the store updates only a row still at that
    /// version, so two workers can never both advance the same subscription.
    pub expected_version: i64,
    pub items: Vec<Item>,
    pub cycle: String,
    pub anchor: NaiveDate,
    /// Queued changes this close applied.
    pub applied_changes: Vec<i64>,
    pub current_period: Option<Period>,
    pub next_bill_date: NaiveDate,
    pub periods_billed: u32,
    pub status: SubscriptionStatus,
    pub ended_at: Option<NaiveDate>,
}

/// What closing one account produces.
#[derive(Debug, Clone)]
pub struct AccountClose {
    pub account: AccountId,
    pub documents: Vec<DraftDocument>,
    pub updates: Vec<SubscriptionUpdate>,
    /// Balance the close was computed from; the store only writes over that same value.
    pub balance_before: Decimal,
    pub balance_after: Decimal,
    /// Set when the account's last subscription ended in this close: the date it ended.
    pub canceled_at: Option<NaiveDate>,
    /// Balance left on an account this close canceled: refunded, so the balance ends at zero.
    pub refund: Decimal,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BillingError {
    #[error("subscription {sub}: {error}")]
    Catalog {
        sub: SubscriptionId,
        error: CatalogError,
    },
    #[error(transparent)]
    Overflow(#[from] AmountOverflow),
}

/// Whether a subscription has a period to bill at `as_of`.
pub fn is_due(sub: &Subscription, as_of: NaiveDate) -> bool {
    sub.status == SubscriptionStatus::Active && sub.next_bill_date <= as_of
}

/// Close one account at `as_of`: renew (or end) every due subscription for every missed period.
pub fn close_account(
    state: &AccountState,
    catalog: &Catalog,
    terms: Terms,
    as_of: NaiveDate,
) -> Result<AccountClose, BillingError> {
    let account = &state.account;
    let mut documents = Vec::new();
    let mut updates = Vec::new();

    for sub in state.subscriptions.iter().filter(|s| is_due(s, as_of)) {
        let err = |error| BillingError::Catalog {
            sub: sub.id.clone(),
            error,
        };
        let mut update = SubscriptionUpdate {
            id: sub.id.clone(),
            expected_version: sub.version,
            items: sub.items.clone(),
            cycle: sub.cycle.clone(),
            anchor: sub.anchor,
            applied_changes: Vec::new(),
            current_period: sub.current_period,
            next_bill_date: sub.next_bill_date,
            periods_billed: sub.periods_billed,
            status: sub.status,
            ended_at: None,
        };
        let mut pending = sub.pending.as_slice();
        loop {
            let start = update.next_bill_date;
            // No period starts on the last day of chrono's calendar.
            if start > as_of || start == NaiveDate::MAX {
                break;
            }
            if sub.cancel_at.is_some_and(|c| c <= start) {
                update.status = SubscriptionStatus::Ended;
                update.ended_at = Some(start);
                if !pending.is_empty() {
                    // Proration still waiting for "the next invoice" goes on a final one.
                    let mut b = DocumentBuilder::new(account.currency);
                    pending_lines(&mut b, pending);
                    let discount =
                        sub.discount_on(account, start, update.periods_billed.saturating_sub(1));
                    let mut doc = b.finish(
                        format!("final/{}", sub.id),
                        account,
                        Some(sub.id.clone()),
                        start,
                        terms.due(start),
                        None,
                        discount,
                    )?;
                    doc.consumes_pending = pending.iter().map(|p| p.id).collect();
                    documents.push(doc);
                }
                break;
            }
            for q in sub.queued.iter().filter(|q| q.effective_at <= start) {
                if update.applied_changes.contains(&q.id) {
                    continue;
                }
                apply_target(&mut update.items, &mut update.cycle, &q.target);
                if update.cycle != sub.cycle || q.target.cycle.is_some() {
                    // A new cycle counts its boundaries from the boundary it starts at.
                    update.anchor = start;
                }
                update.applied_changes.push(q.id);
            }
            let cycle = catalog.cycle(&update.cycle).map_err(err)?;
            let period = cycle.length.period_from(update.anchor, start);
            let mut b = DocumentBuilder::new(account.currency);
            period_lines(
                &mut b,
                catalog,
                account.currency,
                &update.items,
                &update.cycle,
                period,
            )
            .map_err(err)?;
            pending_lines(&mut b, pending);
            let discount = sub.discount_on(account, period.start, update.periods_billed);
            let mut doc = b.finish(
                format!("renewal/{}/{}", sub.id, period.start),
                account,
                Some(sub.id.clone()),
                period.start,
                terms.due(period.start),
                Some(period),
                discount,
            )?;
            doc.consumes_pending = pending.iter().map(|p| p.id).collect();
            pending = &[];
            documents.push(doc);
            update.current_period = Some(period);
            update.next_bill_date = period.end;
            update.periods_billed += 1;
        }
        updates.push(update);
    }

    documents.sort_by(|a, b| {
        (a.issued_at, &a.subscription, &a.key).cmp(&(b.issued_at, &b.subscription, &b.key))
    });
    let mut balance = state.balance;
    for doc in &mut documents {
        balance = apply_balance(doc, balance)?;
    }
    // The account is canceled when every subscription it had active has now ended.
    let ended: Vec<NaiveDate> = updates.iter().filter_map(|u| u.ended_at).collect();
    let canceled_at = (!state.subscriptions.is_empty() && ended.len() == state.subscriptions.len())
        .then(|| ended.iter().max().copied())
        .flatten();
    let mut refund = Decimal::ZERO;
    if canceled_at.is_some() && balance > Decimal::ZERO {
        refund = balance;
        balance = Decimal::ZERO;
    }
    Ok(AccountClose {
        account: account.id.clone(),
        documents,
        updates,
        balance_before: state.balance,
        balance_after: balance,
        canceled_at,
        refund,
    })
}

/// Replace plan, cycle and quantity as a change target says. Plan and quantity apply to the
/// subscription's single item (the change engine refuses them on several items).
pub fn apply_target(items: &mut [Item], cycle: &mut String, target: &Target) {
    if let Some(c) = &target.cycle {
        *cycle = c.clone();
    }
    if let Some(item) = items.first_mut() {
        if let Some(p) = &target.plan {
            item.plan = p.clone();
        }
        if let Some(q) = target.quantity {
            item.quantity = q;
        }
    }
}

/// The recurring lines of one period: each item at its price for the cycle.
pub fn period_lines(
    b: &mut DocumentBuilder,
    catalog: &Catalog,
    currency: Currency,
    items: &[Item],
    cycle: &str,
    period: Period,
) -> Result<(), CatalogError> {
    for item in items {
        let plan = catalog.plan(&item.plan)?;
        let price = catalog.price(&item.plan, currency, cycle)?;
        let what = if item.quantity == 1 {
            plan.name.clone()
        } else {
            format!("{} × {}", plan.name, item.quantity)
        };
        b.priced(
            LineKind::Recurring,
            format!("{what}, {period}"),
            item.quantity,
            price,
            true,
        );
    }
    Ok(())
}

/// Proration carried to this invoice, a line each.
fn pending_lines(b: &mut DocumentBuilder, pending: &[super::domain::PendingItem]) {
    for p in pending {
        b.line(p.kind, p.description.clone(), p.amount, p.discountable);
    }
}

/// Price of a set of items for one period of `cycle`.
pub fn items_amount(
    catalog: &Catalog,
    currency: Currency,
    items: &[Item],
    cycle: &str,
) -> Result<Decimal, CatalogError> {
    let mut total = Decimal::ZERO;
    for item in items {
        // Saturating: items and quantities are capped where they enter (core::limits), so
        // this only matters for rows that never passed those checks; it must not panic.
        let price = catalog.price(&item.plan, currency, cycle)?;
        total = total.saturating_add(price.saturating_mul(Decimal::from(item.quantity)));
    }
    Ok(total)
}
