//! Amounts too large to compute, at every stage where amounts add up: a document's subtotal,
//! its taxes, the balance, and the sums over many documents (the run's summary and the finance
//! batch). Imports refuse what is over the caps; rows that got past them some other way (an
//! older version, a hand-edited database) park their account with the reason instead of
//! panicking; the run finishes; the daemon keeps running.

use crate::common::{Backend, Sandbox, TestDb, count};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

const HUGE: &str = "999999999999999.99";

/// A catalog with one plan at the largest price a catalog accepts, in USD and JPY (whole
/// yen: documents of up to 7.9e28 are exact).
fn huge_catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("huge.toml");
    std::fs::write(
        &path,
        format!(
            "[[plans]]\ncode = \"huge\"\nname = \"Huge\"\nrank = 1\n\
             prices.USD = {{ monthly = \"{HUGE}\" }}\nprices.JPY = {{ monthly = \"999999999999999\" }}\n"
        ),
    )
    .unwrap();
    path
}

fn import_file(dir: &std::path::Path, accounts: &[(&str, &str, u32)]) -> std::path::PathBuf {
    let accs: Vec<String> = accounts
        .iter()
        .map(|(id, cur, _)| {
            format!(r#"{{"id": "{id}", "email": "{id}@x.example", "currency": "{cur}"}}"#)
        })
        .collect();
    let subs: Vec<String> = accounts
        .iter()
        .map(|(id, _, q)| {
            format!(
                r#"{{"id": "{id}-s", "account": "{id}", "policy": "deferred", "cycle": "monthly", "start": "2026-01-01", "items": [{{"plan": "huge", "quantity": {q}}}]}}"#
            )
        })
        .collect();
    let path = dir.join("import.json");
    std::fs::write(
        &path,
        format!(
            "{{\"accounts\": [{}], \"subscriptions\": [{}]}}",
            accs.join(","),
            subs.join(",")
        ),
    )
    .unwrap();
    path
}

/// A pending line (as a change would leave) of `amount` on the subscription of `account`.
async fn pending(db: &TestDb, account: &str, n: usize, amount: &str) {
    db.exec(&format!(
        "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) \
         VALUES ('{account}-s', 'injected', '{amount}', TRUE, '2026-01-01T00:00:00Z', 'injected/{account}/{n}')"
    ))
    .await;
}

async fn overflows(backend: Backend) {
    let files = tempfile::tempdir().unwrap();
    let catalog = huge_catalog(files.path());
    let sb = Sandbox::with_catalog(backend, &catalog);
    // Absolute invoice bound: USD 10^16 (above the catalog's price), none for JPY.
    let env = vec![(
        "BILLRUN_SANITY_MAX_INVOICE".to_string(),
        "default=0,USD=10000000000000000".to_string(),
    )];
    let run = |args: &[&str]| sb.run_with_env(args, &env);

    // Over the caps at import: one clear line each, nothing written.
    let out = run(&[
        "import",
        import_file(files.path(), &[("q", "USD", 4_294_967_295)])
            .to_str()
            .unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("4294967295 units is over the limit"),
        "{stderr}"
    );
    assert_eq!(count(&sb.db, "SELECT COUNT(*) FROM accounts").await, 0);

    let import = import_file(
        files.path(),
        &[
            ("tax", "USD", 1),
            ("sum", "USD", 1),
            ("bal", "USD", 1),
            ("first", "USD", 373),
            ("b1", "JPY", 1),
            ("b2", "JPY", 1),
            ("ok", "USD", 1),
        ],
    );
    let out = run(&["import", import.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Rows no import accepts, as an older version or a hand edit could leave them.
    // Tax: 4.29e24 taxable at 20,000 rates of 100% — the tax total overflows.
    db_exec_taxes(&sb.db, "tax", 20_000).await;
    sb.db
        .exec("UPDATE subscription_items SET quantity = 4294967295 WHERE subscription_id = 'tax-s'")
        .await;
    // Subtotal: two lines of 5e28.
    pending(&sb.db, "sum", 1, "50000000000000000000000000000").await;
    pending(&sb.db, "sum", 2, "50000000000000000000000000000").await;
    // Balance: the largest balance Decimal holds, then a credit note on top of it.
    sb.db
        .exec("UPDATE accounts SET balance = '79228162514264337593543950335' WHERE id = 'bal'")
        .await;
    pending(&sb.db, "bal", 1, "-2000000000000000").await;
    // Sums over documents: two JPY invoices of 4e28 each, whose sum Decimal cannot hold.
    pending(&sb.db, "b1", 1, "40000000000000000000000000000").await;
    pending(&sb.db, "b2", 1, "40000000000000000000000000000").await;

    let out = run(&["close", "--as-of", "2026-01-01"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for (account, why) in [
        ("tax", "amounts too large to compute (tax total)"),
        ("sum", "amounts too large to compute (document subtotal)"),
        ("bal", "amounts too large to compute (balance)"),
        (
            "first",
            "invoice of first-s would be 372999999999999996.27 USD, above the limit of 10000000000000000 USD",
        ),
    ] {
        assert!(
            stdout.contains(&format!("PARKED: account {account}: {why}")),
            "{account} not parked with {why:?}:\n{stdout}"
        );
    }
    // The others were billed; the JPY sum is printed whole.
    assert!(
        stdout.contains("Issued 3 invoice(s)")
            && stdout.contains("JPY: invoiced 80000000000001999999999999998,")
            && stdout.contains("USD: invoiced 999999999999999.99,"),
        "{stdout}"
    );
    assert_eq!(
        count(&sb.db, "SELECT COUNT(*) FROM documents").await,
        3,
        "ok, b1 and b2 invoiced"
    );
    let runs = count(&sb.db, "SELECT COUNT(*) FROM runs WHERE status = 'running'").await;
    assert_eq!(runs, 0, "a run was left running");
    // The finance batch was rendered and written, with the JPY total.
    let batch = std::fs::read_dir(sb.mail())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("finance-batch"))
        .expect("a finance batch .eml");
    let text = std::fs::read_to_string(&batch).unwrap();
    assert!(text.contains("net 80000000000001999999999999998"), "{text}");

    // A second close: the parked accounts stay parked, nothing panics, nothing is issued.
    let out = run(&["close", "--as-of", "2026-01-02"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("STILL PARKED: account sum"), "{stdout}");
    assert_eq!(count(&sb.db, "SELECT COUNT(*) FROM documents").await, 3);
}

async fn db_exec_taxes(db: &TestDb, account: &str, n: usize) {
    let rates: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"name":"T{i}","percent":"100"}}"#))
        .collect();
    db.exec(&format!(
        "UPDATE accounts SET taxes = '[{}]' WHERE id = '{account}'",
        rates.join(",")
    ))
    .await;
}

on_each_backend!(overflows:
    amounts_that_overflow_park_their_account_and_the_run_finishes_sqlite,
    amounts_that_overflow_park_their_account_and_the_run_finishes_postgres
);

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The daemon's catch-up close meets an account whose amounts overflow: it parks it, records
/// the close, and keeps serving; no crash loop.
async fn daemon_survives(backend: Backend) {
    let files = tempfile::tempdir().unwrap();
    let catalog = huge_catalog(files.path());
    let sb = Sandbox::with_catalog(backend, &catalog);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = vec![
        ("BILLRUN_HTTP_ADDR".to_string(), format!("127.0.0.1:{port}")),
        ("BILLRUN_SANITY_MAX_INVOICE".to_string(), "0".to_string()),
    ];
    let import = import_file(files.path(), &[("sum", "USD", 1), ("ok", "USD", 1)]);
    let out = sb.run_with_env(&["import", import.to_str().unwrap()], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pending(&sb.db, "sum", 1, "50000000000000000000000000000").await;
    pending(&sb.db, "sum", 2, "50000000000000000000000000000").await;

    let log = sb.dir.path().join("daemon.log");
    let mut child = sb
        .command(&["run"], &env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let health = loop {
        if let Some((200, body)) = http_get(port, "/healthz") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if !v["last_close"]["finished_at"].is_null() {
                break v;
            }
        }
        if began.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "the daemon did not report a close: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health["status"], "ok", "{health}");
    assert!(
        health["last_close"]["documents"].as_u64().unwrap() >= 1,
        "{health}"
    );
    // Still running and answering a moment later: no crash, no restart.
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("billrun_parked_accounts 1"), "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM parked_accounts WHERE account_id = 'sum'"
        )
        .await,
        1
    );
}

on_each_backend!(daemon_survives:
    the_daemon_parks_an_overflowing_account_and_keeps_running_sqlite,
    the_daemon_parks_an_overflowing_account_and_keeps_running_postgres
);
