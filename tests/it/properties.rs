//! Property tests of the billing core (no IO): random change sequences under each preset.
//!
//! A tiny in-memory model plays the store's part: it applies what `close_account` and
//! `plan_change` return. For any sequence, every document's lines sum to its totals and the
//! balance never goes negative; with 100% credit (`deferred`), what the customer pays over
//! the billed periods equals the day-prorated value of what they had, within one minor unit
//! per line.

use billrun::core::billing::{AccountState, Terms, close_account, items_amount};
use billrun::core::catalog::Catalog;
use billrun::core::change::{ChangeRequest, plan_change};
use billrun::core::document::{DocumentKind, DraftDocument, LineKind};
use billrun::core::domain::*;
use billrun::core::money::Currency;
use chrono::{Days, NaiveDate};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn catalog(prices: &[i64; 3]) -> Catalog {
    let mut src = String::from("cycles = [{ code = \"monthly30\", days = 30 }]\n");
    for (i, cents) in prices.iter().enumerate() {
        let monthly = Decimal::new(*cents, 2);
        src.push_str(&format!(
            "[[plans]]\ncode = \"p{i}\"\nrank = {i}\nprices.USD = {{ monthly = \"{monthly}\", monthly30 = \"{monthly}\", \
             quarterly = \"{}\", annual = \"{}\" }}\n",
            monthly * Decimal::from(3),
            monthly * Decimal::from(10)
        ));
    }
    Catalog::from_toml_str(&src).unwrap()
}

fn state(policy: &str, cycle: &str, start: NaiveDate, plan: usize, quantity: u32) -> AccountState {
    let id = SubscriptionId::new("s").unwrap();
    AccountState {
        account: Account::new(
            AccountId::new("a").unwrap(),
            "A",
            "a@x.example",
            Currency::new("USD").unwrap(),
        ),
        balance: Decimal::ZERO,
        subscriptions: vec![Subscription {
            id,
            account: AccountId::new("a").unwrap(),
            policy: policy.into(),
            cycle: cycle.into(),
            items: vec![Item {
                plan: format!("p{plan}"),
                quantity,
            }],
            discount: None,
            start,
            anchor: start,
            current_period: None,
            next_bill_date: start,
            periods_billed: 0,
            status: SubscriptionStatus::Active,
            cancel_at: None,
            pending: vec![],
            last_change_at: None,
            version: 0,
            queued: vec![],
        }],
    }
}

/// The store's part, in memory.
struct Model {
    state: AccountState,
    documents: Vec<DraftDocument>,
    next_pending: i64,
    /// (from date, price of one period of the state from then on, cycle)
    timeline: Vec<(NaiveDate, Decimal)>,
}

impl Model {
    fn close(&mut self, catalog: &Catalog, as_of: NaiveDate) -> Result<(), TestCaseError> {
        let out = close_account(&self.state, catalog, Terms::default(), as_of).unwrap();
        let sub = &mut self.state.subscriptions[0];
        for u in out.updates {
            sub.items = u.items;
            sub.cycle = u.cycle;
            sub.anchor = u.anchor;
            sub.current_period = u.current_period;
            sub.next_bill_date = u.next_bill_date;
            sub.periods_billed = u.periods_billed;
            sub.queued.retain(|q| !u.applied_changes.contains(&q.id));
            sub.version += 1;
        }
        for d in &out.documents {
            sub.pending.retain(|p| !d.consumes_pending.contains(&p.id));
        }
        self.documents.extend(out.documents);
        self.state.balance = out.balance_after;
        prop_assert!(!self.state.balance.is_sign_negative());
        Ok(())
    }

    fn change(
        &mut self,
        catalog: &Catalog,
        at: NaiveDate,
        target: Target,
    ) -> Result<(), TestCaseError> {
        let req = ChangeRequest {
            subscription: SubscriptionId::new("s").unwrap(),
            target,
            at,
        };
        let Ok(out) = plan_change(&self.state, catalog, Terms::default(), &req) else {
            return Ok(()); // refusals change nothing
        };
        let sub = &mut self.state.subscriptions[0];
        if let Some(c) = out.changed {
            sub.items = c.items;
            sub.cycle = c.cycle;
            sub.anchor = c.anchor;
            sub.current_period = Some(c.current_period);
            sub.next_bill_date = c.next_bill_date;
            sub.periods_billed = c.periods_billed;
        }
        if let Some(when) = out.queued_for {
            sub.queued = vec![QueuedChange {
                id: sub.version,
                effective_at: when,
                kind: out.kind.to_string(),
                target: out.target,
            }];
        }
        for d in &out.documents {
            sub.pending.retain(|p| !d.consumes_pending.contains(&p.id));
        }
        for p in out.pending {
            self.next_pending += 1;
            sub.pending.push(PendingItem {
                kind: billrun::core::document::LineKind::Pending,
                id: self.next_pending,
                description: p.description,
                amount: p.amount,
                discountable: true,
            });
        }
        sub.last_change_at = Some(at);
        sub.version += 1;
        let price = items_amount(
            catalog,
            Currency::new("USD").unwrap(),
            &sub.items,
            &sub.cycle,
        )
        .unwrap();
        self.timeline.push((at, price));
        self.documents.extend(out.documents);
        self.state.balance = out.balance_after;
        prop_assert!(!self.state.balance.is_sign_negative());
        Ok(())
    }
}

fn check_documents(docs: &[DraftDocument]) -> Result<(), TestCaseError> {
    for d in docs {
        let sum = |k: Option<LineKind>| -> Decimal {
            d.lines
                .iter()
                .filter(|l| match k {
                    Some(k) => l.kind == k,
                    None => !matches!(l.kind, LineKind::Discount | LineKind::Tax),
                })
                .map(|l| l.amount)
                .sum()
        };
        prop_assert_eq!(
            d.total,
            d.lines.iter().map(|l| l.amount).sum::<Decimal>(),
            "total = Σ lines: {:?}",
            d
        );
        prop_assert_eq!(d.subtotal, sum(None));
        prop_assert_eq!(d.discount, sum(Some(LineKind::Discount)));
        prop_assert_eq!(d.tax, sum(Some(LineKind::Tax)));
        match d.kind {
            DocumentKind::Invoice => {
                prop_assert!(!d.total.is_sign_negative() || d.total.is_zero());
                prop_assert!(!d.credit_applied.is_sign_negative() && d.credit_applied <= d.total);
                prop_assert_eq!(d.amount_due, d.total - d.credit_applied);
            }
            DocumentKind::CreditNote => prop_assert!(d.total.is_sign_negative()),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Step {
    Plan(usize),
    Quantity(u32),
    Cycle(&'static str),
}

fn step() -> impl Strategy<Value = (u64, Step)> {
    (
        1u64..45,
        prop_oneof![
            (0usize..3).prop_map(Step::Plan),
            (1u32..8).prop_map(Step::Quantity),
            prop_oneof![
                Just("monthly"),
                Just("monthly30"),
                Just("quarterly"),
                Just("annual")
            ]
            .prop_map(Step::Cycle),
        ],
    )
}

fn target(s: &Step) -> Target {
    match s {
        Step::Plan(p) => Target {
            plan: Some(format!("p{p}")),
            ..Default::default()
        },
        Step::Quantity(q) => Target {
            quantity: Some(*q),
            ..Default::default()
        },
        Step::Cycle(c) => Target {
            cycle: Some(c.to_string()),
            ..Default::default()
        },
    }
}

fn date(offset: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Days::new(offset)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any preset, any sequence of plan, seat and cycle changes.
    #[test]
    fn documents_add_up_and_balances_stay_non_negative(
        prices in [100i64..50_000, 100i64..50_000, 100i64..50_000],
        policy in prop_oneof![Just("term_recalc"), Just("deferred"), Just("hybrid_70_30"), Just("license")],
        cycle in prop_oneof![Just("monthly"), Just("monthly30"), Just("annual")],
        start in 0u64..60,
        steps in proptest::collection::vec(step(), 0..6),
    ) {
        let catalog = catalog(&prices);
        let mut m = Model { state: state(policy, cycle, date(start), 1, 2), documents: vec![], next_pending: 0, timeline: vec![] };
        let mut day = start;
        m.close(&catalog, date(day))?;
        for (gap, s) in &steps {
            day += gap;
            m.close(&catalog, date(day))?;
            m.change(&catalog, date(day), target(s))?;
        }
        let end = m.state.subscriptions[0].next_bill_date;
        m.close(&catalog, end)?;
        check_documents(&m.documents)?;
    }

    /// 100% credit, same cycle: paid = Σ over billed periods of the day-prorated value.
    #[test]
    fn deferred_customers_pay_the_prorated_value_of_what_they_had(
        prices in [100i64..50_000, 100i64..50_000, 100i64..50_000],
        cycle in prop_oneof![Just("monthly"), Just("monthly30"), Just("annual")],
        steps in proptest::collection::vec((1u64..45, prop_oneof![
            (0usize..3).prop_map(Step::Plan), (1u32..8).prop_map(Step::Quantity)]), 0..6),
    ) {
        let catalog = catalog(&prices);
        let usd = Currency::new("USD").unwrap();
        let mut m = Model { state: state("deferred", cycle, date(0), 1, 2), documents: vec![], next_pending: 0, timeline: vec![] };
        let initial = items_amount(&catalog, usd, &m.state.subscriptions[0].items, cycle).unwrap();
        m.timeline.push((date(0), initial));
        let mut day = 0;
        m.close(&catalog, date(0))?;
        for (gap, s) in &steps {
            day += gap;
            m.close(&catalog, date(day))?;
            m.change(&catalog, date(day), target(s))?;
        }
        // Bill the period holding the last change, then one more: its proration is on it.
        let end = m.state.subscriptions[0].next_bill_date;
        m.close(&catalog, end)?;
        check_documents(&m.documents)?;

        let price_at = |d: NaiveDate| m.timeline.iter().rev().find(|(from, _)| *from <= d).map(|x| x.1).unwrap();
        let mut value = Decimal::ZERO;
        for doc in m.documents.iter().filter(|d| d.key.starts_with("renewal/")) {
            let p = doc.period.unwrap();
            let mut d = p.start;
            while d < p.end {
                value += price_at(d) / Decimal::from(p.days());
                d = d.succ_opt().unwrap();
            }
        }
        let paid: Decimal = m.documents.iter().map(|d| d.total).sum();
        let lines = m.documents.iter().map(|d| d.lines.len()).sum::<usize>();
        let tolerance = Decimal::new(1, 2) * Decimal::from(lines);
        prop_assert!((paid - value).abs() <= tolerance,
            "paid {} vs prorated value {} (tolerance {})", paid, value.round_dp(4), tolerance);
    }
}
