//! Two `billrun close` processes sharing one PostgreSQL database: each account is closed by
//! exactly one of them, numbering stays gapless across both, and both do real work.
//! PostgreSQL only (SQLite serialises writers; the point here is concurrent ones).

mod common;

use common::{Sandbox, count};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};

const ACCOUNTS: usize = 2_000;

/// `ACCOUNTS` accounts, each with one monthly `basic` subscription from 2026-01-01.
fn import_file() -> String {
    let accounts: Vec<serde_json::Value> = (1..=ACCOUNTS)
        .map(|i| {
            serde_json::json!({"id": format!("w{i:05}"), "name": format!("Worker test {i}"),
                               "email": format!("billing@w{i:05}.example"), "currency": "USD"})
        })
        .collect();
    let subscriptions: Vec<serde_json::Value> = (1..=ACCOUNTS)
        .map(|i| {
            serde_json::json!({"id": format!("ws{i:05}"), "account": format!("w{i:05}"), "policy": "deferred",
                               "cycle": "monthly", "start": "2026-01-01", "items": [{"plan": "basic"}]})
        })
        .collect();
    serde_json::json!({"accounts": accounts, "subscriptions": subscriptions}).to_string()
}

#[tokio::test]
async fn two_workers_close_2000_accounts_once_each_with_gapless_numbers_postgres() {
    let Some(backend) = common::postgres() else {
        return;
    };
    let sb = Sandbox::new(backend);
    let file = sb.dir.path().join("accounts.json");
    std::fs::write(&file, import_file()).unwrap();
    sb.ok(&["import", file.to_str().unwrap()]);

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
