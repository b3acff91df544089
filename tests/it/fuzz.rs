//! Fuzz-style property tests of every parser and of proration: whatever the input, no panic,
//! and a refusal is one clear error — an `Err` whose message is non-empty and on one line.
//!
//! Inputs are arbitrary strings, targeted generators (odd amounts, impossible and extreme
//! dates, hostile ids) and mutations of the valid fixtures (a line deleted, duplicated,
//! swapped for garbage, digits swapped). A mutation may still be valid; then it must load.
//! Proration and `plan_change` get dates from the whole range chrono supports, end before
//! start, and leap days.
//!
//! Each property runs `PROPTEST_CASES` cases (default 64 here); run longer with
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use billrun::config::Config;
use billrun::core::billing::{AccountState, Terms, close_account, items_amount};
use billrun::core::catalog::Catalog;
use billrun::core::change::{ChangeRequest, plan_change};
use billrun::core::document::{DocumentKind, DraftDocument};
use billrun::core::domain::*;
use billrun::core::money::{Currency, parse_amount};
use billrun::core::period::{CycleLength, Period};
use billrun::input::{self, ImportFile, parse_date};
use billrun::scenario::Scenario;
use chrono::{Datelike, Days, NaiveDate};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::Path;

/// The default configuration (which reads `PROPTEST_CASES`), with 64 cases unless it is set.
fn config() -> ProptestConfig {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default().cases
    } else {
        64
    };
    ProptestConfig {
        cases,
        // Regressions are kept in the code (the `known_*` tests), not in a file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One clear error: something to read, on one line.
fn one_clear_error(what: &str, input: &str, msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !msg.trim().is_empty(),
        "{what}: empty error for input {input:?}"
    );
    prop_assert!(
        !msg.contains('\n'),
        "{what}: error on several lines for input {input:?}: {msg:?}"
    );
    Ok(())
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(crate::common::fixtures().join(name)).unwrap()
}

// ---------------------------------------------------------------------------------------
// Generators

/// Text that looks like what it is fed to: TOML/JSON punctuation, digits, quotes, newlines,
/// and some non-ASCII.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\[\\]{}=\"',.:#a-z0-9_\\- \n\t\\\\é€]{0,80}",
    ]
}

/// How a valid file is broken.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Replace the value after the first `=` of a line.
    ReplaceValue(usize, String),
    /// Swap two digits of the file.
    SwapDigits(usize, usize),
    /// Insert a line of garbage.
    InsertLine(usize, String),
    /// Cut the file short.
    Truncate(usize),
}

fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_string()),
        Just("-1".to_string()),
        Just("\"-0\"".to_string()),
        Just("\"1e5\"".to_string()),
        Just("\"12.345\"".to_string()),
        Just("\"79228162514264337593543950336\"".to_string()),
        Just("\"2026-02-30\"".to_string()),
        Just("18446744073709551616".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("1.5".to_string()),
        Just("\"x\\ny\"".to_string()),
        "[ -~]{0,12}",
        any::<String>().prop_map(|s| format!("{s:?}")),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), garbage()).prop_map(|(i, g)| Mutation::ReplaceValue(i, g)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapDigits(a, b)),
        (any::<usize>(), texty()).prop_map(|(i, g)| Mutation::InsertLine(i, g)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(src: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = src.lines().map(String::from).collect();
    for m in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match m {
            Mutation::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Mutation::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::ReplaceValue(i, g) => {
                let l = &mut lines[i % n];
                if let Some(eq) = l.find('=') {
                    *l = format!("{}= {g}", &l[..eq]);
                }
            }
            Mutation::SwapDigits(a, b) => {
                let mut text = lines.join("\n").into_bytes();
                let digits: Vec<usize> = (0..text.len())
                    .filter(|&i| text[i].is_ascii_digit())
                    .collect();
                if !digits.is_empty() {
                    text.swap(digits[a % digits.len()], digits[b % digits.len()]);
                }
                lines = String::from_utf8(text)
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect();
            }
            Mutation::InsertLine(i, g) => lines.insert(i % (n + 1), g.clone()),
            Mutation::Truncate(i) => {
                let text = lines.join("\n");
                let mut cut = i % (text.len() + 1);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                lines = text[..cut].lines().map(String::from).collect();
            }
        }
    }
    lines.join("\n") + "\n"
}

/// Any date chrono can represent, weighted towards the interesting ones: around today, the
/// ends of the range, leap days and month ends.
fn any_date() -> impl Strategy<Value = NaiveDate> {
    let (min, max) = (
        NaiveDate::MIN.num_days_from_ce(),
        NaiveDate::MAX.num_days_from_ce(),
    );
    let day = |n: i32| NaiveDate::from_num_days_from_ce_opt(n).unwrap();
    prop_oneof![
        (min..=max).prop_map(day),
        (min..min + 800).prop_map(day),
        (max - 800..=max).prop_map(day),
        (day(739_000).num_days_from_ce()..day(740_500).num_days_from_ce()).prop_map(day),
        (-3000i32..3000).prop_map(|y| {
            // A leap day when there is one, else the month's end.
            NaiveDate::from_ymd_opt(y * 4, 2, 29)
                .unwrap_or_else(|| NaiveDate::from_ymd_opt(y * 4, 2, 28).unwrap())
        }),
        (1900i32..2200, 1u32..=12).prop_map(|(y, m)| {
            NaiveDate::from_ymd_opt(y, m, 1)
                .unwrap()
                .checked_add_months(chrono::Months::new(1))
                .unwrap()
                .pred_opt()
                .unwrap()
        }),
    ]
}

/// Date-like text: valid, impossible, extreme, malformed.
fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any_date().prop_map(|d| d.to_string()),
        Just("2026-02-30".to_string()),
        Just("2026-13-01".to_string()),
        Just("2026-00-10".to_string()),
        Just("2025-02-29".to_string()),
        Just("2028-02-29".to_string()),
        Just("+262142-12-31".to_string()),
        Just("-262143-01-01".to_string()),
        Just("+9999999-01-01".to_string()),
        Just("0000-01-01".to_string()),
        Just("2026-1-1".to_string()),
        Just(" 2026-03-01 ".to_string()),
        Just("2026-03-01T00:00:00Z".to_string()),
        Just(String::new()),
        "[0-9+\\- ]{0,14}",
        any::<String>(),
    ]
}

/// Amount-like text.
fn amount_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e5".to_string()),
        Just("1E5".to_string()),
        Just("-0".to_string()),
        Just("12.345".to_string()),
        Just("0.001".to_string()),
        Just("-1".to_string()),
        Just("79228162514264337593543950335".to_string()),
        Just("79228162514264337593543950336".to_string()),
        Just("0.0000000000000000000000000001".to_string()),
        Just("0.00000000000000000000000000001".to_string()),
        Just("1_000".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just(" 20.00 ".to_string()),
        Just("+5".to_string()),
        Just(".5".to_string()),
        Just("5.".to_string()),
        "-?[0-9]{0,32}(\\.[0-9]{0,32})?",
        any::<String>(),
    ]
}

fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9._@-]{0,10}",
        Just(String::new()),
        Just("x".repeat(65)),
        Just("a'; DROP TABLE accounts; --".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("a\nb".to_string()),
        any::<String>(),
    ]
}

fn email_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,6}@[a-z]{1,6}\\.example",
        Just("not-an-email".to_string()),
        Just("a@b@c".to_string()),
        Just("Name <a@x.example>".to_string()),
        Just("a@x.example\r\nBcc: evil@x.example".to_string()),
        any::<String>(),
    ]
}

fn currency_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("USD".to_string()),
        Just("EUR".to_string()),
        Just("JPY".to_string()),
        Just("KWD".to_string()),
        Just("usd".to_string()),
        Just("US".to_string()),
        Just("ÉUR".to_string()),
        "[A-Za-z]{0,4}",
        any::<String>(),
    ]
}

/// A JSON value for a field that should be a string: usually one, sometimes not.
fn string_or_not(s: impl Strategy<Value = String>) -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        8 => s.prop_map(serde_json::Value::String),
        1 => Just(serde_json::Value::Null),
        1 => any::<f64>().prop_map(|f| serde_json::json!(f)),
        1 => any::<i64>().prop_map(|i| serde_json::json!(i)),
    ]
}

fn quantity_json() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (0u32..5).prop_map(|q| serde_json::json!(q)),
        any::<i64>().prop_map(|q| serde_json::json!(q)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!(1e5)),
        Just(serde_json::json!("2")),
    ]
}

fn account_json() -> impl Strategy<Value = serde_json::Value> {
    (
        id_text(),
        string_or_not(email_text()),
        string_or_not(currency_text()),
        proptest::option::of(prop_oneof![
            Just("UTC".to_string()),
            Just("America/Toronto".to_string()),
            Just("Mars/Olympus".to_string()),
            any::<String>()
        ]),
        proptest::collection::vec(("[A-Z]{0,4}", amount_text()), 0..3),
        proptest::option::of((
            proptest::option::of(amount_text()),
            proptest::option::of(amount_text()),
            proptest::option::of(date_text()),
            proptest::option::of(0u32..3),
        )),
        proptest::option::of(amount_text()),
    )
        .prop_map(|(id, email, currency, timezone, taxes, discount, credit)| {
            let mut a = serde_json::json!({"id": id, "email": email, "currency": currency});
            if let Some(tz) = timezone {
                a["timezone"] = tz.into();
            }
            if !taxes.is_empty() {
                a["taxes"] = taxes
                    .into_iter()
                    .map(|(name, percent)| serde_json::json!({"name": name, "percent": percent}))
                    .collect();
            }
            if let Some((percent, amount, until, periods)) = discount {
                let mut d = serde_json::json!({});
                if let Some(p) = percent {
                    d["percent"] = p.into();
                }
                if let Some(x) = amount {
                    d["amount"] = x.into();
                }
                if let Some(u) = until {
                    d["until"] = u.into();
                }
                if let Some(n) = periods {
                    d["periods"] = n.into();
                }
                a["discount"] = d;
            }
            if let Some(c) = credit {
                a["credit"] = c.into();
            }
            a
        })
}

fn subscription_json() -> impl Strategy<Value = serde_json::Value> {
    let plan = prop_oneof![
        Just("basic".to_string()),
        Just("plus".to_string()),
        Just("seat".to_string()),
        Just("euro_only".to_string()),
        Just("platinum".to_string()),
        any::<String>(),
    ];
    (
        id_text(),
        prop_oneof![Just("a1".to_string()), id_text()],
        prop_oneof![
            Just("deferred".to_string()),
            Just("term_recalc".to_string()),
            Just("license".to_string()),
            Just("no_downgrades".to_string()),
            any::<String>()
        ],
        prop_oneof![
            Just("monthly".to_string()),
            Just("annual".to_string()),
            any::<String>()
        ],
        string_or_not(date_text()),
        proptest::collection::vec(
            (
                plan,
                proptest::option::of(quantity_json()),
                proptest::collection::vec(email_text(), 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(id, account, policy, cycle, start, items)| {
            let items: Vec<serde_json::Value> = items
                .into_iter()
                .map(|(plan, quantity, assigned)| {
                    let mut i = serde_json::json!({"plan": plan});
                    if let Some(q) = quantity {
                        i["quantity"] = q;
                    }
                    if !assigned.is_empty() {
                        i["assigned"] = assigned.into();
                    }
                    i
                })
                .collect();
            serde_json::json!({"id": id, "account": account, "policy": policy,
                "cycle": cycle, "start": start, "items": items})
        })
}

// ---------------------------------------------------------------------------------------
// Catalog

fn check_catalog(src: &str) -> Result<Option<Catalog>, TestCaseError> {
    match Catalog::from_toml_str(src) {
        Ok(c) => {
            // What loads is usable: every price is a non-negative amount of a known cycle.
            for plan in c.plans.values() {
                for per_cycle in plan.prices.values() {
                    for (cycle, price) in per_cycle {
                        prop_assert!(c.cycles.contains_key(cycle));
                        prop_assert!(!price.is_sign_negative());
                    }
                }
            }
            Ok(Some(c))
        }
        Err(e) => {
            one_clear_error("catalog", src, &e.to_string())?;
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn catalog_never_panics_on_arbitrary_text(src in texty()) {
        check_catalog(&src)?;
    }

    #[test]
    fn catalog_mutations_load_or_fail_with_one_clear_error(
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        let src = mutate(&fixture("catalog.toml"), &ms);
        check_catalog(&src)?;
    }

    #[test]
    fn catalog_with_arbitrary_prices_and_cycles(
        code in prop_oneof![Just("c1".to_string()), id_text()],
        months in proptest::option::of(any::<u32>()),
        days in proptest::option::of(any::<u32>()),
        price in amount_text(),
        currency in currency_text(),
        rank in any::<i64>(),
    ) {
        let src = format!(
            "cycles = [{{ code = {code:?}{}{} }}]\n[[plans]]\ncode = \"p\"\nrank = {rank}\nprices.{currency:?} = {{ {code:?} = {price:?} }}\n",
            months.map(|m| format!(", months = {m}")).unwrap_or_default(),
            days.map(|d| format!(", days = {d}")).unwrap_or_default(),
        );
        if let Some(c) = check_catalog(&src)? {
            // Loaded: the one price is exactly the text it came from.
            let cur = Currency::new(&currency).unwrap();
            prop_assert_eq!(c.price("p", cur, &code).unwrap(), parse_amount(&price).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configuration, file and environment

const CONFIG_KEYS: &[&str] = &[
    "database_url",
    "catalog",
    "timezone",
    "mail_dir",
    "smtp_url",
    "smtp_user",
    "smtp_password",
    "smtp_password_file",
    "mail_from",
    "finance_to",
    "invoice_prefix",
    "credit_note_prefix",
    "payment_terms_days",
    "retention_days",
    "chunk_size",
    "lease_seconds",
    "review_hours",
    "schedule",
    "http_addr",
];

const VALID_CONFIG: &str = r#"database_url = "sqlite://var/billrun.db"
catalog = "config/catalog.toml"
timezone = "America/Toronto"
mail_dir = "var/mail"
mail_from = "Billing <billing@billrun.test>"
finance_to = "finance@billrun.test"
invoice_prefix = "INV"
credit_note_prefix = "CN"
payment_terms_days = 14
retention_days = 30
chunk_size = 500
lease_seconds = 300
schedule = "0 0 0 * * *"
http_addr = "127.0.0.1:9464"
[modules]
reports = [{ table = "report_rows", account_column = "account_id" }]
[seller]
legal_name = "Example Software Ltd"
address = ["1 Example Street"]
country = "GB"
"#;

fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("4294967296".to_string()),
        Just(" 12 ".to_string()),
        Just("UTC".to_string()),
        Just("Mars/Olympus".to_string()),
        Just("postgres://u:pw@h/db".to_string()),
        Just("mysql://u:pw@h/db".to_string()),
        Just("smtp://h:25".to_string()),
        Just("smtp://u:pw@h:25".to_string()),
        Just("ftp://u:pw@h:25".to_string()),
        Just("0 0 0 * * *".to_string()),
        Just("61 99 25 32 13 8".to_string()),
        Just("* * * * *".to_string()),
        Just("0 0 0 L * *".to_string()),
        Just("0 0 0 31 2 *".to_string()),
        Just("0 0 0 * * 5#6".to_string()),
        "[0-9*/,#LW?-]{1,5}( [0-9*/,#LW?-]{1,5}){4,6}",
        Just("not an address".to_string()),
        Just("[::1]:99999".to_string()),
        Just("a@b".to_string()),
        "[ -~]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_file_and_environment_load_or_fail_with_one_clear_error(
        file in prop_oneof![
            proptest::collection::vec(mutation(), 0..4).prop_map(|ms| mutate(VALID_CONFIG, &ms)),
            texty(),
        ],
        env in proptest::collection::vec(
            (prop_oneof![
                proptest::sample::select(CONFIG_KEYS).prop_map(|k| format!("BILLRUN_{}", k.to_uppercase())),
                Just("BILLRUN_MODULES".to_string()),
                "BILLRUN_[A-Z_]{0,8}",
            ], config_value()),
            0..4,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("billrun.toml");
        std::fs::write(&path, &file).unwrap();
        let lookup = |k: &str| env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match Config::load(Some(&path), lookup) {
            Ok(c) => {
                // What loads is what was asked for: the environment wins over the file.
                if let Some(tz) = env.iter().rev().find(|(k, _)| k == "BILLRUN_TIMEZONE") {
                    prop_assert_eq!(&c.timezone, &tz.1);
                }
                prop_assert!((1..=100_000).contains(&c.chunk_size));
                prop_assert!(c.invoice_prefix != c.credit_note_prefix);
                for tables in c.modules.values() {
                    for t in tables {
                        prop_assert!(billrun::config::is_identifier(&t.table));
                        prop_assert!(billrun::config::is_identifier(&t.account_column));
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                one_clear_error("config", &file, &msg)?;
                // Never the password of a URL given where a URL belongs (a password typed
                // into another key is that key's value, and is shown as such).
                let elsewhere = env.iter().any(|(k, v)| {
                    v.contains("u:pw@") && k != "BILLRUN_DATABASE_URL" && k != "BILLRUN_SMTP_URL"
                });
                if !elsewhere {
                    prop_assert!(!msg.contains("u:pw@"), "{}", msg);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Import files

fn import(src: &str, catalog: &Catalog) -> Result<(), TestCaseError> {
    let raw: ImportFile = match serde_json::from_str(src) {
        Ok(r) => r,
        Err(e) => return one_clear_error("import JSON", src, &e.to_string()),
    };
    // One stored account the subscriptions may refer to, as `import` finds it in the store.
    let mut existing = BTreeMap::new();
    existing.insert(
        "a1".to_string(),
        Account::new(
            AccountId::new("a1").unwrap(),
            "A",
            "a@x.example",
            Currency::new("USD").unwrap(),
        ),
    );
    match input::validate(&raw.accounts, &raw.subscriptions, catalog, "UTC", &existing) {
        Ok(batch) => {
            prop_assert_eq!(batch.accounts.len(), raw.accounts.len());
            prop_assert_eq!(batch.subscriptions.len(), raw.subscriptions.len());
            for (a, r) in batch.accounts.iter().zip(&raw.accounts) {
                prop_assert_eq!(a.account.id.as_str(), r.id.as_str());
                prop_assert!(!a.opening_credit.is_sign_negative());
                prop_assert!(a.account.currency.is_whole_minor(a.opening_credit));
            }
            for (s, r) in batch.subscriptions.iter().zip(&raw.subscriptions) {
                prop_assert_eq!(Ok(s.subscription.start), parse_date(&r.start));
                prop_assert!(s.subscription.items.iter().all(|i| i.quantity >= 1));
            }
            Ok(())
        }
        Err(e) => one_clear_error("import", src, &e),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn import_never_panics_on_arbitrary_text(src in texty()) {
        import(&src, &Catalog::from_toml_str(&fixture("catalog.toml")).unwrap())?;
    }

    #[test]
    fn import_with_arbitrary_field_values_is_validated_or_refused_with_one_clear_error(
        accounts in proptest::collection::vec(account_json(), 0..3),
        subscriptions in proptest::collection::vec(subscription_json(), 0..3),
    ) {
        let src = serde_json::json!({"accounts": accounts, "subscriptions": subscriptions}).to_string();
        import(&src, &Catalog::from_toml_str(&fixture("catalog.toml")).unwrap())?;
    }

    #[test]
    fn import_mutations_of_a_valid_file(ms in proptest::collection::vec(mutation(), 1..4)) {
        let src = mutate(&fixture("lifecycle.json"), &ms);
        import(&src, &Catalog::from_toml_str(&fixture("catalog.toml")).unwrap())?;
    }
}

// ---------------------------------------------------------------------------------------
// Scenario files

fn scenario_source() -> String {
    std::fs::read_to_string(
        crate::common::repo().join("tests/scenarios/discount_tax_credit_catch_up.toml"),
    )
    .unwrap()
        + "[[actions]]\nat = \"2026-03-10\"\nchange = { subscription = \"qc-1\", quantity = 2 }\n\
           [[actions]]\nat = \"2026-04-10\"\ncancel = { subscription = \"qc-1\" }\n"
}

fn check_scenario(src: &str) -> Result<(), TestCaseError> {
    match Scenario::parse(src) {
        Ok(s) => {
            prop_assert!(s.actions.windows(2).all(|w| w[0].at <= w[1].at));
            Ok(())
        }
        Err(e) => one_clear_error("scenario", src, &e.to_string()),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn scenario_never_panics_on_arbitrary_text(src in texty()) {
        check_scenario(&src)?;
    }

    #[test]
    fn scenario_mutations_parse_or_fail_with_one_clear_error(
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        check_scenario(&mutate(&scenario_source(), &ms))?;
    }

    #[test]
    fn scenario_with_arbitrary_dates_and_actions(
        until in date_text(),
        at in date_text(),
        start in date_text(),
        action in prop_oneof![
            Just("change = { subscription = \"qc-1\", quantity = 0 }".to_string()),
            Just("change = { subscription = \"qc-1\" }".to_string()),
            Just("change = { subscription = \"qc-1\", cycle = \"weekly\", plan = 3 }".to_string()),
            Just("cancel = { subscription = \"nope\" }".to_string()),
            Just("cancel = { subscription = 1 }".to_string()),
            Just("licence = { subscription = \"qc-1\", op = \"steal\" }".to_string()),
            Just("licence = { subscription = \"qc-1\", op = \"buy\", plan = \"basic\", quantity = -1 }".to_string()),
            Just("cancel = { subscription = \"qc-1\" }\nuncancel = { subscription = \"qc-1\" }".to_string()),
            Just(String::new()),
        ],
    ) {
        let src = scenario_source()
            .replace("until = \"2026-05-20\"", &format!("until = {until:?}"))
            .replace("start = \"2026-01-31\"", &format!("start = {start:?}"))
            + &format!("[[actions]]\nat = {at:?}\n{action}\n");
        check_scenario(&src)?;
    }
}

// ---------------------------------------------------------------------------------------
// Dates and amounts as typed on the command line

proptest! {
    #![proptest_config(config())]

    #[test]
    fn dates_parse_exactly_or_fail_with_one_clear_error(s in date_text()) {
        match parse_date(&s) {
            Ok(d) => {
                // A date reads back as itself, and is a date of the calendar.
                prop_assert_eq!(parse_date(&d.to_string()), Ok(d));
                prop_assert!(d.year() >= 1 && d.year() <= 9999, "{} parsed from {:?}", d, s);
            }
            Err(e) => {
                one_clear_error("date", &s, &e)?;
                prop_assert!(e.contains("is not a date"), "{}", e);
            }
        }
    }

    #[test]
    fn amounts_parse_exactly_or_fail_with_one_clear_error(s in amount_text()) {
        match parse_amount(&s) {
            Ok(a) => {
                prop_assert!(!s.contains(['e', 'E']));
                prop_assert_eq!(parse_amount(&a.to_string()), Ok(a));
                // Exact: the text and the value have the same digits.
                prop_assert_eq!(
                    a.normalize(),
                    rust_decimal::Decimal::from_str_exact(s.trim()).unwrap().normalize()
                );
            }
            Err(e) => {
                one_clear_error("amount", &s, &e)?;
                prop_assert!(e.contains("is not a decimal amount") || e.contains("is too large"), "{}", e);
            }
        }
    }

    #[test]
    fn currencies_are_three_upper_case_letters(s in currency_text()) {
        match Currency::new(&s) {
            Ok(c) => {
                prop_assert_eq!(c.code(), s.as_str());
                prop_assert!(s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()));
            }
            Err(e) => one_clear_error("currency", &s, &e)?,
        }
    }

    /// Redaction hides the password of any URL with credentials, whatever the password's
    /// URL-safe characters are.
    #[test]
    fn redact_hides_url_passwords(
        scheme in prop_oneof![Just("postgres"), Just("postgresql"), Just("smtp"), Just("smtps")],
        user in "[a-z][a-z0-9_]{0,8}",
        password in "[A-Za-z0-9._~%!$&*+,;=-]{4,16}",
        host in "[a-z]{1,8}(\\.[a-z]{1,5})?(:[0-9]{1,5})?",
        around in "[ -~]{0,10}",
    ) {
        let text = format!("{around} {scheme}://{user}:{password}@{host}/db {around}");
        let shown = billrun::redact(&text);
        prop_assert!(!shown.contains(&format!(":{password}@")), "{}", shown);
        prop_assert!(shown.contains(&host), "{}", shown);
    }
}

// ---------------------------------------------------------------------------------------
// Proration

fn cycle_length() -> impl Strategy<Value = CycleLength> {
    prop_oneof![
        prop_oneof![Just(1u32), Just(3), Just(12)].prop_map(CycleLength::Months),
        (1u32..=3660).prop_map(CycleLength::Days),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any period, even one that ends before it starts, any date: the share is a fraction in
    /// [0, 1] and the two parts of an amount add up to it.
    #[test]
    fn proration_shares_stay_within_the_period(
        start in any_date(),
        end in any_date(),
        at in any_date(),
        cents in -100_000_000_000i64..100_000_000_000,
    ) {
        let p = Period { start, end };
        let s = p.remaining_share(at);
        prop_assert!(s.total >= 0);
        prop_assert!((0..=s.total).contains(&s.elapsed), "{:?} at {}: {:?}", p, at, s);
        prop_assert_eq!(s.elapsed + s.remaining, s.total);
        if end > start {
            prop_assert_eq!(s.total, p.days());
            if p.contains(at) {
                prop_assert_eq!(s.elapsed, (at - start).num_days());
            }
        }
        let amount = Decimal::new(cents, 2);
        let (rest, used) = (s.of_remaining(amount), s.of_elapsed(amount));
        prop_assert!(rest.abs() <= amount.abs() && used.abs() <= amount.abs());
        if s.total > 0 {
            prop_assert!((rest + used - amount).abs() <= Decimal::new(1, 20), "{} + {} != {}", rest, used, amount);
        } else {
            prop_assert!(rest.is_zero() && used.is_zero());
        }
    }

    /// Boundaries from any anchor: periods are never empty and never go back, up to the end
    /// of the calendar (where the last period ends at `NaiveDate::MAX`).
    #[test]
    fn cycle_periods_never_panic_and_move_forward(
        length in cycle_length(),
        anchor in any_date(),
        k in prop_oneof![0u32..40, any::<u32>()],
        later in prop_oneof![0u64..4000, any::<u64>()],
    ) {
        let b = length.boundary(anchor, k);
        prop_assert!(b >= anchor);
        let start = anchor.checked_add_days(Days::new(later)).unwrap_or(NaiveDate::MAX);
        if start < NaiveDate::MAX {
            let p = length.period_from(anchor, start);
            prop_assert_eq!(p.start, start);
            prop_assert!(p.end > p.start, "{:?} from {} of {}", p, anchor, length);
        }
        let to = anchor.checked_add_days(Days::new(later % 5000)).unwrap_or(NaiveDate::MAX);
        let (whole, partial) = length.whole_periods_between(anchor, to);
        prop_assert!(partial <= to.max(anchor));
        prop_assert_eq!(partial, length.boundary(anchor, whole));
    }
}

fn change_catalog() -> Catalog {
    Catalog::from_toml_str(
        "cycles = [{ code = \"monthly30\", days = 30 }, { code = \"decade\", days = 3660 }]\n\
         [[plans]]\ncode = \"p0\"\nrank = 0\nmodules = [\"a\", \"b\"]\n\
         prices.USD = { monthly = \"10.00\", monthly30 = \"10.00\", quarterly = \"27.00\", annual = \"99.99\", decade = \"900.00\" }\n\
         [[plans]]\ncode = \"p1\"\nrank = 1\nmodules = [\"a\"]\n\
         prices.USD = { monthly = \"25.50\", monthly30 = \"25.00\", quarterly = \"70.00\", annual = \"250.00\", decade = \"2000.00\" }\n",
    )
    .unwrap()
}

fn account_state(policy: &str, cycle: &str, start: NaiveDate, quantity: u32) -> AccountState {
    AccountState {
        account: Account {
            taxes: vec![TaxRate::new("VAT", Decimal::new(20, 0)).unwrap()],
            discount: Some(
                Discount::new(DiscountValue::Percent(Decimal::new(15, 0)), None, None).unwrap(),
            ),
            ..Account::new(
                AccountId::new("a").unwrap(),
                "A",
                "a@x.example",
                Currency::new("USD").unwrap(),
            )
        },
        balance: Decimal::new(1234, 2),
        subscriptions: vec![Subscription {
            id: SubscriptionId::new("s").unwrap(),
            account: AccountId::new("a").unwrap(),
            policy: policy.into(),
            cycle: cycle.into(),
            items: vec![Item {
                plan: "p0".into(),
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

fn documents_add_up(docs: &[DraftDocument]) -> Result<(), TestCaseError> {
    for d in docs {
        prop_assert_eq!(d.total, d.lines.iter().map(|l| l.amount).sum::<Decimal>());
        prop_assert_eq!(d.subtotal + d.discount + d.tax, d.total);
        if let Some(p) = d.period {
            prop_assert!(p.start < p.end, "{:?}", p);
        }
        match d.kind {
            DocumentKind::Invoice => {
                prop_assert!(!d.credit_applied.is_sign_negative() && d.credit_applied <= d.total);
                prop_assert_eq!(d.amount_due, d.total - d.credit_applied);
            }
            DocumentKind::CreditNote => prop_assert!(d.total.is_sign_negative()),
        }
    }
    Ok(())
}

const CYCLES: &[&str] = &["monthly", "monthly30", "quarterly", "annual", "decade"];

proptest! {
    #![proptest_config(config())]

    /// A subscription started on any date, billed once, then changed on any date (in its
    /// period or not) under any preset: no panic, a refusal or documents that add up.
    #[test]
    fn plan_change_on_any_date_never_panics(
        policy in prop_oneof![Just("term_recalc"), Just("deferred"), Just("hybrid_70_30"), Just("license")],
        cycle in proptest::sample::select(CYCLES),
        start in any_date(),
        offset in prop_oneof![0u64..4000, any::<u64>()],
        far in proptest::option::of(any_date()),
        target in prop_oneof![
            Just(Target { plan: Some("p1".into()), ..Default::default() }),
            Just(Target { plan: Some("p0".into()), ..Default::default() }),
            (0u32..5).prop_map(|q| Target { quantity: Some(q), ..Default::default() }),
            proptest::sample::select(CYCLES).prop_map(|c| Target { cycle: Some(c.into()), ..Default::default() }),
            Just(Target { plan: Some("nope".into()), ..Default::default() }),
            Just(Target::default()),
        ],
        payment_terms_days in prop_oneof![Just(0u32), 0u32..=365],
    ) {
        let catalog = change_catalog();
        let terms = Terms { payment_terms_days };
        let mut state = account_state(policy, cycle, start, 2);
        let first = match close_account(&state, &catalog, terms, start) {
            Ok(c) => c,
            Err(e) => return one_clear_error("close", &start.to_string(), &e.to_string()),
        };
        documents_add_up(&first.documents)?;
        prop_assert!(first.documents.len() <= 1);
        let Some(update) = first.updates.into_iter().next() else {
            return Err(TestCaseError::fail("a subscription due at its start was not billed"));
        };
        // No period starts on the last day of chrono's calendar, so nothing is billed there.
        let Some(period) = update.current_period else {
            prop_assert_eq!(start, NaiveDate::MAX);
            prop_assert!(first.documents.is_empty());
            return Ok(());
        };
        prop_assert!(period.start == start && period.end > start);
        let sub = &mut state.subscriptions[0];
        sub.current_period = update.current_period;
        sub.next_bill_date = update.next_bill_date;
        sub.periods_billed = update.periods_billed;
        state.balance = first.balance_after;

        let at = far.unwrap_or_else(|| start.checked_add_days(Days::new(offset)).unwrap_or(NaiveDate::MAX));
        let req = ChangeRequest { subscription: SubscriptionId::new("s").unwrap(), target: target.clone(), at };
        match plan_change(&state, &catalog, terms, &req) {
            Ok(out) => {
                prop_assert!(period.contains(at));
                documents_add_up(&out.documents)?;
                if let Some(r) = &out.next_renewal {
                    documents_add_up(std::slice::from_ref(r))?;
                }
                prop_assert!(!out.balance_after.is_sign_negative());
                if let Some(c) = &out.changed {
                    prop_assert!(c.current_period.start < c.current_period.end);
                    prop_assert!(c.current_period.start <= at || c.current_period.start == period.start);
                    prop_assert_eq!(c.next_bill_date, c.current_period.end);
                }
                if let Some(q) = out.queued_for {
                    prop_assert_eq!(q, period.end);
                }
                // No change is worth more than a period of the dearer state, before tax and
                // discount, in either direction.
                let old = items_amount(&catalog, state.account.currency, &state.subscriptions[0].items, cycle).unwrap();
                let bound = old.max(Decimal::from(2000 * 5)) * Decimal::from(3);
                for d in &out.documents {
                    prop_assert!(d.subtotal.abs() <= bound, "{:?}", d);
                }
            }
            Err(e) => {
                one_clear_error("change", &format!("{at}"), &e.to_string())?;
                if !period.contains(at) {
                    prop_assert!(e.to_string().contains("outside the current period"), "{}", e);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Money as large as the parsers accept — a catalog price, an opening credit, any
    /// quantity: validation refuses it with one clear error, or closing and changing work
    /// without an overflow.
    #[test]
    fn huge_amounts_are_refused_or_never_overflow(
        price in prop_oneof!["[1-9][0-9]{0,28}(\\.[0-9]{1,2})?", amount_text()],
        credit in prop_oneof!["[1-9][0-9]{0,28}", Just("0".to_string())],
        quantity in prop_oneof![1u32..5, any::<u32>().prop_map(|q| q.max(1))],
        cycle in proptest::sample::select(CYCLES),
        policy in prop_oneof![Just("term_recalc"), Just("deferred"), Just("hybrid_70_30")],
        day in 0u64..400,
    ) {
        let src = format!(
            "cycles = [{{ code = \"monthly30\", days = 30 }}, {{ code = \"decade\", days = 3660 }}]\n\
             [[plans]]\ncode = \"p0\"\nrank = 0\nprices.USD = {{ {} }}\n\
             [[plans]]\ncode = \"p1\"\nrank = 1\nprices.USD = {{ {} }}\n",
            CYCLES.iter().map(|c| format!("{c} = {price:?}")).collect::<Vec<_>>().join(", "),
            CYCLES.iter().map(|c| format!("{c} = \"1.00\"")).collect::<Vec<_>>().join(", "),
        );
        let Some(catalog) = check_catalog(&src)? else { return Ok(()) };
        let raw: ImportFile = serde_json::from_value(serde_json::json!({
            "accounts": [{"id": "a", "email": "a@x.example", "currency": "USD", "credit": credit,
                          "taxes": [{"name": "VAT", "percent": "20"}], "discount": {"percent": "15"}}],
            "subscriptions": [{"id": "s", "account": "a", "policy": policy, "cycle": cycle,
                               "start": "2026-01-31", "items": [{"plan": "p0", "quantity": quantity}]}],
        })).unwrap();
        let batch = match input::validate(&raw.accounts, &raw.subscriptions, &catalog, "UTC", &BTreeMap::new()) {
            Ok(b) => b,
            Err(e) => return one_clear_error("import", &credit, &e),
        };
        let mut state = AccountState {
            account: batch.accounts[0].account.clone(),
            balance: batch.accounts[0].opening_credit,
            subscriptions: vec![batch.subscriptions[0].subscription.clone()],
        };
        let start = state.subscriptions[0].start;
        let first = match close_account(&state, &catalog, Terms::default(), start) {
            Ok(c) => c,
            Err(e) => return one_clear_error("close", &price, &e.to_string()),
        };
        documents_add_up(&first.documents)?;
        let u = &first.updates[0];
        let sub = &mut state.subscriptions[0];
        sub.current_period = u.current_period;
        sub.next_bill_date = u.next_bill_date;
        sub.periods_billed = u.periods_billed;
        state.balance = first.balance_after;
        let at = start.checked_add_days(Days::new(day)).unwrap();
        for target in [
            Target { plan: Some("p1".into()), ..Default::default() },
            Target { quantity: Some(quantity.saturating_add(1)), ..Default::default() },
        ] {
            let req = ChangeRequest { subscription: SubscriptionId::new("s").unwrap(), target, at };
            match plan_change(&state, &catalog, Terms::default(), &req) {
                Ok(out) => documents_add_up(&out.documents)?,
                Err(e) => one_clear_error("change", &price, &e.to_string())?,
            }
        }
        let renewal = close_account(&state, &catalog, Terms::default(), state.subscriptions[0].next_bill_date);
        if let Ok(r) = renewal {
            documents_add_up(&r.documents)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Known cases, kept as plain tests: each once found (or guards) a panic.

#[test]
fn known_inputs_get_the_expected_error() {
    let catalog = Catalog::from_toml_str(&fixture("catalog.toml")).unwrap();
    // (import JSON, what the error says)
    let cases: &[(&str, &str)] = &[
        (
            r#"{"accounts": [{"id": "n1", "email": "a@x.example", "currency": "USD", "credit": "1e5"}]}"#,
            "\"1e5\" is not a decimal amount",
        ),
        (
            r#"{"accounts": [{"id": "n1", "email": "a@x.example", "currency": "USD", "credit": "12.345"}]}"#,
            "whole USD minor units",
        ),
        (
            r#"{"accounts": [{"id": "n1", "email": "a@x.example", "currency": "USD", "credit": "79228162514264337593543950336"}]}"#,
            "is not a decimal amount",
        ),
        (
            r#"{"accounts": [{"id": "n1", "email": "a@x.example", "currency": "usd"}]}"#,
            "is not an ISO 4217 code",
        ),
        (
            r#"{"accounts": [{"id": "n 1", "email": "a@x.example", "currency": "USD"}]}"#,
            "must be 1-64 letters",
        ),
        (
            r#"{"subscriptions": [{"id": "s9", "account": "a1", "policy": "deferred", "cycle": "monthly", "start": "2026-02-30", "items": [{"plan": "basic"}]}]}"#,
            "\"2026-02-30\" is not a date",
        ),
        (
            r#"{"subscriptions": [{"id": "s9", "account": "a1", "policy": "deferred", "cycle": "monthly", "start": "+262142-12-31", "items": [{"plan": "basic"}]}]}"#,
            "is not a date",
        ),
        (
            r#"{"subscriptions": [{"id": "s9", "account": "a1", "policy": "deferred", "cycle": "monthly", "start": "2026-01-01", "items": [{"plan": "basic", "quantity": 0}]}]}"#,
            "quantity must be at least 1",
        ),
    ];
    let mut existing = BTreeMap::new();
    existing.insert(
        "a1".to_string(),
        account_state("deferred", "monthly", NaiveDate::MIN, 1).account,
    );
    existing.get_mut("a1").unwrap().id = AccountId::new("a1").unwrap();
    for (src, want) in cases {
        let raw: ImportFile = serde_json::from_str(src).unwrap();
        let err = input::validate(
            &raw.accounts,
            &raw.subscriptions,
            &catalog,
            "UTC",
            &existing,
        )
        .expect_err(src);
        assert!(err.contains(want), "{src}: {err:?} lacks {want:?}");
    }
}

#[test]
fn a_period_ending_before_it_starts_has_no_share() {
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    let p = Period {
        start: d("2026-03-01"),
        end: d("2026-02-01"),
    };
    let s = p.remaining_share(d("2026-02-15"));
    assert_eq!((s.elapsed, s.remaining, s.total), (0, 0, 0));
    assert_eq!(s.of_remaining(Decimal::from(100)), Decimal::ZERO);
}

#[test]
fn the_last_period_of_the_calendar_ends_and_closing_there_terminates() {
    let catalog = change_catalog();
    for cycle in CYCLES {
        let start = NaiveDate::MAX.pred_opt().unwrap();
        let state = account_state("deferred", cycle, start, 1);
        // Closing on the last date of the calendar must finish, with or without payment terms.
        for days in [0, 30] {
            let r = close_account(
                &state,
                &catalog,
                Terms {
                    payment_terms_days: days,
                },
                NaiveDate::MAX,
            );
            if let Ok(c) = r {
                assert!(c.documents.len() <= 2, "{cycle}: {}", c.documents.len());
                documents_add_up(&c.documents).unwrap();
            }
        }
    }
}

#[test]
fn a_config_file_that_does_not_exist_is_one_clear_error() {
    let e = Config::load(Some(Path::new("/nonexistent/billrun.toml")), |_| None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cannot read /nonexistent/billrun.toml") && !msg.contains('\n'),
        "{msg}"
    );
}

/// Found by `plan_change_on_any_date_never_panics`: a subscription starting on the last day of
/// chrono's calendar has no period that could start there, so a close bills nothing.
#[test]
fn known_start_on_the_last_calendar_day_bills_nothing() {
    let catalog = change_catalog();
    let state = account_state("term_recalc", "monthly", NaiveDate::MAX, 2);
    let out = close_account(
        &state,
        &catalog,
        Terms {
            payment_terms_days: 0,
        },
        NaiveDate::MAX,
    )
    .expect("a close on the last calendar day is not an error");
    assert!(out.documents.is_empty());
    assert_eq!(out.updates.len(), 1);
    assert_eq!(out.updates[0].current_period, None);
}
