//! kill -9 at random moments of a real `billrun close`, then let a run finish: every document
//! is issued exactly once, numbers stay gapless, balances reconcile, every document has one
//! outbox message, and the result is the one an uninterrupted close of the same data gives.
//! Runs the real binary on a real SQLite file and on a real PostgreSQL database.
//!
//! The data (a thousand subscriptions by default in USD and EUR, monthly and annual, with taxes,
//! discounts and opening credit) and the kill points come from a seeded RNG. A kill point is
//! a random amount of progress (documents committed + messages sent), so kills land in the
//! chunk commits as well as in the email delivery that follows them.
//!
//! Knobs (environment of the test process):
//! - `BILLRUN_CRASH_SUBSCRIPTIONS` (default 1000): how many subscriptions;
//! - `BILLRUN_CRASH_KILLS` (default 3): how many runs are killed;
//! - `BILLRUN_CRASH_SEED` (default: a fresh one, printed): replays the data and kill points;
//! - `BILLRUN_CRASH_CHUNK` (default 20): accounts per chunk (`BILLRUN_CHUNK_SIZE`).
//!
//! `tests/crash-at-scale.sh` runs it at 30,000 subscriptions against a release binary.

use crate::common::books::{
    Books, Rng, check_books, check_finished, env_number, number, seed_from_env, text_rows,
};
use crate::common::{Backend, Sandbox};
use chrono::{Months, NaiveDate};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

const AS_OF: &str = "2026-04-10";

/// Claims of a killed run expire after this; the shortest lease billrun accepts.
const LEASE_SECONDS: u64 = 10;

struct Data {
    json: String,
    /// subscription → the period starts an `AS_OF` close must bill (only those with any).
    expected: BTreeMap<String, Vec<String>>,
    documents: usize,
    accounts: usize,
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Period starts from `start` every `months` up to and including `as_of`.
fn periods(start: NaiveDate, months: u32, as_of: NaiveDate) -> Vec<String> {
    (0..)
        .map(|k| start + Months::new(months * k))
        .take_while(|d| *d <= as_of)
        .map(|d| d.to_string())
        .collect()
}

/// `n` subscriptions on accounts of 1 to 3 each.
fn generate(seed: u64, n: usize) -> Data {
    let mut rng = Rng::new(seed);
    let as_of = date(AS_OF);
    let mut accounts = Vec::new();
    let mut subscriptions = Vec::new();
    let mut expected = BTreeMap::new();
    let policies = ["deferred", "term_recalc", "hybrid_70_30", "license"];
    while subscriptions.len() < n {
        let id = format!("acct{:06}", accounts.len() + 1);
        let currency = if rng.chance(65) { "USD" } else { "EUR" };
        let mut account = serde_json::json!({
            "id": id, "name": format!("Customer {id}"), "email": format!("billing@{id}.example"),
            "currency": currency,
        });
        if rng.chance(30) {
            account["credit"] = format!("{}.{:02}", 5 + rng.below(300), rng.below(100)).into();
        }
        if rng.chance(40) {
            let percent = *rng.pick(&["19", "8.25", "5", "7.5"]);
            account["taxes"] = serde_json::json!([{"name": "Tax", "percent": percent}]);
        }
        if rng.chance(10) {
            account["discount"] = serde_json::json!({"percent": "10"});
        }
        if rng.chance(15) {
            account["timezone"] =
                (*rng.pick(&["America/Toronto", "Europe/Berlin", "Asia/Tokyo"])).into();
        }
        accounts.push(account);
        let k = (1 + rng.below(3) as usize).min(n - subscriptions.len());
        for j in 0..k {
            let sub = format!("{id}-s{j}");
            let (plan, cycle) = if currency == "USD" {
                *rng.pick(&[
                    ("basic", "monthly"),
                    ("basic", "annual"),
                    ("plus", "monthly"),
                ])
            } else {
                *rng.pick(&[("plus", "monthly"), ("euro_only", "monthly")])
            };
            // Day of month at most 28, so every period starts on the same day. Monthly ones
            // start in the 75 days from 2026-02-01 (the last few after AS_OF: not due yet),
            // annual ones in the 400 days from 2025-03-01 (the first few due twice).
            let (from, days, months) = match cycle {
                "monthly" => (date("2026-02-01"), 75, 1),
                _ => (date("2025-03-01"), 400, 12),
            };
            let mut start = from + chrono::Days::new(rng.below(days));
            if chrono::Datelike::day(&start) > 28 {
                start = chrono::Datelike::with_day(&start, 28).unwrap();
            }
            let mut s = serde_json::json!({
                "id": sub, "account": id, "policy": *rng.pick(&policies), "cycle": cycle,
                "start": start.to_string(),
                "items": [{"plan": plan, "quantity": 1 + rng.below(3)}],
            });
            if rng.chance(10) {
                s["discount"] = serde_json::json!({"amount": "5.00", "periods": 2});
            }
            subscriptions.push(s);
            let due = periods(start, months, as_of);
            if !due.is_empty() {
                expected.insert(sub, due);
            }
        }
    }
    let documents = expected.values().map(Vec::len).sum();
    Data {
        json: serde_json::json!({"accounts": accounts, "subscriptions": subscriptions}).to_string(),
        expected,
        documents,
        accounts: accounts.len(),
    }
}

/// Documents committed plus messages sent: grows through a run, one step per unit of work.
async fn progress(sb: &Sandbox) -> u64 {
    number(
        &sb.db,
        "SELECT CAST((SELECT COUNT(*) FROM documents) + \
         (SELECT COUNT(*) FROM outbox WHERE status = 'sent') AS TEXT)",
    )
    .await as u64
}

fn import(sb: &Sandbox, data: &Data) {
    let file = sb.dir.path().join("subscriptions.json");
    std::fs::write(&file, &data.json).unwrap();
    sb.ok(&["import", file.to_str().unwrap()]);
}

fn close_env(chunk: u64) -> Vec<(String, String)> {
    vec![
        ("BILLRUN_CHUNK_SIZE".into(), chunk.to_string()),
        ("BILLRUN_LEASE_SECONDS".into(), LEASE_SECONDS.to_string()),
    ]
}

/// Messages a killed run had claimed wait for their lease; send until none is pending.
async fn drain_outbox(sb: &Sandbox, env: &[(String, String)], ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECONDS + 60);
    loop {
        let pending = number(
            &sb.db,
            "SELECT CAST(COUNT(*) AS TEXT) FROM outbox WHERE status <> 'sent'",
        )
        .await;
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: {pending} message(s) still pending long after every lease expired"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let out = sb.run_with_env(&["send"], env);
        // 4: messages still claimed by a killed run, and said so.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                || (out.status.code() == Some(4) && stdout.contains("claimed by one that stopped")),
            "{ctx}: billrun send failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `.eml` files are exactly the outbox's messages, one each.
fn check_mail_folder(sb: &Sandbox, books: &Books, ctx: &str) {
    let files: BTreeSet<String> = sb.emails().into_iter().collect();
    let keys: BTreeSet<String> = books
        .outbox
        .iter()
        .map(|m| format!("{}.eml", m.key))
        .collect();
    assert_eq!(
        files.len(),
        keys.len(),
        "{ctx}: {} .eml files for {} outbox messages",
        files.len(),
        keys.len()
    );
    assert!(
        files == keys,
        "{ctx}: the .eml files are not the outbox's messages"
    );
}

on_each_backend!(kill_and_resume:
    killed_closes_resume_to_the_same_books_as_an_uninterrupted_close_sqlite,
    killed_closes_resume_to_the_same_books_as_an_uninterrupted_close_postgres
);

async fn kill_and_resume(backend: Backend) {
    let started = Instant::now();
    let seed = seed_from_env("BILLRUN_CRASH_SEED");
    let n = env_number("BILLRUN_CRASH_SUBSCRIPTIONS", 1_000) as usize;
    let kills = env_number("BILLRUN_CRASH_KILLS", 3);
    let chunk = env_number("BILLRUN_CRASH_CHUNK", 20);
    let data = generate(seed, n);
    let mut ctx = format!(
        "{backend:?}, seed {seed} (replay: BILLRUN_CRASH_SEED={seed} BILLRUN_CRASH_SUBSCRIPTIONS={n} \
         BILLRUN_CRASH_KILLS={kills} BILLRUN_CRASH_CHUNK={chunk})"
    );
    let _ = writeln!(
        std::io::stderr(),
        "crash test {ctx}: {} accounts, {} subscriptions, {} documents due",
        data.accounts,
        n,
        data.documents
    );
    let env = close_env(chunk);

    // The reference: the same data closed without interruption, in parallel.
    let reference = {
        let json = data.json.clone();
        let env = env.clone();
        std::thread::spawn(move || {
            let sb = Sandbox::new(backend);
            let file = sb.dir.path().join("subscriptions.json");
            std::fs::write(&file, json).unwrap();
            sb.ok(&["import", file.to_str().unwrap()]);
            let t = Instant::now();
            let out = sb.run_with_env(&["close", "--as-of", AS_OF], &env);
            assert!(
                out.status.success(),
                "the uninterrupted close failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (sb, t.elapsed())
        })
    };

    let sb = Sandbox::new(backend);
    import(&sb, &data);
    let mut rng = Rng::new(seed ^ 0x6b69_6c6c);
    // Documents, their messages, and at least one finance batch message.
    let total = 2 * data.documents as u64 + 1;
    let mut log: Vec<String> = Vec::new();
    let mut killed = 0;
    for k in 1..=kills {
        let before = progress(&sb).await;
        if before >= total {
            break;
        }
        // The first kill lands while documents are being issued (the chunk commits); the
        // others anywhere in what is left, which is mostly sending.
        let docs = data.documents as u64;
        let target = if k == 1 && before < docs {
            before + rng.below(docs - before)
        } else {
            before + rng.below((total - before) * 9 / 10 + 1)
        };
        let stderr = std::fs::File::create(sb.dir.path().join(format!("run{k}.err"))).unwrap();
        let t = Instant::now();
        let mut child = sb
            .command(&["close", "--as-of", AS_OF], &env)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if progress(&sb).await >= target {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        match finished {
            Some(status) => {
                let err =
                    std::fs::read_to_string(sb.dir.path().join(format!("run{k}.err"))).unwrap();
                assert!(status.success(), "{ctx}: run {k} failed ({status}): {err}");
                log.push(format!(
                    "run {k} finished before its kill point {target}/{total}"
                ));
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
                let at = progress(&sb).await;
                let issued = number(&sb.db, "SELECT CAST(COUNT(*) AS TEXT) FROM documents").await;
                let phase = if (issued as usize) < data.documents {
                    "issuing"
                } else {
                    "sending"
                };
                log.push(format!(
                    "run {k} killed after {:.2} s while {phase}, progress {at}/{total}",
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        ctx = format!("{ctx}; {}", log.last().unwrap());
        // What a killed run committed is consistent on its own.
        check_books(&sb.db, &ctx).await;
    }
    let _ = writeln!(std::io::stderr(), "crash test {ctx}");
    assert!(
        killed >= 1 || kills == 0,
        "{ctx}: no run was killed; the kill points came too late"
    );

    // The run that finishes.
    let t = Instant::now();
    let out = sb.run_with_env(&["close", "--as-of", AS_OF], &env);
    assert!(
        out.status.success(),
        "{ctx}: the final close failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let final_run = t.elapsed();
    drain_outbox(&sb, &env, &ctx).await;

    let books = check_finished(&sb.db, &ctx).await;
    assert_eq!(
        books.documents.len(),
        data.documents,
        "{ctx}: documents issued"
    );
    let billed = books.periods_per_subscription();
    for (sub, want) in &data.expected {
        assert_eq!(
            billed.get(sub),
            Some(want),
            "{ctx}: {sub} must have exactly one document per due period"
        );
    }
    assert_eq!(
        billed.len(),
        data.expected.len(),
        "{ctx}: documents for subscriptions with nothing due"
    );
    check_mail_folder(&sb, &books, &ctx);
    let runs = text_rows(
        &sb.db,
        "SELECT status, CAST(abandoned_by AS TEXT) FROM runs ORDER BY id",
    )
    .await;
    assert_eq!(
        runs.last().and_then(|r| r[0].as_deref()),
        Some("completed"),
        "{ctx}: the last run"
    );
    // A killed run is closed by the next as abandoned (failed, `abandoned_by` it); no run
    // failed otherwise.
    assert!(
        runs.iter()
            .all(|r| r[0].as_deref() != Some("failed") || r[1].is_some()),
        "{ctx}: a run recorded a failure: {runs:?}"
    );

    // The same books as an uninterrupted close.
    let (reference, reference_time) = reference.join().expect("the reference close");
    let want = check_finished(&reference.db, &format!("{ctx} (reference)")).await;
    check_mail_folder(&reference, &want, &format!("{ctx} (reference)"));
    assert_eq!(
        want.periods_per_subscription(),
        data.expected,
        "{ctx}: the reference close"
    );
    let keys: Vec<&String> = books.documents.keys().collect();
    let want_keys: Vec<&String> = want.documents.keys().collect();
    assert!(keys == want_keys, "{ctx}: other document keys");
    for (key, doc) in &books.documents {
        assert_eq!(
            doc.content(),
            want.documents[key].content(),
            "{ctx}: {key} differs from the uninterrupted close"
        );
    }
    assert_eq!(
        books.totals_per_currency(),
        want.totals_per_currency(),
        "{ctx}: totals per currency"
    );
    assert_eq!(books.balances, want.balances, "{ctx}: account balances");
    // Same set of numbers (both gapless with as many documents), perhaps in another order.
    let numbers = |b: &Books| -> BTreeSet<String> {
        b.documents.values().map(|d| d.number.clone()).collect()
    };
    assert!(
        numbers(&books) == numbers(&want),
        "{ctx}: other numbers issued"
    );
    let _ = writeln!(
        std::io::stderr(),
        "crash test {backend:?} seed {seed}: passed in {:.1} s ({killed} kill(s); final run {:.1} s; \
         uninterrupted close {:.1} s)",
        started.elapsed().as_secs_f64(),
        final_run.as_secs_f64(),
        reference_time.as_secs_f64()
    );
}

/// The checks above can fail: each of these tamperings of a closed database is caught.
#[tokio::test]
async fn the_book_checks_catch_a_gap_a_wrong_balance_a_lost_message_and_a_double_issue_sqlite() {
    let cases = [
        (
            "UPDATE documents SET number = 'INV-2026-000099' WHERE number = 'INV-2026-000002'",
            "without gaps",
        ),
        (
            "UPDATE accounts SET balance = '5.00' WHERE id = 'a1'",
            "ledger sums to",
        ),
        (
            "DELETE FROM outbox WHERE id = (SELECT MIN(id) FROM outbox WHERE kind = 'document')",
            "0 outbox message(s)",
        ),
        (
            "INSERT INTO balance_ledger (account_id, at, amount, reason) \
             VALUES ('a1', '2026-01-01', '-1.00', 'refund'); \
             UPDATE accounts SET balance = '-1.00' WHERE id = 'a1'",
            "negative balance",
        ),
        (
            "UPDATE documents SET period_start = '2026-01-01' WHERE doc_key = 'renewal/s1/2026-02-01'",
            "exactly one document per due period",
        ),
    ];
    for (tamper, caught) in cases {
        let sb = Sandbox::new(Backend::Sqlite);
        sb.ok(&[
            "import",
            crate::common::fixtures()
                .join("three_monthly.json")
                .to_str()
                .unwrap(),
        ]);
        sb.ok(&["close", "--as-of", "2026-02-15"]);
        sb.db.exec(tamper).await;
        let outcome = tokio::spawn(async move {
            let books = check_finished(&sb.db, "tampered").await;
            // Per subscription, the periods billed: s1 twice in January is a double issue.
            let want: BTreeMap<String, Vec<String>> = ["s1", "s2", "s3"]
                .iter()
                .map(|s| {
                    (
                        s.to_string(),
                        vec!["2026-01-01".into(), "2026-02-01".into()],
                    )
                })
                .collect();
            assert_eq!(
                books.periods_per_subscription(),
                want,
                "exactly one document per due period"
            );
        })
        .await;
        let err = outcome.expect_err(&format!("not caught: {tamper}"));
        let msg = err
            .into_panic()
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_default();
        assert!(
            msg.contains(caught),
            "{tamper}: caught for another reason: {msg}"
        );
    }
}
