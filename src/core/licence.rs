//! Licences of per-seat plans (sources 001 and 002): buy, assign, unassign, remove, upgrade.
//!
//! The quantity of a per-seat item is the number of licences owned; each licence is available,
//! assigned to one user, or removed for good. Money follows the `license` preset: buying and
//! upgrading are prorated for the rest of the period and invoiced at once (co-termed, account
//! discount applied); removal moves no money — the licence is gone at once and stops billing
//! at the next renewal; moving a licence to a lower plan is refused with the path to follow.

use super::billing::{AccountState, Terms};
use super::catalog::Catalog;
use super::change::{Refusal, dated_subscription, preview_renewal};
use super::document::{DocumentBuilder, DraftDocument, LineKind, apply_balance};
use super::domain::{Item, SubscriptionId};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenceStatus {
    Available,
    Assigned,
    Removed,
}

impl LicenceStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            LicenceStatus::Available => "available",
            LicenceStatus::Assigned => "assigned",
            LicenceStatus::Removed => "removed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "available" => LicenceStatus::Available,
            "assigned" => LicenceStatus::Assigned,
            "removed" => LicenceStatus::Removed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Licence {
    pub id: i64,
    pub plan: String,
    pub status: LicenceStatus,
    pub assigned_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LicenceOp {
    Buy { plan: String, quantity: u32 },
    Assign { plan: String, user: String },
    Unassign { user: String },
    Remove { plan: String, quantity: u32 },
    Upgrade { user: String, plan: String },
}

/// A change to the licence rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenceMutation {
    Add { plan: String, count: u32 },
    Assign { id: i64, user: String },
    Unassign { id: i64 },
    Remove { id: i64 },
    Replan { id: i64, plan: String },
}

#[derive(Debug, Clone)]
pub struct LicenceOutcome {
    pub subscription: SubscriptionId,
    pub currency: super::money::Currency,
    pub op: LicenceOp,
    pub at: NaiveDate,
    pub expected_version: i64,
    /// New items when the op changes quantities (buy, remove, upgrade).
    pub items: Option<Vec<Item>>,
    pub mutations: Vec<LicenceMutation>,
    pub documents: Vec<DraftDocument>,
    pub balance_before: Decimal,
    pub balance_after: Decimal,
    pub next_renewal: Option<DraftDocument>,
}

impl LicenceOutcome {
    pub fn due_now(&self) -> Decimal {
        self.documents.iter().map(|d| d.amount_due).sum()
    }
}

fn set_quantity(items: &mut Vec<Item>, plan: &str, delta: i64) {
    match items.iter_mut().find(|i| i.plan == plan) {
        Some(item) => item.quantity = (i64::from(item.quantity) + delta).max(0) as u32,
        None if delta > 0 => items.push(Item {
            plan: plan.to_string(),
            quantity: delta as u32,
        }),
        None => {}
    }
    items.retain(|i| i.quantity > 0);
}

/// Compute a licence operation. Pure; the caller writes it (or shows it, for a quote).
pub fn plan_licence_op(
    state: &AccountState,
    licences: &[Licence],
    catalog: &Catalog,
    terms: Terms,
    id: &SubscriptionId,
    op: &LicenceOp,
    at: NaiveDate,
) -> Result<LicenceOutcome, Refusal> {
    let account = &state.account;
    let cur = account.currency;
    let (sub, period) = dated_subscription(state, id, at)?;
    let per_seat = |plan: &str| -> Result<(), Refusal> {
        if catalog.plan(plan)?.per_seat {
            Ok(())
        } else {
            Err(Refusal::NotPerSeat(plan.to_string()))
        }
    };
    let holder = |user: &str| {
        licences
            .iter()
            .find(|l| l.assigned_to.as_deref() == Some(user))
    };
    let available = |plan: &str| -> Vec<&Licence> {
        licences
            .iter()
            .filter(|l| l.plan == plan && l.status == LicenceStatus::Available)
            .collect()
    };
    let check_email = |u: &str| {
        u.parse::<lettre::Address>()
            .map(|_| ())
            .map_err(|_| Refusal::BadEmail(u.to_string()))
    };

    let mut items = sub.items.clone();
    let mut mutations = Vec::new();
    let mut lines: Vec<(String, Decimal)> = Vec::new();
    let share = period.remaining_share(at);
    let days = format!("{}/{} days", share.remaining, share.total);
    match op {
        LicenceOp::Buy { plan, quantity } => {
            per_seat(plan)?;
            if *quantity == 0 {
                return Err(Refusal::ZeroQuantity);
            }
            let owned = sub
                .items
                .iter()
                .find(|i| i.plan == *plan)
                .map_or(0, |i| i.quantity);
            if owned == 0 && sub.items.len() >= super::limits::MAX_ITEMS_PER_SUBSCRIPTION {
                return Err(Refusal::OverLimit(format!(
                    "subscription {} already has {} items, the limit",
                    sub.id,
                    sub.items.len()
                )));
            }
            let after = owned.saturating_add(*quantity);
            super::limits::check_quantity(plan, true, after).map_err(Refusal::OverLimit)?;
            let price = catalog.price(plan, cur, &sub.cycle)?;
            let name = &catalog.plan(plan)?.name;
            lines.push((
                format!(
                    "{quantity} × {name} licence, {at} to {} ({days})",
                    period.end
                ),
                share.of_remaining(price * Decimal::from(*quantity)),
            ));
            set_quantity(&mut items, plan, i64::from(*quantity));
            mutations.push(LicenceMutation::Add {
                plan: plan.clone(),
                count: *quantity,
            });
        }
        LicenceOp::Assign { plan, user } => {
            per_seat(plan)?;
            check_email(user)?;
            if holder(user).is_some() {
                return Err(Refusal::UserHasLicence(user.clone()));
            }
            let free = available(plan);
            let l = free
                .first()
                .ok_or_else(|| Refusal::NoAvailableLicence { plan: plan.clone() })?;
            mutations.push(LicenceMutation::Assign {
                id: l.id,
                user: user.clone(),
            });
        }
        LicenceOp::Unassign { user } => {
            let l = holder(user).ok_or_else(|| Refusal::UserHasNoLicence(user.clone()))?;
            mutations.push(LicenceMutation::Unassign { id: l.id });
        }
        LicenceOp::Remove { plan, quantity } => {
            per_seat(plan)?;
            if *quantity == 0 {
                return Err(Refusal::ZeroQuantity);
            }
            let free = available(plan);
            if (free.len() as u32) < *quantity {
                return Err(Refusal::AssignedCannotBeRemoved {
                    plan: plan.clone(),
                    available: free.len() as u32,
                    asked: *quantity,
                });
            }
            let total: u32 = sub.items.iter().map(|i| i.quantity).sum();
            if *quantity >= total {
                return Err(Refusal::LastLicence(*quantity));
            }
            // The newest go first; removal is final.
            for l in free.iter().rev().take(*quantity as usize) {
                mutations.push(LicenceMutation::Remove { id: l.id });
            }
            set_quantity(&mut items, plan, -i64::from(*quantity));
        }
        LicenceOp::Upgrade { user, plan } => {
            per_seat(plan)?;
            let l = holder(user).ok_or_else(|| Refusal::UserHasNoLicence(user.clone()))?;
            let (from, to) = (catalog.plan(&l.plan)?, catalog.plan(plan)?);
            if to.rank <= from.rank {
                return Err(Refusal::NotHigher {
                    from: from.code.clone(),
                    to: to.code.clone(),
                });
            }
            let (old_price, new_price) = (
                catalog.price(&l.plan, cur, &sub.cycle)?,
                catalog.price(plan, cur, &sub.cycle)?,
            );
            lines.push((
                format!(
                    "Unused {} licence of {user}, {at} to {} ({days})",
                    from.name, period.end
                ),
                -share.of_remaining(old_price),
            ));
            lines.push((
                format!(
                    "{} licence of {user}, {at} to {} ({days})",
                    to.name, period.end
                ),
                share.of_remaining(new_price),
            ));
            set_quantity(&mut items, &l.plan, -1);
            set_quantity(&mut items, plan, 1);
            mutations.push(LicenceMutation::Replan {
                id: l.id,
                plan: plan.clone(),
            });
        }
    }

    let mut documents = Vec::new();
    if !lines.is_empty() {
        let mut b = DocumentBuilder::new(cur);
        for (d, a) in lines {
            b.line(LineKind::Proration, d, a, true);
        }
        let discount = sub.discount_on(account, at, sub.periods_billed.saturating_sub(1));
        documents.push(b.finish(
            format!("licence/{}/v{}", sub.id, sub.version),
            account,
            Some(sub.id.clone()),
            at,
            terms.due(at),
            None,
            discount,
        )?);
    }
    let mut balance = state.balance;
    for doc in &mut documents {
        balance = apply_balance(doc, balance)?;
    }
    let items_changed = items != sub.items;
    let mut after = sub.clone();
    after.items = items.clone();
    let next_renewal = preview_renewal(state, catalog, terms, after, balance);
    Ok(LicenceOutcome {
        subscription: sub.id.clone(),
        currency: cur,
        op: op.clone(),
        at,
        expected_version: sub.version,
        items: items_changed.then_some(items),
        mutations,
        documents,
        balance_before: state.balance,
        balance_after: balance,
        next_renewal,
    })
}
