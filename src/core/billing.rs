//! Renewals: which periods an account's subscriptions must be invoiced for at `as_of`, and
//! the documents that bills them. Pure: state in, documents and state updates out.
//!
//! Periods are billed in advance, at their start. A worker that was down catches up every
//! missed period, oldest first. The account's balance is applied to the account's documents
//! in issue order (date, then subscription id), so the result does not depend on how the
//! store happened to return rows.

use super::catalog::{Catalog, CatalogError};
use super::document::{DocumentBuilder, DraftDocument, LineKind, apply_balance};
use super::domain::{Account, AccountId, Subscription, SubscriptionId, SubscriptionStatus};
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
        issued + chrono::Days::new(u64::from(self.payment_terms_days))
    }
}

/// New state of a subscription after the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    pub id: SubscriptionId,
    /// `next_bill_date` before the close: the store updates only a row still in that state,
    /// so two workers can never both advance the same subscription.
    pub expected_next_bill_date: NaiveDate,
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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BillingError {
    #[error("subscription {sub}: {source}")]
    Catalog {
        sub: SubscriptionId,
        #[source]
        source: CatalogError,
    },
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
        let err = |source| BillingError::Catalog {
            sub: sub.id.clone(),
            source,
        };
        let cycle = catalog.cycle(&sub.cycle).map_err(err)?;
        let mut update = SubscriptionUpdate {
            id: sub.id.clone(),
            expected_next_bill_date: sub.next_bill_date,
            current_period: sub.current_period,
            next_bill_date: sub.next_bill_date,
            periods_billed: sub.periods_billed,
            status: sub.status,
            ended_at: None,
        };
        let mut pending = sub.pending.as_slice();
        loop {
            let period = cycle.length.period_from(sub.anchor, update.next_bill_date);
            if period.start > as_of {
                break;
            }
            if sub.cancel_at.is_some_and(|c| c <= period.start) {
                update.status = SubscriptionStatus::Ended;
                update.ended_at = Some(period.start);
                break;
            }
            let mut b = DocumentBuilder::new(account.currency);
            for item in &sub.items {
                let plan = catalog.plan(&item.plan).map_err(err)?;
                let price = catalog
                    .price(&item.plan, account.currency, &sub.cycle)
                    .map_err(err)?;
                let what = if item.quantity == 1 {
                    plan.name.clone()
                } else {
                    format!("{} × {}", plan.name, item.quantity)
                };
                b.line(
                    LineKind::Recurring,
                    format!("{what}, {period}"),
                    price * Decimal::from(item.quantity),
                    true,
                );
            }
            for p in pending {
                b.line(
                    LineKind::Proration,
                    p.description.clone(),
                    p.amount,
                    p.discountable,
                );
            }
            let discount = sub
                .discount
                .as_ref()
                .or(account.discount.as_ref())
                .filter(|d| d.applies(period.start, update.periods_billed));
            let mut doc = b.finish(
                format!("renewal/{}/{}", sub.id, period.start),
                account.id.clone(),
                Some(sub.id.clone()),
                period.start,
                terms.due(period.start),
                Some(period),
                discount,
                &account.taxes,
            );
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
        balance = apply_balance(doc, balance);
    }
    Ok(AccountClose {
        account: account.id.clone(),
        documents,
        updates,
        balance_before: state.balance,
        balance_after: balance,
    })
}
