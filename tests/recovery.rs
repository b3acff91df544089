//! A close that dies half way, then runs again, issues exactly what an uninterrupted close
//! issues: same documents, same numbers, none twice, one email each. Runs on a real SQLite
//! file through the library, with the failure injected after a committed chunk.

mod common;

use billrun::clock::ManualClock;
use billrun::close::{CloseOptions, close, deliver};
use billrun::config::Config;
use billrun::core::catalog::Catalog;
use billrun::input::{self, ImportFile};
use billrun::mail::EmlDir;
use billrun::store::Store;
use billrun::store::sqlite::SqliteStore;
use chrono::NaiveDate;
use common::{count, fixtures};
use std::collections::BTreeMap;

async fn setup(db: &std::path::Path) -> (SqliteStore, Catalog) {
    let catalog =
        Catalog::from_toml_str(&std::fs::read_to_string(fixtures().join("catalog.toml")).unwrap())
            .unwrap();
    let raw: ImportFile = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("three_monthly.json")).unwrap(),
    )
    .unwrap();
    let batch = input::validate(
        &raw.accounts,
        &raw.subscriptions,
        &catalog,
        "UTC",
        &BTreeMap::new(),
    )
    .unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.import(&batch, chrono::Utc::now()).await.unwrap();
    (store, catalog)
}

/// (number, key, total, amount due) of every stored document.
async fn documents(store: &SqliteStore) -> Vec<(String, String, String, String)> {
    store
        .documents(None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let x = d.document.draft;
            (
                d.document.number,
                x.key,
                x.total.to_string(),
                x.amount_due.to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_crashed_close_resumes_without_issuing_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let as_of = NaiveDate::from_ymd_opt(2026, 4, 15).unwrap();
    let clock = ManualClock::at_date(as_of);
    let mut settings = billrun::cli::close_settings(&Config::default());
    settings.chunk_size = 1; // one account per transaction, so the crash falls between chunks

    // Reference: an uninterrupted close.
    let (clean, catalog) = setup(&dir.path().join("clean.db")).await;
    close(
        &clean,
        &catalog,
        &settings,
        &clock,
        None,
        as_of,
        &CloseOptions::default(),
    )
    .await
    .unwrap();
    let want = documents(&clean).await;
    assert_eq!(want.len(), 12);

    // The same close, dying after its first committed chunk.
    let db = dir.path().join("crash.db");
    let (store, catalog) = setup(&db).await;
    let crash = CloseOptions {
        fail_after_chunks: Some(1),
        ..Default::default()
    };
    let err = close(&store, &catalog, &settings, &clock, None, as_of, &crash)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let partial = documents(&store).await;
    assert_eq!(partial.len(), 4, "the first account's chunk was committed");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM runs WHERE status = 'failed'").await,
        1
    );

    // Re-run, twice for good measure, and deliver.
    let mail = dir.path().join("mail");
    let transport = EmlDir::new(&mail);
    for _ in 0..2 {
        close(
            &store,
            &catalog,
            &settings,
            &clock,
            Some(&transport),
            as_of,
            &CloseOptions::default(),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        documents(&store).await,
        want,
        "same documents, same numbers, none twice"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM outbox WHERE kind = 'document'").await,
        12
    );
    // The documents of the crashed run are reported in the next run's batch, not lost.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM finance_batches").await, 1);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM documents WHERE finance_batch_id IS NULL"
        )
        .await,
        0
    );
    assert_eq!(std::fs::read_dir(&mail).unwrap().count(), 13);
    let (sent, failed) = deliver(&store, &transport, &clock, "billing@billrun.test")
        .await
        .unwrap();
    assert_eq!((sent, failed), (0, 0), "nothing is sent twice");

    // The ledger and the cached balances agree.
    for account in ["a1", "a2", "a3"] {
        let report = store.balance(account).await.unwrap().unwrap();
        let ledger: rust_decimal::Decimal = report.entries.iter().map(|e| e.amount).sum();
        assert_eq!(report.balance, ledger, "{account}");
    }
}

#[tokio::test]
async fn the_schema_refuses_a_second_document_for_the_same_period() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dup.db");
    let (_store, _) = setup(&db).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let insert = "INSERT INTO documents (number, doc_key, kind, account_id, issued_at, due_at, currency, subtotal, \
                  discount, tax, total, credit_applied, amount_due, created_at) \
                  VALUES (?, 'renewal/s1/2026-01-01', 'invoice', 'a1', '2026-01-01', '2026-01-01', 'USD', \
                  '1', '0', '0', '1', '0', '1', 'now')";
    sqlx::query(insert)
        .bind("INV-X-1")
        .execute(&pool)
        .await
        .unwrap();
    let second = sqlx::query(insert).bind("INV-X-2").execute(&pool).await;
    assert!(
        second.is_err(),
        "a second document with the same key must be refused by the schema"
    );
}

/// A clock that moves one second each time it is read, so leases run out during a test.
struct TickingClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl billrun::clock::Clock for TickingClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let mut t = self.0.lock().unwrap();
        *t += chrono::Duration::seconds(1);
        *t
    }
}

#[tokio::test]
async fn a_claim_left_by_a_dead_worker_is_taken_over_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("claims.db");
    let (store, catalog) = setup(&db).await;
    let as_of = NaiveDate::from_ymd_opt(2026, 4, 15).unwrap();
    let start = as_of.and_hms_opt(0, 0, 0).unwrap().and_utc();
    // A worker died holding a1 with a lease running 20 seconds past the start.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO close_claims (account_id, worker, claimed_until) VALUES ('a1', 'dead:1', ?)",
    )
    .bind(
        (start + chrono::Duration::seconds(20))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
    .execute(&pool)
    .await
    .unwrap();
    let clock = TickingClock(std::sync::Mutex::new(start));
    let settings = billrun::cli::close_settings(&Config::default());
    let report = close(
        &store,
        &catalog,
        &settings,
        &clock,
        None,
        as_of,
        &CloseOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.invoices, 12,
        "a1 was waited for and closed, not skipped"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM documents WHERE account_id = 'a1'"
        )
        .await,
        4
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM close_claims").await,
        0,
        "no claim outlives the run"
    );
}
