//! Plan changes: classify a request, find the policy's rule, and compute — purely — the
//! documents, pending items and new subscription state it produces. `quote` is this function
//! with nothing written; `change` writes its outcome in one transaction.
//!
//! Each method yields adjustment units (a credit and a charge for `prorate`; one net unit for
//! `rerate_used`; the old period's credit for `backdate`) and possibly a new period. The
//! settlement groups them: `invoice_now` puts everything on one document; `balance` issues the
//! credits as a credit note first, then the charges, then the new period's own invoice, the
//! balance paying them in that order; `next_invoice` turns the units into pending items for
//! the next renewal (or for the new period's invoice, issued at once).

use super::billing::{AccountState, Terms, close_account, items_amount, period_lines};
use super::catalog::{Catalog, CatalogError};
use super::document::{DocumentBuilder, DraftDocument, LineKind, apply_balance};
use super::domain::{
    Item, PendingItem, QueuedChange, Subscription, SubscriptionId, SubscriptionStatus, Target,
};
use super::money::Currency;
use super::period::{CycleLength, Period};
use super::policy::{ChangeKind, Method, Rule, Settle, Timing};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ChangeRequest {
    pub subscription: SubscriptionId,
    pub target: Target,
    pub at: NaiveDate,
}

/// Why a change is refused. Nothing changes on a refusal.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("unknown subscription {0:?}")]
    UnknownSubscription(String),
    #[error("subscription {0} has ended")]
    Ended(SubscriptionId),
    #[error("subscription {0} has no billed period yet; run close first")]
    NotBilledYet(SubscriptionId),
    #[error("the change date {at} is outside the current period {period}")]
    OutsidePeriod { at: NaiveDate, period: Period },
    #[error("the change date {at} is before the subscription's last change on {last}")]
    BeforeLastChange { at: NaiveDate, last: NaiveDate },
    #[error("name a plan, a cycle or a quantity to change to")]
    NoTarget,
    #[error(
        "subscription {0} has several items; plan and quantity changes need a single-item subscription"
    )]
    SeveralItems(SubscriptionId),
    #[error("quantity must be at least 1 (to stop, cancel the subscription)")]
    ZeroQuantity,
    #[error("{0}")]
    OverLimit(String),
    #[error("subscription {sub} is already on {target}")]
    SameState { sub: SubscriptionId, target: Target },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Overflow(#[from] super::money::AmountOverflow),
    #[error("policy {policy} has no rule for {kind}")]
    NotAllowed { policy: String, kind: ChangeKind },
    #[error("{kind} refused: {message}")]
    Forbidden { kind: ChangeKind, message: String },
    #[error("subscription {sub} is already canceled, effective {at}")]
    AlreadyCanceling { sub: SubscriptionId, at: NaiveDate },
    #[error("subscription {0} has no cancellation to undo")]
    NothingToUndo(SubscriptionId),
    #[error("plan {0:?} is not sold per seat; it has no licences")]
    NotPerSeat(String),
    #[error("no unassigned {plan} licence to assign; buy one first")]
    NoAvailableLicence { plan: String },
    #[error("user {0} already holds a licence on this subscription")]
    UserHasLicence(String),
    #[error("user {0} holds no licence on this subscription")]
    UserHasNoLicence(String),
    #[error(
        "only {available} unassigned {plan} licence(s) can be removed, {asked} asked: assigned licences cannot be \
         removed; unassign them first"
    )]
    AssignedCannotBeRemoved {
        plan: String,
        available: u32,
        asked: u32,
    },
    #[error("removing {0} licence(s) would leave the subscription with none; cancel it instead")]
    LastLicence(u32),
    #[error("{from} to {to} is not an upgrade: {message}", message = super::policy::LICENCE_DOWNGRADE_MESSAGE)]
    NotHigher { from: String, to: String },
    #[error("{0:?} is not an email address")]
    BadEmail(String),
}

/// Proration waiting for the next invoice, created by a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewPending {
    pub key: String,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub discountable: bool,
}

/// The subscription after an immediate change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedSubscription {
    pub items: Vec<Item>,
    pub cycle: String,
    pub anchor: NaiveDate,
    pub current_period: Period,
    pub next_bill_date: NaiveDate,
    pub periods_billed: u32,
}

#[derive(Debug, Clone)]
pub struct ChangeOutcome {
    pub subscription: SubscriptionId,
    pub currency: Currency,
    pub kind: ChangeKind,
    pub timing: Timing,
    pub method: Method,
    pub settle: Settle,
    pub at: NaiveDate,
    pub target: Target,
    /// Documents issued now, in issue order, with the balance applied.
    pub documents: Vec<DraftDocument>,
    pub pending: Vec<NewPending>,
    /// None when the change is queued for the period end.
    pub changed: Option<ChangedSubscription>,
    pub queued_for: Option<NaiveDate>,
    /// The version this outcome was computed from; the write is guarded by it.
    pub expected_version: i64,
    pub balance_before: Decimal,
    pub balance_after: Decimal,
    /// The next renewal after the change, as it stands now (not numbered, balance applied).
    pub next_renewal: Option<DraftDocument>,
    /// Modules whose data the change deletes now (a `deferred` downgrade to a plan without them).
    pub purge_modules: Vec<String>,
}

impl ChangeOutcome {
    pub fn due_now(&self) -> Decimal {
        self.documents.iter().map(|d| d.amount_due).sum()
    }
    pub fn to_balance(&self) -> Decimal {
        self.balance_after - self.balance_before
    }
}

/// Months count as 30.4375 days when lengths of different kinds are compared.
fn length_hundredths(l: CycleLength) -> u64 {
    match l {
        CycleLength::Months(m) => u64::from(m) * 3044,
        CycleLength::Days(d) => u64::from(d) * 100,
    }
}

struct Unit {
    lines: Vec<(LineKind, String, Decimal)>,
}

impl Unit {
    fn net(&self) -> Decimal {
        self.lines.iter().map(|l| l.2).sum()
    }
}

/// What a change asks for, classified: its kind, and the subscription's items, cycle and
/// period price before and after.
struct Classified {
    kind: ChangeKind,
    new_items: Vec<Item>,
    new_cycle: String,
    old_len: CycleLength,
    new_len: CycleLength,
    old_amount: Decimal,
    new_amount: Decimal,
}

/// Compute a change. Pure: the caller writes the outcome (or, for a quote, doesn't). The steps:
/// validate the request, classify it, find the policy's rule, price the change (proration
/// units), settle it (documents or pending lines) and preview the next renewal.
pub fn plan_change(
    state: &AccountState,
    catalog: &Catalog,
    terms: Terms,
    req: &ChangeRequest,
) -> Result<ChangeOutcome, Refusal> {
    let (sub, period) = validate(state, req)?;
    let c = classify(state, catalog, sub, &req.target)?;
    let policy = catalog.policy(&sub.policy)?;
    let rule = policy
        .rule(c.kind, &sub.cycle, c.old_len)
        .ok_or_else(|| Refusal::NotAllowed {
            policy: policy.name.clone(),
            kind: c.kind,
        })?;
    if let Some(message) = &rule.forbidden {
        return Err(Refusal::Forbidden {
            kind: c.kind,
            message: message.clone(),
        });
    }
    let at = req.at;
    let mut outcome = ChangeOutcome {
        subscription: sub.id.clone(),
        currency: state.account.currency,
        kind: c.kind,
        timing: rule.timing,
        method: rule.method,
        settle: rule.settle,
        at,
        target: req.target.clone(),
        documents: Vec::new(),
        pending: Vec::new(),
        changed: None,
        queued_for: None,
        expected_version: sub.version,
        balance_before: state.balance,
        balance_after: state.balance,
        next_renewal: None,
        purge_modules: Vec::new(),
    };
    if c.kind == ChangeKind::TierDowngrade
        && policy.purge_modules_on_downgrade
        && rule.timing == Timing::Immediate
    {
        let kept = &catalog.plan(&c.new_items[0].plan)?.modules;
        outcome.purge_modules = catalog
            .plan(&sub.items[0].plan)?
            .modules
            .iter()
            .filter(|m| !kept.contains(m))
            .cloned()
            .collect();
    }

    let mut after = sub.clone();
    if rule.timing == Timing::EndOfPeriod {
        outcome.queued_for = Some(period.end);
        after.queued = vec![QueuedChange {
            id: -1,
            effective_at: period.end,
            kind: c.kind.as_str().into(),
            target: req.target.clone(),
        }];
    } else {
        let (units, new_period) = price(catalog, sub, &c, rule, period, at)?;
        let docs = settle(
            state,
            catalog,
            terms,
            sub,
            &c,
            rule,
            &units,
            new_period,
            at,
            &mut outcome,
            &mut after,
        )?;
        let mut balance = state.balance;
        let mut docs = docs;
        for doc in &mut docs {
            balance = apply_balance(doc, balance)?;
        }
        outcome.documents = docs;
        outcome.balance_after = balance;

        let changed = match new_period {
            Some(p) => ChangedSubscription {
                items: c.new_items.clone(),
                cycle: c.new_cycle.clone(),
                anchor: p.start,
                current_period: p,
                next_bill_date: p.end,
                periods_billed: sub.periods_billed + 1,
            },
            None => ChangedSubscription {
                items: c.new_items.clone(),
                cycle: c.new_cycle.clone(),
                anchor: sub.anchor,
                current_period: period,
                next_bill_date: sub.next_bill_date,
                periods_billed: sub.periods_billed,
            },
        };
        after.items = changed.items.clone();
        after.cycle = changed.cycle.clone();
        after.anchor = changed.anchor;
        after.current_period = Some(changed.current_period);
        after.next_bill_date = changed.next_bill_date;
        after.periods_billed = changed.periods_billed;
        outcome.changed = Some(changed);
    }

    outcome.next_renewal = preview_renewal(state, catalog, terms, after, outcome.balance_after);
    Ok(outcome)
}

/// The subscription a request names, and its current period, if the request can apply.
fn validate<'a>(
    state: &'a AccountState,
    req: &ChangeRequest,
) -> Result<(&'a Subscription, Period), Refusal> {
    let sub = state
        .subscriptions
        .iter()
        .find(|s| s.id == req.subscription)
        .ok_or_else(|| Refusal::UnknownSubscription(req.subscription.to_string()))?;
    if sub.status != SubscriptionStatus::Active {
        return Err(Refusal::Ended(sub.id.clone()));
    }
    let period = sub
        .current_period
        .ok_or_else(|| Refusal::NotBilledYet(sub.id.clone()))?;
    let at = req.at;
    if !period.contains(at) {
        return Err(Refusal::OutsidePeriod { at, period });
    }
    if let Some(last) = sub.last_change_at.filter(|last| at < *last) {
        return Err(Refusal::BeforeLastChange { at, last });
    }
    let target = &req.target;
    if target.is_empty() {
        return Err(Refusal::NoTarget);
    }
    if target.quantity == Some(0) {
        return Err(Refusal::ZeroQuantity);
    }
    if (target.plan.is_some() || target.quantity.is_some()) && sub.items.len() != 1 {
        return Err(Refusal::SeveralItems(sub.id.clone()));
    }
    Ok((sub, period))
}

/// The kind of a change and the subscription before and after it.
fn classify(
    state: &AccountState,
    catalog: &Catalog,
    sub: &Subscription,
    target: &Target,
) -> Result<Classified, Refusal> {
    let cur = state.account.currency;
    let new_cycle = target.cycle.clone().unwrap_or_else(|| sub.cycle.clone());
    let old_len = catalog.cycle(&sub.cycle)?.length;
    let new_len = catalog.cycle(&new_cycle)?.length;
    let mut new_items = sub.items.clone();
    let mut cycle_tmp = new_cycle.clone();
    super::billing::apply_target(&mut new_items, &mut cycle_tmp, target);
    for item in &new_items {
        catalog.price(&item.plan, cur, &new_cycle)?;
        let per_seat = catalog.plan(&item.plan)?.per_seat;
        super::limits::check_quantity(&item.plan, per_seat, item.quantity)
            .map_err(Refusal::OverLimit)?;
    }
    let old_amount = items_amount(catalog, cur, &sub.items, &sub.cycle)?;
    let new_amount = items_amount(catalog, cur, &new_items, &new_cycle)?;

    let kind = if new_cycle != sub.cycle {
        if length_hundredths(new_len) >= length_hundredths(old_len) {
            ChangeKind::CycleLonger
        } else {
            ChangeKind::CycleShorter
        }
    } else if new_items[0].plan != sub.items[0].plan {
        let (old_rank, new_rank) = (
            catalog.plan(&sub.items[0].plan)?.rank,
            catalog.plan(&new_items[0].plan)?.rank,
        );
        // Equal ranks: the dearer plan is the upgrade.
        if new_rank > old_rank || (new_rank == old_rank && new_amount >= old_amount) {
            ChangeKind::TierUpgrade
        } else {
            ChangeKind::TierDowngrade
        }
    } else if new_items[0].quantity != sub.items[0].quantity {
        if new_items[0].quantity > sub.items[0].quantity {
            ChangeKind::SeatsAdded
        } else {
            ChangeKind::SeatsRemoved
        }
    } else {
        return Err(Refusal::SameState {
            sub: sub.id.clone(),
            target: target.clone(),
        });
    };

    Ok(Classified {
        kind,
        new_items,
        new_cycle,
        old_len,
        new_len,
        old_amount,
        new_amount,
    })
}

/// Price an immediate change: the proration units its method gives, and the new period it
/// starts, if any.
fn price(
    catalog: &Catalog,
    sub: &Subscription,
    c: &Classified,
    rule: &Rule,
    period: Period,
    at: NaiveDate,
) -> Result<(Vec<Unit>, Option<Period>), Refusal> {
    let Classified {
        kind,
        new_items,
        new_cycle,
        new_len,
        old_amount,
        new_amount,
        ..
    } = c;
    let (kind, new_len, old_amount, new_amount) = (*kind, *new_len, *old_amount, *new_amount);
    let share = period.remaining_share(at);
    let pct = rule.credit_percent(share.elapsed);
    let pct_note = if pct == Decimal::ONE_HUNDRED {
        String::new()
    } else {
        format!(", credited at {}%", pct.normalize())
    };
    let days = format!("{}/{} days", share.remaining, share.total);
    let describe = |items: &[Item]| -> Result<String, CatalogError> {
        let mut names = Vec::new();
        for i in items {
            let plan = catalog.plan(&i.plan)?;
            names.push(if i.quantity == 1 {
                plan.name.clone()
            } else {
                format!("{} × {}", plan.name, i.quantity)
            });
        }
        Ok(names.join(", "))
    };
    let (old_desc, new_desc) = (describe(&sub.items)?, describe(new_items)?);
    let mut units: Vec<Unit> = Vec::new();
    let mut new_period: Option<Period> = None;
    match rule.method {
        Method::Prorate => {
            units.push(Unit {
                lines: vec![(
                    LineKind::Proration,
                    format!(
                        "Unused {old_desc}, {at} to {} ({days}){pct_note}",
                        period.end
                    ),
                    -share.of_remaining(old_amount) * pct / Decimal::ONE_HUNDRED,
                )],
            });
            if kind.is_cycle_change() {
                new_period = Some(new_len.period_from(at, at));
            } else {
                units.push(Unit {
                    lines: vec![(
                        LineKind::Proration,
                        format!("{new_desc}, {at} to {} ({days})", period.end),
                        share.of_remaining(new_amount),
                    )],
                });
            }
        }
        Method::RerateUsed => {
            let (whole, partial_start) = new_len.whole_periods_between(period.start, at);
            let mut lines = vec![(
                LineKind::Adjustment,
                format!("{old_desc} billed for {period}"),
                -old_amount,
            )];
            if whole > 0 {
                lines.push((
                        LineKind::Adjustment,
                        format!("Used {period_start} to {partial_start}: {whole} × {new_cycle} at {new_amount}", period_start = period.start),
                        new_amount * Decimal::from(whole),
                    ));
            }
            if partial_start < at {
                let p = new_len.period_from(partial_start, partial_start);
                let used = Period {
                    start: partial_start,
                    end: p.end,
                }
                .remaining_share(at);
                lines.push((
                    LineKind::Adjustment,
                    format!(
                        "Used {partial_start} to {at}: {}/{} days of {new_cycle} at {new_amount}",
                        used.elapsed, used.total
                    ),
                    used.of_elapsed(new_amount),
                ));
            }
            units.push(Unit { lines });
            new_period = Some(new_len.period_from(at, at));
        }
        Method::Backdate => {
            units.push(Unit {
                lines: vec![(
                    LineKind::Adjustment,
                    format!("{old_desc} billed for {period}, replaced"),
                    -old_amount,
                )],
            });
            new_period = Some(new_len.period_from(period.start, period.start));
        }
        Method::None => {
            if kind.is_cycle_change() {
                new_period = Some(new_len.period_from(at, at));
            }
        }
    }

    Ok((units, new_period))
}

/// Settle an immediate change as its rule says: documents now (an invoice, or a credit note
/// and a charge against the balance), or lines pending for the next invoice (`after` and
/// `outcome` carry those).
#[allow(clippy::too_many_arguments)]
fn settle(
    state: &AccountState,
    catalog: &Catalog,
    terms: Terms,
    sub: &Subscription,
    c: &Classified,
    rule: &Rule,
    units: &[Unit],
    new_period: Option<Period>,
    at: NaiveDate,
    outcome: &mut ChangeOutcome,
    after: &mut Subscription,
) -> Result<Vec<DraftDocument>, Refusal> {
    let account = &state.account;
    let cur = account.currency;
    let (new_items, new_cycle) = (&c.new_items, &c.new_cycle);
    let key = format!("change/{}/v{}", sub.id, sub.version);
    let discount = sub.discount_on(account, at, sub.periods_billed.saturating_sub(1));
    let finish = |b: DocumentBuilder, suffix: &str, issued: NaiveDate, p: Option<Period>| {
        b.finish(
            format!("{key}/{suffix}"),
            account,
            Some(sub.id.clone()),
            issued,
            terms.due(issued),
            p,
            discount,
        )
    };
    let new_period_builder = |b: &mut DocumentBuilder| -> Result<(), CatalogError> {
        if let Some(p) = new_period {
            period_lines(b, catalog, cur, new_items, new_cycle, p)?;
        }
        Ok(())
    };
    let mut docs = Vec::new();
    match rule.settle {
        Settle::InvoiceNow => {
            let mut b = DocumentBuilder::new(cur);
            for (k, d, a) in units.iter().flat_map(|u| &u.lines) {
                b.line(*k, d.clone(), *a, true);
            }
            new_period_builder(&mut b)?;
            if !b.is_empty() {
                docs.push(finish(b, "invoice", at, new_period)?);
            }
        }
        Settle::Balance => {
            let backdated = rule.method == Method::Backdate;
            let mut credit = DocumentBuilder::new(cur);
            let mut charge = DocumentBuilder::new(cur);
            for u in units {
                let net = u.net();
                let b = if net.is_sign_negative() {
                    &mut credit
                } else {
                    &mut charge
                };
                if !net.is_zero() {
                    for (k, d, a) in &u.lines {
                        b.line(*k, d.clone(), *a, true);
                    }
                }
            }
            if backdated {
                new_period_builder(&mut charge)?;
            }
            if !credit.is_empty() {
                docs.push(finish(credit, "credit", at, None)?);
            }
            if !charge.is_empty() {
                docs.push(finish(
                    charge,
                    "charge",
                    at,
                    if backdated { new_period } else { None },
                )?);
            }
            if !backdated && new_period.is_some() {
                let mut b = DocumentBuilder::new(cur);
                new_period_builder(&mut b)?;
                docs.push(finish(b, "period", at, new_period)?);
            }
        }
        Settle::NextInvoice => {
            let new_pending: Vec<NewPending> = units
                .iter()
                .flat_map(|u| &u.lines)
                .enumerate()
                .filter(|(_, l)| !cur.round(l.2).is_zero())
                .map(|(i, (_, d, a))| NewPending {
                    key: format!("{key}/pending/{i}"),
                    description: d.clone(),
                    amount: cur.round(*a),
                    discountable: true,
                })
                .collect();
            if new_period.is_some() {
                // The new period's invoice is the next invoice: it carries the proration.
                let mut b = DocumentBuilder::new(cur);
                new_period_builder(&mut b)?;
                for p in &sub.pending {
                    b.line(
                        LineKind::Proration,
                        p.description.clone(),
                        p.amount,
                        p.discountable,
                    );
                }
                for p in &new_pending {
                    b.line(
                        LineKind::Proration,
                        p.description.clone(),
                        p.amount,
                        p.discountable,
                    );
                }
                let mut doc = finish(b, "period", at, new_period)?;
                doc.consumes_pending = sub.pending.iter().map(|p| p.id).collect();
                docs.push(doc);
                after.pending.clear();
            } else {
                after
                    .pending
                    .extend(new_pending.iter().enumerate().map(|(i, p)| PendingItem {
                        id: -1 - i as i64,
                        description: p.description.clone(),
                        amount: p.amount,
                        discountable: p.discountable,
                        kind: crate::core::document::LineKind::Pending,
                    }));
                outcome.pending = new_pending;
            }
        }
    }
    Ok(docs)
}

/// The subscription `id` of the account, if it exists and is active.
fn active_subscription<'a>(
    state: &'a AccountState,
    id: &SubscriptionId,
) -> Result<&'a Subscription, Refusal> {
    let sub = state
        .subscriptions
        .iter()
        .find(|s| &s.id == id)
        .ok_or_else(|| Refusal::UnknownSubscription(id.to_string()))?;
    if sub.status != SubscriptionStatus::Active {
        return Err(Refusal::Ended(sub.id.clone()));
    }
    Ok(sub)
}

/// Checks every dated operation makes: the subscription is active, billed, and `at` lies in
/// its current period and not before its last change.
pub(crate) fn dated_subscription<'a>(
    state: &'a AccountState,
    id: &SubscriptionId,
    at: NaiveDate,
) -> Result<(&'a Subscription, Period), Refusal> {
    let sub = active_subscription(state, id)?;
    let period = sub
        .current_period
        .ok_or_else(|| Refusal::NotBilledYet(sub.id.clone()))?;
    if !period.contains(at) {
        return Err(Refusal::OutsidePeriod { at, period });
    }
    if let Some(last) = sub.last_change_at.filter(|last| at < *last) {
        return Err(Refusal::BeforeLastChange { at, last });
    }
    Ok((sub, period))
}

/// A cancellation (or its undoing) to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOutcome {
    pub subscription: SubscriptionId,
    pub at: NaiveDate,
    /// When the subscription ends; None undoes a scheduled cancellation.
    pub cancel_at: Option<NaiveDate>,
    pub expected_version: i64,
}

/// Cancel at the end of the current period (every preset's rule), or undo a cancellation
/// that has not taken effect. A subscription not billed yet ends at its start.
pub fn plan_cancel(
    state: &AccountState,
    id: &SubscriptionId,
    at: NaiveDate,
    undo: bool,
) -> Result<CancelOutcome, Refusal> {
    let sub = active_subscription(state, id)?;
    let cancel_at = if undo {
        if sub.cancel_at.is_none() {
            return Err(Refusal::NothingToUndo(sub.id.clone()));
        }
        None
    } else {
        if let Some(c) = sub.cancel_at {
            return Err(Refusal::AlreadyCanceling {
                sub: sub.id.clone(),
                at: c,
            });
        }
        match sub.current_period {
            None => Some(sub.start),
            Some(period) if period.contains(at) || at < period.start => Some(period.end),
            Some(period) => return Err(Refusal::OutsidePeriod { at, period }),
        }
    };
    Ok(CancelOutcome {
        subscription: sub.id.clone(),
        at,
        cancel_at,
        expected_version: sub.version,
    })
}

/// The renewal a subscription in state `sub` will get at its next billing date.
pub(crate) fn preview_renewal(
    state: &AccountState,
    catalog: &Catalog,
    terms: Terms,
    sub: Subscription,
    balance: Decimal,
) -> Option<DraftDocument> {
    if sub.cancel_at.is_some_and(|c| c <= sub.next_bill_date) {
        return None;
    }
    let date = sub.next_bill_date;
    let preview = AccountState {
        account: state.account.clone(),
        balance,
        subscriptions: vec![sub],
    };
    close_account(&preview, catalog, terms, date)
        .ok()?
        .documents
        .into_iter()
        .next()
}
