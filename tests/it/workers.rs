//! Several `billrun close` processes sharing one PostgreSQL database: each account is closed by
//! exactly one of them, numbering stays gapless across all, and they do real work; one of
//! them killed holding claims is replaced after its lease.
//! PostgreSQL only (SQLite serialises writers; the point here is concurrent ones).

use crate::common::books::check_finished;
use crate::common::{Sandbox, count, import_monthly};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

const ACCOUNTS: usize = 2_000;

#[tokio::test]
async fn two_workers_close_2000_accounts_once_each_with_gapless_numbers_postgres() {
    let Some(backend) = crate::common::postgres() else {
        return;
    };
    let sb = Sandbox::new(backend);
    import_monthly(&sb, "w", ACCOUNTS);

    // Small chunks, so the two workers interleave rather than one taking everything.
    let env = [("BILLRUN_CHUNK_SIZE".to_string(), "50".to_string())];
    let args = ["close", "--as-of", "2026-02-15"];
    let workers: Vec<std::process::Child> = (0..2)
        .map(|_| {
            sb.command(&args, &env)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker {i} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let db = &sb.db;
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM documents").await,
        2 * ACCOUNTS as i64
    );
    assert_eq!(
        count(db, "SELECT COUNT(DISTINCT doc_key) FROM documents").await,
        2 * ACCOUNTS as i64,
        "a document key issued twice"
    );

    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let numbers: Vec<String> = sqlx::query_scalar("SELECT number FROM documents ORDER BY number")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let expected: Vec<String> = (1..=2 * ACCOUNTS)
        .map(|n| format!("INV-2026-{n:06}"))
        .collect();
    assert!(
        numbers == expected,
        "numbers are not INV-2026-000001 … without a gap"
    );

    let rows: Vec<(String, chrono::NaiveDate)> =
        sqlx::query_as("SELECT subscription_id, period_start FROM documents")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut billed: BTreeMap<String, Vec<chrono::NaiveDate>> = BTreeMap::new();
    for (sub, start) in rows {
        billed.entry(sub).or_default().push(start);
    }
    let periods: Vec<chrono::NaiveDate> =
        vec!["2026-01-01".parse().unwrap(), "2026-02-01".parse().unwrap()];
    assert_eq!(billed.len(), ACCOUNTS, "every subscription billed");
    for (sub, mut starts) in billed {
        starts.sort();
        assert_eq!(starts, periods, "{sub}: each period exactly once");
    }

    let runs: BTreeSet<i64> =
        sqlx::query_scalar("SELECT DISTINCT run_id FROM documents WHERE run_id IS NOT NULL")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(
        runs.len(),
        2,
        "both workers must have issued documents: runs {runs:?}"
    );
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM close_claims").await,
        0,
        "no claim outlives the runs"
    );
    // Both workers drained the outbox together: every message went out exactly once
    // (`attempts` counts sends; a second send would make it 2).
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM outbox WHERE kind = 'document' AND status = 'sent' AND attempts = 1").await,
        4_000
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM outbox WHERE status <> 'sent' OR attempts <> 1"
        )
        .await,
        0
    );
    conn.close().await.unwrap();
}

/// `n` accounts `prefix00001…`, each with one monthly `basic` subscription starting on day
/// 1..=28 of February 2026, every third with opening credit so balances move. Returns the file
/// and subscription → the period starts a close as of 2026-02-15 bills.
fn february_accounts(prefix: &str, n: usize) -> (String, BTreeMap<String, Vec<String>>) {
    let mut accounts = Vec::new();
    let mut subscriptions = Vec::new();
    let mut due = BTreeMap::new();
    for i in 1..=n {
        let id = format!("{prefix}{i:05}");
        let mut account = serde_json::json!({"id": id, "email": format!("billing@{id}.example"), "currency": "USD"});
        if i % 3 == 0 {
            account["credit"] = "12.34".into();
        }
        accounts.push(account);
        let day = 1 + (i * 7) % 28;
        let sub = format!("{id}-s");
        subscriptions.push(serde_json::json!({"id": sub, "account": id, "policy": "deferred",
            "cycle": "monthly", "start": format!("2026-02-{day:02}"), "items": [{"plan": "basic"}]}));
        if day <= 15 {
            due.insert(sub, vec![format!("2026-02-{day:02}")]);
        }
    }
    let file =
        serde_json::json!({"accounts": accounts, "subscriptions": subscriptions}).to_string();
    (file, due)
}

/// `kill -SIG pid`.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Three `billrun close` processes start together; one is SIGKILLed while it holds claims on
/// a chunk (frozen with SIGSTOP first, so the test sees the claims it dies with). The other
/// two wait for its lease to run out, close its accounts, and the books come out as if nobody
/// had died: each due period billed once, numbers gapless, one message per document, sent once.
#[tokio::test]
async fn a_worker_killed_holding_claims_is_replaced_and_nothing_is_billed_twice_postgres() {
    let Some(backend) = crate::common::postgres() else {
        return;
    };
    let sb = Sandbox::new(backend);
    let (data, due) = february_accounts("k", 1_200);
    let file = sb.dir.path().join("accounts.json");
    std::fs::write(&file, data).unwrap();
    sb.ok(&["import", file.to_str().unwrap()]);

    let env = [
        ("BILLRUN_CHUNK_SIZE".to_string(), "10".to_string()),
        ("BILLRUN_LEASE_SECONDS".to_string(), "10".to_string()),
    ];
    let args = ["close", "--as-of", "2026-02-15"];
    let mut workers: Vec<std::process::Child> = (0..3)
        .map(|i| {
            let err = std::fs::File::create(sb.dir.path().join(format!("worker{i}.err"))).unwrap();
            sb.command(&args, &env)
                .stdout(std::process::Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap()
        })
        .collect();

    // Once the workers are well into the run, catch worker 0 holding claims: freeze it, look,
    // kill it, or let it go on and look again.
    let victim = workers[0].id();
    let mine = format!("%:{victim}:%");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut conn = sqlx::PgConnection::connect(&sb.db.url).await.unwrap();
    while count(&sb.db, "SELECT COUNT(*) FROM documents").await < 150 {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers issue nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let held: Vec<String> = loop {
        assert!(
            workers[0].try_wait().unwrap().is_none(),
            "worker 0 finished before it could be caught holding a claim"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "worker 0 never held a claim"
        );
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM close_claims WHERE worker LIKE $1")
            .bind(&mine)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n > 0 {
            signal(victim, "-STOP");
            let held: Vec<String> = sqlx::query_scalar(
                "SELECT account_id::text FROM close_claims WHERE worker LIKE $1 ORDER BY 1",
            )
            .bind(&mine)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            if !held.is_empty() {
                workers[0].kill().unwrap(); // SIGKILL, delivered even to a stopped process
                workers[0].wait().unwrap();
                break held;
            }
            signal(victim, "-CONT");
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let _ = writeln!(
        std::io::stderr(),
        "worker {victim} killed holding {} claim(s): {}…",
        held.len(),
        held.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    );

    for (i, w) in workers.iter_mut().enumerate().skip(1) {
        let status = w.wait().unwrap();
        assert!(
            status.success(),
            "worker {i} failed ({status}): {}",
            std::fs::read_to_string(sb.dir.path().join(format!("worker{i}.err"))).unwrap()
        );
    }

    let books = check_finished(&sb.db, "three workers, one killed").await;
    assert_eq!(
        books.periods_per_subscription(),
        due,
        "each due period billed exactly once"
    );
    // The dead worker's run never finished; the survivors' did, and they closed what it held.
    let runs: Vec<(i64, String)> = sqlx::query_as("SELECT id, status FROM runs ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let running: Vec<i64> = runs
        .iter()
        .filter(|(_, s)| s == "running")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(running.len(), 1, "runs: {runs:?}");
    assert_eq!(
        runs.iter().filter(|(_, s)| s == "completed").count(),
        2,
        "runs: {runs:?}"
    );
    let taken_over: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT account_id::text, run_id FROM documents WHERE account_id = ANY($1)")
            .bind(&held)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(
        !taken_over.is_empty() && taken_over.iter().all(|(_, run)| *run != Some(running[0])),
        "the killed worker's chunk must have rolled back and been closed by another: {taken_over:?}"
    );
    let by_dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE run_id = $1")
        .bind(running[0])
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "the killed worker's run {} had committed {by_dead} document(s), which stay",
        running[0]
    );
    // Every message sent exactly once.
    assert!(
        books
            .outbox
            .iter()
            .all(|m| m.status == "sent" && m.attempts == 1),
        "a message sent twice or not at all"
    );
    assert_eq!(sb.emails().len(), books.outbox.len());
    conn.close().await.unwrap();
}
