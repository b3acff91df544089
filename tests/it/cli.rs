//! The `billrun` binary end to end on each backend (a SQLite file, a PostgreSQL database):
//! close, dry run, idempotency, emails, and bad input.

use crate::common::{Backend, Sandbox, count, fixtures, snapshot};
use serde::Deserialize;
use std::collections::BTreeMap;

fn import_three(sb: &Sandbox) {
    let file = fixtures().join("three_monthly.json");
    sb.ok(&["import", file.to_str().unwrap()]);
}

on_each_backend!(close_twice:
    close_twice_issues_each_document_once_and_dry_run_writes_nothing_sqlite,
    close_twice_issues_each_document_once_and_dry_run_writes_nothing_postgres
);

async fn close_twice(backend: Backend) {
    let sb = Sandbox::new(backend);
    import_three(&sb);
    let before = snapshot(&sb.db).await;

    let dry = sb.ok(&["close", "--as-of", "2026-04-15", "--dry-run"]);
    assert!(dry.contains("Would issue 12 invoice(s)"), "{dry}");
    assert_eq!(
        snapshot(&sb.db).await,
        before,
        "a dry run wrote to the database"
    );
    assert!(sb.emails().is_empty(), "a dry run wrote emails");

    let first = sb.ok(&["close", "--as-of", "2026-04-15"]);
    assert!(first.contains("Issued 12 invoice(s)"), "{first}");
    let second = sb.ok(&["close", "--as-of", "2026-04-15"]);
    assert!(second.contains("Issued 0 invoice(s)"), "{second}");

    let listing: Vec<serde_json::Value> =
        serde_json::from_str(&sb.ok(&["invoices", "--json"])).unwrap();
    let numbers: Vec<String> = listing
        .iter()
        .map(|d| d["number"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=12).map(|n| format!("INV-2026-{n:06}")).collect();
    assert_eq!(numbers, expected, "numbers must be gapless");

    // Four periods per subscription: Jan, Feb, Mar, Apr 1.
    let mut per_sub: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &listing {
        per_sub
            .entry(d["subscription"].as_str().unwrap().into())
            .or_default()
            .push(d["period_start"].as_str().unwrap().into());
    }
    for (sub, starts) in &per_sub {
        assert_eq!(
            starts,
            &["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"],
            "{sub}"
        );
    }

    let emails = sb.emails();
    assert_eq!(
        emails.len(),
        13,
        "12 customer emails + 1 finance batch: {emails:?}"
    );
    assert_eq!(
        emails
            .iter()
            .filter(|e| e.starts_with("finance-batch-"))
            .count(),
        1
    );
    assert_eq!(
        count(&sb.db, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await,
        13
    );

    // a3 had 45.00 of opening credit: 60.00 + 15.00 applied, then nothing left.
    let bal: serde_json::Value =
        serde_json::from_str(&sb.ok(&["balance", "a3", "--json"])).unwrap();
    assert_eq!(bal["balance"], "0.00");
    let a3: Vec<_> = listing.iter().filter(|d| d["account"] == "a3").collect();
    assert_eq!(a3[0]["amount_due"], "15.00");
    assert_eq!(a3[1]["amount_due"], "60.00");

    // The customer email carries text and HTML and a Message-ID from the document number.
    let eml = std::fs::read_to_string(sb.mail().join("INV-2026-000001.eml")).unwrap();
    assert!(
        eml.contains("Message-ID: <INV-2026-000001@billrun.test>"),
        "{eml}"
    );
    assert!(eml.contains("text/plain") && eml.contains("text/html"));
    let batch_file = emails
        .iter()
        .find(|e| e.starts_with("finance-batch-"))
        .unwrap();
    let batch = std::fs::read_to_string(sb.mail().join(batch_file)).unwrap();
    assert!(
        batch.contains("text/csv"),
        "finance batch must carry the CSV"
    );
    assert!(batch.contains("To: finance@billrun.test"), "{batch}");
}

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    error: String,
}

on_each_backend!(bad_input:
    bad_input_gets_one_clear_error_and_changes_nothing_sqlite,
    bad_input_gets_one_clear_error_and_changes_nothing_postgres
);

async fn bad_input(backend: Backend) {
    let bad = fixtures().join("bad");
    let cases: Cases =
        toml::from_str(&std::fs::read_to_string(bad.join("cases.toml")).unwrap()).unwrap();
    let sb = Sandbox::new(backend);
    import_three(&sb);
    sb.ok(&["import", fixtures().join("refusals.json").to_str().unwrap()]);
    sb.ok(&["close", "--as-of", "2026-02-01"]);
    sb.ok(&["change", "s3", "--quantity", "3", "--at", "2026-02-10"]);
    sb.ok(&["cancel", "r1-strict", "--at", "2026-02-10"]);
    let before = snapshot(&sb.db).await;
    let mail_before = sb.emails();

    let mut failures = Vec::new();
    for case in &cases.case {
        let sub = |s: &String| s.replace("{bad}", bad.to_str().unwrap());
        let args: Vec<String> = case.args.iter().map(sub).collect();
        let env: Vec<(String, String)> =
            case.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
        let out = sb.run_with_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first_line = stderr.lines().next().unwrap_or("");
        if out.status.success() {
            failures.push(format!("{}: exited 0", case.name));
        } else if !first_line.contains(&case.error) {
            failures.push(format!(
                "{}: error line {first_line:?} lacks {:?}",
                case.name, case.error
            ));
        }
        if snapshot(&sb.db).await != before {
            failures.push(format!("{}: the database changed", case.name));
        }
        if sb.emails() != mail_before {
            failures.push(format!("{}: the mail folder changed", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

on_each_backend!(quote:
    quote_shows_due_now_and_next_renewal_and_writes_nothing_sqlite,
    quote_shows_due_now_and_next_renewal_and_writes_nothing_postgres
);

async fn quote(backend: Backend) {
    let sb = Sandbox::with_catalog(backend, &fixtures().join("g07/catalog.toml"));
    sb.ok(&["import", fixtures().join("g07/data.json").to_str().unwrap()]);
    sb.ok(&["close", "--as-of", "2026-01-01"]);
    let before = snapshot(&sb.db).await;
    let emails = sb.emails();

    let quote: serde_json::Value = serde_json::from_str(&sb.ok(&[
        "quote",
        "g07-s",
        "--plan",
        "professional",
        "--at",
        "2026-01-16",
        "--json",
    ]))
    .unwrap();
    assert_eq!(quote["kind"], "tier_upgrade");
    assert_eq!(quote["due_now"], "15.00");
    assert_eq!(quote["next_renewal"]["date"], "2026-01-31");
    assert_eq!(quote["next_renewal"]["total"], "59.00");
    let lines: Vec<&str> = quote["documents"][0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["-14.50", "29.50"]);
    let human = sb.ok(&[
        "quote",
        "g07-s",
        "--plan",
        "professional",
        "--at",
        "2026-01-16",
    ]);
    assert!(
        human.contains("Due now:             15.00 USD") && human.contains("2026-01-31, 59.00 USD"),
        "{human}"
    );
    assert_eq!(
        snapshot(&sb.db).await,
        before,
        "a quote wrote to the database"
    );
    assert_eq!(sb.emails(), emails, "a quote sent email");

    // The change itself issues exactly what was quoted.
    let change: serde_json::Value = serde_json::from_str(&sb.ok(&[
        "change",
        "g07-s",
        "--plan",
        "professional",
        "--at",
        "2026-01-16",
        "--json",
    ]))
    .unwrap();
    assert_eq!(change["due_now"], "15.00");
    assert_eq!(change["documents"][0]["number"], "INV-2026-000002");
    assert!(sb.emails().contains(&"INV-2026-000002.eml".to_string()));
}
