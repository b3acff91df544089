//! The database going away: unreachable when billrun starts, and its connections cut while a
//! close runs. Either way one clear error line and a non-zero exit, no panic; after a cut, the
//! next run completes and the books hold every invariant.
//!
//! SQLite has no server to lose. Its mid-run failure would be a lock held by another process
//! past the busy timeout — 30 s (src/store/sqlite.rs), too slow for `cargo test` — or a file
//! made read-only, which the tests' root user writes anyway. So SQLite is covered only for a
//! database that cannot be opened at start.

use crate::common::books::{check_books, check_finished, number};
use crate::common::{Backend, Sandbox};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// stderr is one line, `error: …`, naming what failed, and no panic or backtrace.
fn assert_one_clear_error(out: &Output, must_contain: &[&str], what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit status; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{what}: {stderr}");
    for word in must_contain {
        assert!(
            lines[0].contains(word),
            "{what}: the error does not say {word:?}: {stderr}"
        );
    }
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(bad), "{what}: {stderr}");
    }
    lines[0].to_string()
}

#[test]
fn an_unreachable_postgres_server_at_start_is_one_clear_error() {
    // Needs no server: nothing listens on port 1.
    let sb = Sandbox::new(Backend::Sqlite);
    let env = [(
        "BILLRUN_DATABASE_URL".to_string(),
        "postgres://postgres:hunter2@127.0.0.1:1/x".to_string(),
    )];
    let out = sb.run_with_env(&["close", "--as-of", "2026-02-15"], &env);
    let line = assert_one_clear_error(&out, &["database"], "close with the server down");
    assert!(
        line.contains("cannot connect") || line.contains("cannot open"),
        "the error must say the database could not be reached: {line}"
    );
    assert!(!line.contains("hunter2"), "the password leaked: {line}");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "nothing reported as done"
    );
}

/// The error names the server it could not reach and why, as the error for a missing
/// database does ("database \"x\" does not exist").
#[test]
fn an_unreachable_postgres_server_is_named_in_the_error() {
    let sb = Sandbox::new(Backend::Sqlite);
    let env = [(
        "BILLRUN_DATABASE_URL".to_string(),
        "postgres://postgres@127.0.0.1:1/x".to_string(),
    )];
    let out = sb.run_with_env(&["close", "--as-of", "2026-02-15"], &env);
    let line = assert_one_clear_error(&out, &["database"], "close with the server down");
    assert!(
        line.contains("127.0.0.1:1") && line.to_lowercase().contains("refused"),
        "say where and why: {line}"
    );
}

#[test]
fn a_sqlite_database_that_cannot_be_opened_is_one_clear_error() {
    let sb = Sandbox::new(Backend::Sqlite);
    // A directory where the database file should be.
    let dir = sb.dir.path().join("a-directory.db");
    std::fs::create_dir(&dir).unwrap();
    let env = [(
        "BILLRUN_DATABASE_URL".to_string(),
        format!("sqlite://{}", dir.display()),
    )];
    let out = sb.run_with_env(&["close", "--as-of", "2026-02-15"], &env);
    assert_one_clear_error(
        &out,
        &["cannot open the database"],
        "sqlite path is a directory",
    );
    // Its folder is a file.
    let file = sb.dir.path().join("plain-file");
    std::fs::write(&file, "not a folder").unwrap();
    let env = [(
        "BILLRUN_DATABASE_URL".to_string(),
        format!("sqlite://{}/billrun.db", file.display()),
    )];
    let out = sb.run_with_env(&["close", "--as-of", "2026-02-15"], &env);
    assert_one_clear_error(
        &out,
        &["cannot open the database"],
        "sqlite folder is a file",
    );
}

/// `n` accounts, each with one monthly `basic` subscription started in February 2026 (every
/// third with credit); subscription → period starts due at 2026-02-15.
fn accounts(n: usize) -> (String, BTreeMap<String, Vec<String>>) {
    let mut accounts = Vec::new();
    let mut subscriptions = Vec::new();
    let mut due = BTreeMap::new();
    for i in 1..=n {
        let id = format!("o{i:05}");
        let mut account = serde_json::json!({"id": id, "email": format!("billing@{id}.example"),
            "currency": if i % 4 == 0 { "EUR" } else { "USD" }});
        if i % 3 == 0 {
            account["credit"] = "20.00".into();
        }
        accounts.push(account);
        let day = 1 + (i * 11) % 28;
        let sub = format!("{id}-s");
        let plan = if i % 4 == 0 { "plus" } else { "basic" };
        subscriptions.push(
            serde_json::json!({"id": sub, "account": id, "policy": "deferred",
            "cycle": "monthly", "start": format!("2026-02-{day:02}"), "items": [{"plan": plan}]}),
        );
        if day <= 15 {
            due.insert(sub, vec![format!("2026-02-{day:02}")]);
        }
    }
    let file =
        serde_json::json!({"accounts": accounts, "subscriptions": subscriptions}).to_string();
    (file, due)
}

/// Cut every connection but the test's own to the sandbox's database; how many were cut.
async fn terminate_connections(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn connections_cut_mid_close_fail_the_run_cleanly_and_a_rerun_completes_postgres() {
    let Some(backend) = crate::common::postgres() else {
        return;
    };
    let sb = Sandbox::new(backend);
    let (data, due) = accounts(1_000);
    let file = sb.dir.path().join("accounts.json");
    std::fs::write(&file, data).unwrap();
    sb.ok(&["import", file.to_str().unwrap()]);
    let env = [
        ("BILLRUN_CHUNK_SIZE".to_string(), "10".to_string()),
        ("BILLRUN_LEASE_SECONDS".to_string(), "10".to_string()),
    ];
    let args = ["close", "--as-of", "2026-02-15"];
    let err_file = sb.dir.path().join("close.err");
    let mut child = sb
        .command(&args, &env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();

    // Once the run has committed something, cut its connections again and again (the pool
    // may open new ones) until it gives up, for at most 10 s.
    let mut conn = sqlx::PgConnection::connect(&sb.db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while number(&sb.db, "SELECT CAST(COUNT(*) AS TEXT) FROM documents").await == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the close ended before it issued anything"
        );
        assert!(Instant::now() < deadline, "the close issued nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let issued_before_cut = number(&sb.db, "SELECT CAST(COUNT(*) AS TEXT) FROM documents").await;
    let cut_until = Instant::now() + Duration::from_secs(10);
    let mut cut = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > cut_until {
            break child.wait().unwrap();
        }
        cut += terminate_connections(&mut conn).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = std::fs::read_to_string(&err_file).unwrap();
    let issued = number(&sb.db, "SELECT CAST(COUNT(*) AS TEXT) FROM documents").await;
    let _ = writeln!(
        std::io::stderr(),
        "close under cut connections: {status}, {cut} connection(s) cut, {issued_before_cut} \
         document(s) before the first cut, {issued} after; stderr: {}",
        stderr.trim()
    );
    // What happens: the run fails (it does not reconnect and go on) with exit status 1 and
    // one error line, the last; log lines (warnings from the pool, "could not release this
    // worker's claims") may come before it, but no panic.
    assert_eq!(
        status.code(),
        Some(1),
        "close with its connections cut: {stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(errors[0]),
        "the error comes last: {stderr}"
    );
    assert!(
        errors[0].contains("database") && errors[0].contains("connection"),
        "the error says the database connection went: {}",
        errors[0]
    );
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(bad), "{stderr}");
    }
    assert!(
        (issued as usize) < due.len(),
        "the run was cut before it finished issuing"
    );
    // What it committed is whole.
    check_books(&sb.db, "after the cut").await;

    // The next run completes (waiting out the claims the failed run could not release).
    let out = sb.run_with_env(&args, &env);
    assert!(
        out.status.success(),
        "the re-run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let books = check_finished(&sb.db, "after the re-run").await;
    assert_eq!(
        books.periods_per_subscription(),
        due,
        "each due period billed exactly once"
    );
    assert_eq!(
        sb.emails().len(),
        books.outbox.len(),
        "one .eml per message"
    );
    let runs: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, error FROM runs ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let _ = writeln!(std::io::stderr(), "runs: {runs:?}");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].0, "completed", "{runs:?}");
    conn.close().await.unwrap();
}
