//! A close killed with SIGKILL holding claims: the next close, started at once, takes its
//! claims over at once (its process is gone, and on PostgreSQL its session too) instead of
//! waiting out the 300-second lease, finishes its work, and the dead run shows as
//! `abandoned`. A worker that is only frozen (SIGSTOP) is alive: its claims are not taken,
//! and the other close says whom it waits for.

use crate::common::books::check_books;
use crate::common::{Backend, Sandbox, count, import_monthly};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ACCOUNTS: usize = 1_500;

fn import(sb: &Sandbox) {
    import_monthly(sb, "t", ACCOUNTS);
}

/// Small chunks, so a worker is caught holding claims; the default five-minute lease;
/// customer mail held for review, so a close's end is its finance batch, not 1,500 PDFs.
fn env() -> Vec<(String, String)> {
    vec![
        ("BILLRUN_REVIEW_HOURS".into(), "24".into()),
        ("BILLRUN_CHUNK_SIZE".into(), "10".into()),
        ("BILLRUN_LEASE_SECONDS".into(), "300".into()),
        ("BILLRUN_LOG".into(), "warn".into()),
    ]
}

fn spawn_close(sb: &Sandbox, name: &str) -> Child {
    let err = std::fs::File::create(sb.dir.path().join(format!("{name}.err"))).unwrap();
    sb.command(&["close", "--as-of", "2026-02-15"], &env())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

fn stderr_of(sb: &Sandbox, name: &str) -> String {
    std::fs::read_to_string(sb.dir.path().join(format!("{name}.err"))).unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Claims `pid` holds now.
async fn claims_of(sb: &Sandbox, pid: u32) -> i64 {
    let sql: &'static str = Box::leak(
        format!("SELECT COUNT(*) FROM close_claims WHERE worker LIKE '%:{pid}:%'").into_boxed_str(),
    );
    count(&sb.db, sql).await
}

/// No transaction is open on the database but the test's: a worker frozen now holds no lock
/// another would wait for (on SQLite the write lock; on PostgreSQL row locks).
async fn no_open_transaction(sb: &Sandbox) -> bool {
    use sqlx::{ConnectOptions, Connection};
    match sb.db.backend {
        Backend::Sqlite => {
            let path = sb.db.url.trim_start_matches("sqlite://");
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::ZERO)
                .connect()
                .await
                .unwrap();
            let free = sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .is_ok();
            if free {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            conn.close().await.unwrap();
            free
        }
        Backend::Postgres => {
            count(
                &sb.db,
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND state <> 'idle'",
            )
            .await
                == 0
        }
    }
}

/// Start a close and stop it (SIGSTOP) while it holds claims and no transaction; returns it
/// and how many claims it holds.
async fn frozen_holding_claims(sb: &Sandbox, name: &str) -> (Child, i64) {
    let mut child = spawn_close(sb, name);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name} finished before it was caught holding a claim: {}",
            stderr_of(sb, name)
        );
        assert!(Instant::now() < deadline, "{name} never held a claim");
        if claims_of(sb, pid).await > 0 {
            signal(pid, "-STOP");
            let held = claims_of(sb, pid).await;
            if held > 0 && no_open_transaction(sb).await {
                return (child, held);
            }
            signal(pid, "-CONT");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every subscription billed for January and February (deferred, as of 15 February), once.
fn each_period_billed_once(periods: &std::collections::BTreeMap<String, Vec<String>>) {
    assert_eq!(periods.len(), ACCOUNTS, "every subscription billed");
    let first = periods.values().next().unwrap();
    let mut unique = first.clone();
    unique.dedup();
    assert_eq!(&unique, first, "a period billed twice: {first:?}");
    assert!(
        periods.values().all(|p| p == first),
        "subscriptions billed differently: {periods:?}"
    );
}

/// Wait for a child with a bound far below the lease: a run that waited out the lease would
/// take 300 s.
fn finish(sb: &Sandbox, mut child: Child, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "{name} failed ({status}): {}",
                stderr_of(sb, name)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{name} did not finish within {within:?}: {}",
                stderr_of(sb, name)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

on_each_backend!(killed:
    a_close_right_after_a_kill_takes_the_dead_workers_claims_at_once_sqlite,
    a_close_right_after_a_kill_takes_the_dead_workers_claims_at_once_postgres
);

async fn killed(backend: Backend) {
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    import(&sb);
    let (mut victim, held) = frozen_holding_claims(&sb, "victim").await;
    victim.kill().unwrap(); // SIGKILL, delivered even to a stopped process
    victim.wait().unwrap();
    assert!(held > 0);

    // Within 30 s, well under the 300-second lease: the claims were taken over, not waited
    // out.
    let next = spawn_close(&sb, "next");
    finish(&sb, next, "next", Duration::from_secs(30));
    let err = stderr_of(&sb, "next");
    assert!(
        err.contains("took over the claims of a worker that is gone"),
        "{err}"
    );
    assert_eq!(claims_of(&sb, victim.id()).await, 0);
    // Customer mail waits out its review window here; the books are checked as they stand.
    let books = check_books(&sb.db, "a close after a killed one").await;
    assert_eq!(count(&sb.db, "SELECT COUNT(*) FROM close_claims").await, 0);
    each_period_billed_once(&books.periods_per_subscription());

    // The dead run is not shown `running`: abandoned, and so recorded.
    let runs: serde_json::Value = serde_json::from_str(&sb.ok(&["runs", "--json"])).unwrap();
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "abandoned"], "{runs}");
    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["status", "--json"])).unwrap();
    let shown: Vec<&str> = status["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["completed", "abandoned"], "{status}");
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM runs WHERE status = 'failed' AND abandoned_by = 2 AND finished_at IS NOT NULL"
        )
        .await,
        1
    );
}

on_each_backend!(frozen:
    a_live_workers_claims_are_not_taken_and_the_other_says_whom_it_waits_for_sqlite,
    a_live_workers_claims_are_not_taken_and_the_other_says_whom_it_waits_for_postgres
);

async fn frozen(backend: Backend) {
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    import(&sb);
    let (first, held) = frozen_holding_claims(&sb, "first").await;
    let pid = first.id();
    let second = spawn_close(&sb, "second");
    // The second close does everything else, then waits for the frozen one, and says so.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stderr_of(&sb, "second").contains("waiting for work claimed by another worker") {
        assert!(
            Instant::now() < deadline,
            "the second close never said it waits: {}",
            stderr_of(&sb, "second")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = stderr_of(&sb, "second");
    assert!(err.contains(&format!(":{pid}:")), "names the worker: {err}");
    assert!(err.contains(&format!("accounts={held}")), "{err}");
    // A second later the frozen worker still holds every claim: nothing was taken early.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(claims_of(&sb, pid).await, held);
    assert!(!err.contains("took over"), "{err}");

    signal(pid, "-CONT");
    finish(&sb, first, "first", Duration::from_secs(60));
    finish(&sb, second, "second", Duration::from_secs(60));
    let books = check_books(&sb.db, "a frozen worker and a waiting one").await;
    assert_eq!(count(&sb.db, "SELECT COUNT(*) FROM close_claims").await, 0);
    each_period_billed_once(&books.periods_per_subscription());
}

/// On PostgreSQL a worker's claims outlive nothing but its session: a worker on "another
/// host" (its process cannot be checked from here) is alive while its store is open, and
/// gone the moment its session ends — its claims then free at once.
#[tokio::test]
async fn a_postgres_workers_session_ending_frees_its_claims_postgres() {
    let Some(backend) = crate::common::postgres() else {
        return;
    };
    let sb = Sandbox::new(backend);
    sb.ok(&["migrate"]);
    import(&sb);
    let now = chrono::Utc::now();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 2, 15).unwrap();
    let far = "elsewhere.example:4242:1:1";
    let theirs = billrun::store::open(&sb.db.url).await.unwrap();
    let claimed = theirs
        .claim_accounts(&billrun::store::AccountClaim {
            due: billrun::store::DuePage {
                as_of,
                after: None,
                limit: 7,
            },
            worker: far,
            now,
            lease_until: now + chrono::Duration::hours(1),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 7);

    let ours = billrun::store::open(&sb.db.url).await.unwrap();
    let holders = ours.claim_holders(now).await.unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!((holders[0].worker.as_str(), holders[0].accounts), (far, 7));
    assert!(
        !holders[0].is_gone(),
        "a live session's worker taken for gone"
    );

    drop(theirs);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let holders = ours.claim_holders(now).await.unwrap();
        if holders[0].is_gone() {
            break;
        }
        assert!(Instant::now() < deadline, "the ended session is never seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let others = billrun::takeover::take_over_gone(ours.as_ref(), "me", now)
        .await
        .unwrap();
    assert_eq!((others.taken_accounts, others.live.len()), (7, 0));
    assert!(ours.claim_holders(now).await.unwrap().is_empty());
}
