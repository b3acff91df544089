//! Properties of corrections (SPEC §10) over random sequences of voids, credits and charges
//! run through the simulator: whatever the sequence, the credit notes against an invoice
//! never exceed it, each names an invoice that exists, balances never go negative and always
//! equal the sum of their ledger, and each series of numbers stays gapless.

use billrun::scenario::{Scenario, simulate};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Act {
    Void(u8),
    Credit(u8, u32),
    Charge(u32, bool),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        (1u8..4).prop_map(Act::Void),
        (1u8..4, 1u32..15_000).prop_map(|(n, c)| Act::Credit(n, c)),
        (1u32..15_000, any::<bool>()).prop_map(|(c, now)| Act::Charge(c, now)),
    ]
}

fn cents(c: u32) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

fn scenario(acts: &[(u64, Act)], credit: u32) -> String {
    let mut s = format!(
        "until = \"2026-04-02\"\n[catalog]\n[[catalog.plans]]\ncode = \"pro\"\nname = \"Pro\"\nrank = 1\n\
         prices.CAD = {{ monthly = \"99.99\" }}\n\
         [[accounts]]\nid = \"a\"\nemail = \"a@example.com\"\ncurrency = \"CAD\"\ncredit = \"{}\"\n\
         discount = {{ percent = \"10\" }}\n\
         taxes = [{{ name = \"GST\", percent = \"5\" }}, {{ name = \"QST\", percent = \"9.975\" }}]\n\
         [[subscriptions]]\nid = \"s\"\naccount = \"a\"\npolicy = \"deferred\"\ncycle = \"monthly\"\n\
         start = \"2026-01-01\"\nitems = [{{ plan = \"pro\" }}]\n",
        cents(credit)
    );
    for (day, a) in acts {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(*day);
        let body = match a {
            Act::Void(n) => format!("void = {{ document = \"INV-2026-{n:06}\", reason = \"r\" }}"),
            Act::Credit(n, c) => format!(
                "credit = {{ document = \"INV-2026-{n:06}\", amount = \"{}\", reason = \"r\" }}",
                cents(*c)
            ),
            Act::Charge(c, now) => format!(
                "charge = {{ account = \"a\", amount = \"{}\", description = \"x\", now = {now} }}",
                cents(*c)
            ),
        };
        s.push_str(&format!("[[actions]]\nat = \"{at}\"\n{body}\n"));
    }
    s
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn corrections_never_exceed_their_invoice_and_numbers_stay_gapless(
        acts in proptest::collection::vec((0u64..90, act()), 0..8),
        credit in 0u32..30_000,
    ) {
        let src = scenario(&acts, credit);
        let parsed = Scenario::parse(&src).unwrap();
        let out = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(simulate(&parsed))
            .unwrap();
        let nets: BTreeMap<String, Decimal> = out
            .documents
            .iter()
            .filter(|d| d.kind == "invoice")
            .map(|d| {
                let number = d.number.clone().unwrap();
                (number, dec(&d.subtotal) + dec(&d.discount))
            })
            .collect();
        let mut credited: BTreeMap<String, Decimal> = BTreeMap::new();
        for d in out.documents.iter().filter(|d| d.kind == "credit_note") {
            if let Some(inv) = &d.corrects {
                prop_assert!(nets.contains_key(inv), "{} corrects unknown {inv}", d.number.clone().unwrap());
                *credited.entry(inv.clone()).or_default() -= dec(&d.subtotal) + dec(&d.discount);
            }
        }
        for (inv, c) in &credited {
            prop_assert!(*c <= nets[inv], "{inv}: credited {c} above its net {}\n{src}", nets[inv]);
        }
        for (account, b) in &out.balances {
            prop_assert!(!dec(b).is_sign_negative(), "balance {b}\n{src}");
            let ledger = out.ledger_sums.get(account).map(|s| dec(s));
            prop_assert_eq!(ledger, Some(dec(b)), "the ledger of {} is its balance\n{}", account, src);
        }
        for prefix in ["INV-2026-", "CN-2026-"] {
            let mut ns: Vec<u32> = out
                .documents
                .iter()
                .filter_map(|d| d.number.as_deref()?.strip_prefix(prefix)?.parse().ok())
                .collect();
            ns.sort();
            let want: Vec<u32> = (1..=ns.len() as u32).collect();
            prop_assert_eq!(ns, want, "{}", prefix);
        }
    }
}
