//! Quote micro-benchmark: how many plan-change quotes the pure core prices per second on one
//! core (target ≥ 100,000). Each quote is the full computation `billrun quote` performs after
//! loading: classify, find the rule, prorate, build and settle documents, preview the next
//! renewal. Run: `cargo bench --bench quote`.

use billrun::core::billing::{AccountState, Terms};
use billrun::core::catalog::Catalog;
use billrun::core::change::{ChangeRequest, plan_change};
use billrun::core::domain::*;
use billrun::core::money::Currency;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let catalog = Catalog::from_toml_str(
        r#"
cycles = [{ code = "monthly30", days = 30 }]
[[plans]]
code = "starter"
rank = 1
prices.USD = { monthly30 = "29.00", annual = "290.00" }
[[plans]]
code = "professional"
rank = 2
prices.USD = { monthly30 = "59.00", annual = "590.00" }
"#,
    )
    .unwrap();
    let start: NaiveDate = "2026-01-01".parse().unwrap();
    let period = billrun::core::period::Period {
        start,
        end: "2026-01-31".parse().unwrap(),
    };
    let state = AccountState {
        account: Account {
            taxes: vec![
                TaxRate::new("GST", Decimal::new(5, 0)).unwrap(),
                TaxRate::new("QST", Decimal::new(9975, 3)).unwrap(),
            ],
            discount: Some(
                Discount::new(DiscountValue::Percent(Decimal::TEN), None, None).unwrap(),
            ),
            ..Account::new(
                AccountId::new("acme").unwrap(),
                "Acme",
                "billing@acme.example",
                Currency::new("USD").unwrap(),
            )
        },
        balance: Decimal::new(1000, 2),
        subscriptions: vec![Subscription {
            id: SubscriptionId::new("acme-1").unwrap(),
            account: AccountId::new("acme").unwrap(),
            policy: "hybrid_70_30".into(),
            cycle: "monthly30".into(),
            items: vec![Item {
                plan: "starter".into(),
                quantity: 3,
            }],
            discount: None,
            start,
            anchor: start,
            current_period: Some(period),
            next_bill_date: period.end,
            periods_billed: 1,
            status: SubscriptionStatus::Active,
            cancel_at: None,
            pending: vec![],
            last_change_at: None,
            version: 1,
            queued: vec![],
        }],
    };
    let requests: Vec<ChangeRequest> = (0..29)
        .map(|day| ChangeRequest {
            subscription: SubscriptionId::new("acme-1").unwrap(),
            target: if day % 2 == 0 {
                Target {
                    plan: Some("professional".into()),
                    ..Default::default()
                }
            } else {
                Target {
                    quantity: Some(5),
                    ..Default::default()
                }
            },
            at: start + chrono::Days::new(day),
        })
        .collect();

    // Warm up, then measure for about two seconds.
    for r in &requests {
        black_box(plan_change(&state, &catalog, Terms::default(), r).unwrap());
    }
    let began = Instant::now();
    let mut quotes = 0u64;
    while began.elapsed().as_secs_f64() < 2.0 {
        for r in &requests {
            black_box(plan_change(black_box(&state), &catalog, Terms::default(), r).unwrap());
            quotes += 1;
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{{\"quotes\": {quotes}, \"seconds\": {secs:.3}, \"quotes_per_second\": {:.0}}}",
        quotes as f64 / secs
    );
}
