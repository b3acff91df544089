//! Sanity bounds and parked accounts through the real binary on each backend: an account whose
//! close is implausible (an invoice 76× its previous one, a 22-period catch-up) is parked —
//! nothing issued for it, every other account billed, the close, `billrun parked` and the
//! finance batch name it and why — until `billrun unpark` releases it for exactly one close.

use crate::common::{Backend, Sandbox, count, snapshot};
use serde_json::Value;

const FIRST: &str = include_str!("../fixtures/parking_first.json");

/// An account whose subscription started 22 months before the close: a catch-up of 22
/// invoices, more than the default 12.
const OLD: &str = include_str!("../fixtures/parking_old.json");

const BIG_REASON: &str =
    "invoice of s_big would be 2306.13 USD, 76.88× its previous 30.00 (limit 10×)";
const OLD_REASON: &str = "subscription s_old would get 22 documents in one run (limit 12)";

/// January billed for a_ok and a_big; then s_big goes from 1 to 50 seats (its February
/// renewal: 50 × 30.00 plus the prorated seats, 76× January's), and a_old arrives 22 months
/// behind.
fn sandbox(backend: Backend) -> Sandbox {
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    let first = sb.dir.path().join("first.json");
    std::fs::write(&first, FIRST).unwrap();
    sb.ok(&["import", first.to_str().unwrap()]);
    sb.ok(&["close", "--as-of", "2026-01-10"]);
    sb.ok(&["change", "s_big", "--quantity", "50", "--at", "2026-01-15"]);
    let old = sb.dir.path().join("old.json");
    std::fs::write(&old, OLD).unwrap();
    sb.ok(&["import", old.to_str().unwrap()]);
    sb
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (account, reason) of a JSON list of parked accounts.
fn parked_list(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["account"].as_str().unwrap().to_string(),
                p["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn expected_parks() -> Vec<(String, String)> {
    vec![
        ("a_big".to_string(), BIG_REASON.to_string()),
        ("a_old".to_string(), OLD_REASON.to_string()),
    ]
}

/// The text of a finance batch `.eml`, quoted-printable decoded.
fn finance_text(sb: &Sandbox, batch: i64) -> String {
    let raw = std::fs::read(sb.mail().join(format!("finance-batch-{batch:06}.eml"))).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'=' && i + 1 < raw.len() {
            if raw[i + 1] == b'\n' {
                i += 2;
                continue;
            }
            if raw[i + 1] == b'\r' && raw.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if let Some(hex) = raw.get(i + 1..i + 3)
                && let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn docs_of(sb: &Sandbox, account: &'static str) -> i64 {
    let sql: &'static str = match account {
        "a_ok" => "SELECT COUNT(*) FROM documents WHERE account_id = 'a_ok'",
        "a_big" => "SELECT COUNT(*) FROM documents WHERE account_id = 'a_big'",
        "a_old" => "SELECT COUNT(*) FROM documents WHERE account_id = 'a_old'",
        _ => unreachable!(),
    };
    count(&sb.db, sql).await
}

on_each_backend!(implausible_closes_are_parked:
    implausible_closes_are_parked_then_released_once_sqlite,
    implausible_closes_are_parked_then_released_once_postgres
);

async fn implausible_closes_are_parked(backend: Backend) {
    let sb = sandbox(backend);
    assert_eq!(
        (docs_of(&sb, "a_ok").await, docs_of(&sb, "a_big").await),
        (1, 1)
    );

    // The close: a_ok billed, the other two parked; exit 0, nothing failed.
    let out = sb.run(&["close", "--as-of", "2026-02-10", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(parked_list(&report["parked"]), expected_parks(), "{report}");
    assert_eq!(report["still_parked"], Value::Array(vec![]));
    assert_eq!(report["invoices"], 1, "{report}");
    let run = report["run"].as_i64().unwrap();
    for p in report["parked"].as_array().unwrap() {
        assert_eq!(p["status"], "parked");
        assert_eq!(p["run"].as_i64(), Some(run));
    }
    assert_eq!(docs_of(&sb, "a_ok").await, 2, "every other account goes on");
    assert_eq!(docs_of(&sb, "a_big").await, 1, "nothing issued for a_big");
    assert_eq!(docs_of(&sb, "a_old").await, 0, "nothing issued for a_old");
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'account_parked'"
        )
        .await,
        2
    );

    // `billrun parked` lists them with their reasons.
    let listed = json(&sb.ok(&["parked", "--json"]));
    assert_eq!(parked_list(&listed), expected_parks());
    let text = sb.ok(&["parked"]);
    assert!(
        text.contains("a_big") && text.contains(OLD_REASON) && text.contains("2 parked"),
        "{text}"
    );

    // The run's finance batch names them and why.
    let batch = report["finance_batch"].as_i64().expect("a finance batch");
    let eml = finance_text(&sb, batch);
    assert!(
        eml.contains("Accounts parked")
            && eml.contains(&format!("a_big: {BIG_REASON}"))
            && eml.contains(&format!("a_old: {OLD_REASON}")),
        "{eml}"
    );

    // A second close bills neither, says they are still parked, and tells finance nothing new.
    let again = sb.ok(&["close", "--as-of", "2026-02-10"]);
    assert!(
        again.contains("STILL PARKED: account a_big")
            && again.contains("STILL PARKED: account a_old")
            && again.contains("2 account(s) parked")
            && again.contains("billrun parked"),
        "{again}"
    );
    assert_eq!(
        (docs_of(&sb, "a_big").await, docs_of(&sb, "a_old").await),
        (1, 0)
    );

    // Refusals: unknown, not parked — clear error, non-zero exit, nothing written.
    let before = snapshot(&sb.db).await;
    for (account, want) in [
        ("nobody", "unknown account \"nobody\""),
        ("a_ok", "account a_ok is not parked"),
    ] {
        let out = sb.run(&["unpark", account]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(snapshot(&sb.db).await, before, "a refused unpark wrote");

    // Release a_big: the next close bills it once, without the sanity bounds.
    let released = sb.ok(&["unpark", "a_big"]);
    assert!(
        released.contains("Account a_big released")
            && released.contains("without the sanity bounds"),
        "{released}"
    );
    let out = sb.run(&["unpark", "a_big"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already released"),
        "{out:?}"
    );
    let listed = json(&sb.ok(&["parked", "--json"]));
    assert_eq!(listed[0]["account"], "a_big");
    assert_eq!(listed[0]["status"], "released");

    let report = json(&sb.ok(&["close", "--as-of", "2026-02-10", "--json"]));
    assert_eq!(report["invoices"], 1, "{report}");
    assert_eq!(report["documents"][0]["account"], "a_big");
    assert_eq!(report["documents"][0]["total"], "2306.13");
    assert_eq!(parked_list(&report["still_parked"]), expected_parks()[1..]);
    assert_eq!(docs_of(&sb, "a_big").await, 2);
    // The release is used up: only a_old stays listed.
    let listed = json(&sb.ok(&["parked", "--json"]));
    assert_eq!(parked_list(&listed), expected_parks()[1..]);
    let out = sb.run(&["unpark", "a_big"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("account a_big is not parked"),
        "{out:?}"
    );

    // Billed exactly once: closing again issues nothing more for it, and its next renewal
    // (the same 50 seats) is plausible against the big one.
    sb.ok(&["close", "--as-of", "2026-02-10"]);
    assert_eq!(docs_of(&sb, "a_big").await, 2);
    let report = json(&sb.ok(&["close", "--as-of", "2026-03-01", "--json"]));
    assert_eq!(parked_list(&report["parked"]), vec![], "{report}");
    assert_eq!(docs_of(&sb, "a_big").await, 3);
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM documents WHERE account_id = 'a_big' AND issued_at = '2026-02-01'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM audit_log WHERE action IN ('account_unparked', 'account_release_used') AND account_id = 'a_big'"
        )
        .await,
        2
    );
}

on_each_backend!(dry_run_reports_parks:
    dry_run_reports_parks_and_writes_nothing_sqlite,
    dry_run_reports_parks_and_writes_nothing_postgres
);

async fn dry_run_reports_parks(backend: Backend) {
    let sb = sandbox(backend);
    let before = snapshot(&sb.db).await;
    let text = sb.ok(&["close", "--as-of", "2026-02-10", "--dry-run"]);
    assert!(
        text.contains(&format!("WOULD PARK: account a_big: {BIG_REASON}"))
            && text.contains(&format!("WOULD PARK: account a_old: {OLD_REASON}"))
            && text.contains("2 account(s) would be parked")
            && text.contains("Would issue 1 invoice(s)"),
        "{text}"
    );
    let report = json(&sb.ok(&["close", "--as-of", "2026-02-10", "--dry-run", "--json"]));
    assert_eq!(parked_list(&report["parked"]), expected_parks());
    assert_eq!(report["parked"][0]["run"], Value::Null);
    assert_eq!(snapshot(&sb.db).await, before, "the dry run wrote");
    assert_eq!(sb.ok(&["parked"]).trim(), "No parked accounts.");
}

on_each_backend!(bounds_are_configurable:
    bounds_are_configurable_and_zero_disables_them_sqlite,
    bounds_are_configurable_and_zero_disables_them_postgres
);

/// With both limits off (here from the environment) nothing is parked; a tighter document
/// limit from the file parks a shorter catch-up.
async fn bounds_are_configurable(backend: Backend) {
    let sb = sandbox(backend);
    let off = [
        ("BILLRUN_SANITY_MAX_INCREASE".to_string(), "0".to_string()),
        (
            "BILLRUN_SANITY_MAX_DOCUMENTS_PER_SUBSCRIPTION".to_string(),
            "0".to_string(),
        ),
    ];
    let out = sb.run_with_env(&["close", "--as-of", "2026-02-10", "--json"], &off);
    assert!(out.status.success());
    let report = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(parked_list(&report["parked"]), vec![]);
    assert_eq!(report["invoices"], 1 + 1 + 22, "{report}");

    let sb = Sandbox::with_config_extra(backend, "sanity_max_documents_per_subscription = 2\n");
    let first = sb.dir.path().join("first.json");
    std::fs::write(&first, FIRST).unwrap();
    sb.ok(&["import", first.to_str().unwrap()]);
    let report = json(&sb.ok(&["close", "--as-of", "2026-03-01", "--json"]));
    assert_eq!(
        parked_list(&report["parked"]),
        vec![
            (
                "a_big".to_string(),
                "subscription s_big would get 3 documents in one run (limit 2)".to_string()
            ),
            (
                "a_ok".to_string(),
                "subscription s_ok would get 3 documents in one run (limit 2)".to_string()
            ),
        ]
    );
    let out = sb.run_with_env(
        &["parked"],
        &[("BILLRUN_SANITY_MAX_INCREASE".to_string(), "0.5".to_string())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sanity_max_increase"),
        "{err}"
    );
}
