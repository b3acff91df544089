//! Corrections through the real binary on each backend (SPEC §10): `void` and `credit` issue a
//! credit note naming the invoice it corrects and why, move the balance, write the audit log,
//! and refuse what the rules refuse with one line and nothing written.

use crate::common::{Backend, Sandbox, count, fixtures, snapshot};
use serde_json::Value;

fn sandbox(backend: Backend) -> Sandbox {
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    sb.ok(&[
        "import",
        fixtures().join("three_monthly.json").to_str().unwrap(),
    ]);
    sb.ok(&["close", "--as-of", "2026-01-01"]);
    sb
}

/// The number and total of `account`'s first invoice.
fn invoice_of(sb: &Sandbox, account: &str) -> (String, String) {
    let docs: Value =
        serde_json::from_str(&sb.ok(&["invoices", "--account", account, "--json"])).unwrap();
    let d = &docs.as_array().unwrap()[0];
    (
        d["number"].as_str().unwrap().to_string(),
        d["total"].as_str().unwrap().to_string(),
    )
}

fn balance(sb: &Sandbox, account: &str) -> String {
    let b: Value = serde_json::from_str(&sb.ok(&["balance", account, "--json"])).unwrap();
    b["balance"].as_str().unwrap().to_string()
}

/// A refused command: exit 1, one line naming why, nothing written.
async fn refused(sb: &Sandbox, args: &[&str], why: &str) {
    let before = snapshot(&sb.db).await;
    let out = sb.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(why), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(snapshot(&sb.db).await, before, "{args:?} wrote something");
}

on_each_backend!(void_and_credit:
    void_and_credit_issue_credit_notes_that_name_the_invoice_sqlite,
    void_and_credit_issue_credit_notes_that_name_the_invoice_postgres
);

async fn void_and_credit(backend: Backend) {
    let sb = sandbox(backend);
    // a2: Plus at 50.00 with VAT 20% → 60.00.
    let (inv, total) = invoice_of(&sb, "a2");
    assert_eq!(total, "60.00");
    let cn: Value = serde_json::from_str(&sb.ok(&[
        "void",
        &inv,
        "--reason",
        "wrong plan",
        "--at",
        "2026-01-05",
        "--json",
    ]))
    .unwrap();
    assert_eq!(cn["kind"], "credit_note");
    assert_eq!(cn["corrects"].as_str(), Some(inv.as_str()));
    assert_eq!(cn["reason"], "wrong plan");
    assert_eq!(cn["total"], "-60.00");
    assert_eq!(cn["issued_at"], "2026-01-05");
    let lines: Vec<&str> = cn["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["-50.00", "-10.00"], "every line negated");
    assert_eq!(balance(&sb, "a2"), "60.00");
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'void'"
        )
        .await,
        1
    );
    // The credit note went to the customer, and the invoice shows it.
    let number = cn["number"].as_str().unwrap();
    assert!(
        sb.emails().iter().any(|e| e.starts_with(number)),
        "{:?}",
        sb.emails()
    );
    let shown = sb.ok(&["invoice", number]);
    assert!(
        shown.contains(&format!("Corrects invoice: {inv}")),
        "{shown}"
    );
    assert!(shown.contains("Reason: wrong plan"), "{shown}");

    refused(&sb, &["void", &inv, "--reason", "again"], "already voided").await;
    refused(
        &sb,
        &["credit", &inv, "--amount", "1.00", "--reason", "x"],
        "already voided",
    )
    .await;
    refused(&sb, &["void", number, "--reason", "x"], "is a credit note").await;
    refused(
        &sb,
        &["void", "INV-2099-000001", "--reason", "x"],
        "no document numbered",
    )
    .await;

    // a1: Basic at 30.00, no tax. A partial credit, then one too many.
    let (inv, total) = invoice_of(&sb, "a1");
    assert_eq!(total, "30.00");
    refused(
        &sb,
        &["credit", &inv, "--amount", "30.01", "--reason", "outage"],
        "above its net 30.00",
    )
    .await;
    refused(
        &sb,
        &["credit", &inv, "--amount", "0", "--reason", "x"],
        "above zero",
    )
    .await;
    let cn: Value = serde_json::from_str(&sb.ok(&[
        "credit", &inv, "--amount", "12.50", "--reason", "outage", "--json",
    ]))
    .unwrap();
    assert_eq!(cn["total"], "-12.50");
    assert_eq!(cn["lines"][0]["description"], "Credit: outage");
    assert_eq!(balance(&sb, "a1"), "12.50");
    refused(
        &sb,
        &["void", &inv, "--reason", "x"],
        "credit the rest instead",
    )
    .await;
    refused(
        &sb,
        &["credit", &inv, "--amount", "17.51", "--reason", "more"],
        "to 30.01, above its net 30.00",
    )
    .await;
    sb.ok(&["credit", &inv, "--amount", "17.50", "--reason", "the rest"]);
    let audit: Value =
        serde_json::from_str(&sb.ok(&["audit", "--account", "a1", "--json"])).unwrap();
    let reasons: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credit")
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["outage", "the rest"]);
    let actor = audit.as_array().unwrap().last().unwrap()["actor"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !actor.is_empty() && actor != "billrun",
        "the OS user, not {actor:?}"
    );
    // Cancellations name who asked too.
    sb.ok(&["cancel", "s3", "--at", "2026-01-20"]);
    let a3: Value = serde_json::from_str(&sb.ok(&["audit", "--account", "a3", "--json"])).unwrap();
    let cancel = a3
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "cancel")
        .expect("the cancellation is in the audit log");
    assert_eq!(cancel["actor"].as_str(), Some(actor.as_str()));
    let all: Value = serde_json::from_str(&sb.ok(&["audit", "--json"])).unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "void" && e["account"] == "a2")
    );
    assert_eq!(balance(&sb, "a1"), "30.00");
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'credit'"
        )
        .await,
        2
    );
}

on_each_backend!(charges:
    one_off_charges_wait_for_the_next_invoice_or_are_invoiced_now_sqlite,
    one_off_charges_wait_for_the_next_invoice_or_are_invoiced_now_postgres
);

async fn charges(backend: Backend) {
    let sb = sandbox(backend);
    let later: Value = serde_json::from_str(&sb.ok(&[
        "charge",
        "a2",
        "--amount",
        "25.00",
        "--description",
        "Onboarding",
        "--json",
    ]))
    .unwrap();
    assert_eq!(later["charged"], "on_next_invoice");
    assert_eq!(later["subscription"], "s2");
    let now: Value = serde_json::from_str(&sb.ok(&[
        "charge",
        "a2",
        "--amount",
        "10.00",
        "--description",
        "Setup",
        "--now",
        "--at",
        "2026-01-03",
        "--json",
    ]))
    .unwrap();
    assert_eq!(now["charged"], "invoiced");
    // VAT 20% on 10.00, nothing discounted.
    assert_eq!(now["invoice"]["total"], "12.00");
    assert_eq!(now["invoice"]["issued_at"], "2026-01-03");
    refused(
        &sb,
        &["charge", "zz", "--amount", "1.00", "--description", "x"],
        "unknown account",
    )
    .await;
    refused(
        &sb,
        &["charge", "a2", "--amount", "0", "--description", "x"],
        "above zero",
    )
    .await;
    refused(
        &sb,
        &[
            "charge",
            "a2",
            "--amount",
            "1.00",
            "--description",
            "x",
            "--subscription",
            "s1",
        ],
        "has no subscription \"s1\"",
    )
    .await;
    // February's renewal of s2 carries the waiting charge, taxed: (50.00 + 25.00) × 1.2.
    sb.ok(&["close", "--as-of", "2026-02-01"]);
    let runs: Value = serde_json::from_str(&sb.ok(&["runs", "--json"])).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["as_of"], "2026-02-01", "newest first");
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["documents"], 3);
    assert_eq!(
        (
            runs[0]["emails_sent"].as_i64(),
            runs[0]["emails_waiting"].as_i64()
        ),
        (Some(3), Some(0))
    );
    assert!(runs[1]["finance_batch"].is_i64());
    assert!(sb.ok(&["runs"]).contains("completed"));
    let docs: Value =
        serde_json::from_str(&sb.ok(&["invoices", "--account", "a2", "--json"])).unwrap();
    let feb = docs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["issued_at"] == "2026-02-01")
        .unwrap();
    assert_eq!(feb["total"], "90.00", "{feb}");
    assert!(
        feb["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["description"] == "Onboarding")
    );
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'charge'"
        )
        .await,
        2
    );
}

on_each_backend!(review_window:
    the_review_window_holds_customer_emails_until_released_sqlite,
    the_review_window_holds_customer_emails_until_released_postgres
);

async fn review_window(backend: Backend) {
    let sb = Sandbox::with_config_extra(backend, "review_hours = 24");
    sb.ok(&["migrate"]);
    sb.ok(&[
        "import",
        fixtures().join("three_monthly.json").to_str().unwrap(),
    ]);
    let out = sb.ok(&["close", "--as-of", "2026-01-01"]);
    assert!(out.contains("3 customer email(s) held for review"), "{out}");
    // The finance batch went at once; no customer email did.
    let emails = sb.emails();
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert!(emails[0].starts_with("finance-batch"), "{emails:?}");
    // Not even when an operator retries everything.
    let out = sb.ok(&["send", "--retry-now"]);
    assert!(out.contains("held for review"), "{out}");
    assert_eq!(sb.emails().len(), 1);
    let runs: Value = serde_json::from_str(&sb.ok(&["runs", "--json"])).unwrap();
    assert_eq!(runs[0]["emails_held"], 3, "{runs}");

    // An operator holds the run, voids a2's invoice while it waits, then releases the run.
    assert!(sb.ok(&["hold", "1"]).contains("Held 3"));
    let (voided, _) = invoice_of(&sb, "a2");
    let cn: Value =
        serde_json::from_str(&sb.ok(&["void", &voided, "--reason", "wrong plan", "--json"]))
            .unwrap();
    let cn = cn["number"].as_str().unwrap().to_string();
    assert_eq!(
        sb.emails().len(),
        1,
        "the credit note of a withdrawn invoice waits too"
    );
    assert!(sb.ok(&["release", "1"]).contains("Released 2"));
    let emails = sb.emails();
    assert_eq!(emails.len(), 3, "{emails:?}");
    assert!(
        !emails
            .iter()
            .any(|e| e.starts_with(&voided) || e.starts_with(&cn)),
        "a voided invoice or its credit note reached the customer: {emails:?}"
    );
    refused(&sb, &["release", "9"], "no run 9").await;
    let audit: Value = serde_json::from_str(&sb.ok(&["audit", "--json"])).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| ["hold", "release", "void"].contains(a))
        .collect();
    assert_eq!(actions, ["hold", "void", "release"]);
}

on_each_backend!(two_releases:
    two_workers_releasing_one_run_send_each_email_once_sqlite,
    two_workers_releasing_one_run_send_each_email_once_postgres
);

async fn two_releases(backend: Backend) {
    let sb = Sandbox::with_config_extra(backend, "review_hours = 24");
    sb.ok(&["migrate"]);
    sb.ok(&[
        "import",
        fixtures().join("three_monthly.json").to_str().unwrap(),
    ]);
    sb.ok(&["close", "--as-of", "2026-01-01"]);
    let children: Vec<_> = (0..2)
        .map(|_| {
            sb.command(&["release", "1"], &[])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let sent = count(
        &sb.db,
        "SELECT COUNT(*) FROM outbox WHERE kind = 'document' AND status = 'sent' AND attempts = 1",
    )
    .await;
    let more = count(&sb.db, "SELECT COUNT(*) FROM outbox WHERE attempts > 1").await;
    assert_eq!(
        (sent, more),
        (3, 0),
        "each customer email sent exactly once"
    );
}
