//! A close that dies half way, then runs again, issues exactly what an uninterrupted close
//! issues: same documents, same numbers, none twice, one email each. Runs on each backend
//! through the library, with the failure injected after a committed chunk.

use crate::common::{Backend, TestDb, count, fixtures};
use billrun::clock::ManualClock;
use billrun::close::CloseOptions;
use billrun::config::Config;
use billrun::context::Billing;
use billrun::core::catalog::Catalog;
use billrun::input::{self, ImportFile};
use billrun::mail::EmlDir;
use billrun::store::Store;
use chrono::NaiveDate;
use std::collections::BTreeMap;

async fn setup(db: &TestDb) -> (Box<dyn Store>, Catalog) {
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
    let store = billrun::store::open(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store.import(&batch, chrono::Utc::now()).await.unwrap();
    (store, catalog)
}

/// (number, key, total, amount due) of every stored document.
async fn documents(store: &dyn Store) -> Vec<(String, String, String, String)> {
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

on_each_backend!(crashed_close_resumes:
    a_crashed_close_resumes_without_issuing_anything_twice_sqlite,
    a_crashed_close_resumes_without_issuing_anything_twice_postgres
);

async fn crashed_close_resumes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let as_of = NaiveDate::from_ymd_opt(2026, 4, 15).unwrap();
    let clock = ManualClock::at_date(as_of);
    let mut settings = billrun::close::CloseSettings::from_config(&Config::default());
    settings.chunk_size = 1; // one account per transaction, so the crash falls between chunks

    // Reference: an uninterrupted close.
    let clean_db = TestDb::new(backend, dir.path(), "clean");
    let (clean, catalog) = setup(&clean_db).await;
    Billing {
        store: clean.as_ref(),
        catalog: &catalog,
        settings: &settings,
        clock: &clock,
        transport: None,
    }
    .close(as_of, &CloseOptions::default())
    .await
    .unwrap();
    let want = documents(clean.as_ref()).await;
    assert_eq!(want.len(), 12);

    // The same close, dying after its first committed chunk.
    let db = TestDb::new(backend, dir.path(), "crash");
    let (store, catalog) = setup(&db).await;
    let store = store.as_ref();
    let crash = CloseOptions {
        fail_after_chunks: Some(1),
        ..Default::default()
    };
    let err = Billing {
        store,
        catalog: &catalog,
        settings: &settings,
        clock: &clock,
        transport: None,
    }
    .close(as_of, &crash)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let partial = documents(store).await;
    assert_eq!(partial.len(), 4, "the first account's chunk was committed");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM runs WHERE status = 'failed'").await,
        1
    );

    // Re-run, twice for good measure, and deliver.
    let mail = dir.path().join("mail");
    let transport = EmlDir::new(&mail);
    for _ in 0..2 {
        Billing {
            store,
            catalog: &catalog,
            settings: &settings,
            clock: &clock,
            transport: Some(&transport),
        }
        .close(as_of, &CloseOptions::default())
        .await
        .unwrap();
    }
    assert_eq!(
        documents(store).await,
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
    let d = Billing {
        store,
        catalog: &catalog,
        settings: &settings,
        clock: &clock,
        transport: Some(&transport),
    }
    .deliver_due()
    .await
    .unwrap();
    let (sent, failed) = (d.sent, d.failed);
    assert_eq!((sent, failed), (0, 0), "nothing is sent twice");

    // The ledger and the cached balances agree.
    for account in ["a1", "a2", "a3"] {
        let report = store.balance(account).await.unwrap().unwrap();
        let ledger: rust_decimal::Decimal = report.entries.iter().map(|e| e.amount).sum();
        assert_eq!(report.balance, ledger, "{account}");
    }
}

on_each_backend!(schema_refuses_duplicate:
    the_schema_refuses_a_second_document_for_the_same_period_sqlite,
    the_schema_refuses_a_second_document_for_the_same_period_postgres
);

async fn schema_refuses_duplicate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path(), "dup");
    let (_store, _) = setup(&db).await;
    // Amounts are exact TEXT on SQLite, NUMERIC on PostgreSQL; timestamps TEXT vs TIMESTAMPTZ.
    let insert = |number: &str| match backend {
        Backend::Sqlite => format!(
            "INSERT INTO documents (number, doc_key, kind, account_id, issued_at, due_at, currency, subtotal, \
             discount, tax, total, credit_applied, amount_due, created_at) \
             VALUES ('{number}', 'renewal/s1/2026-01-01', 'invoice', 'a1', '2026-01-01', '2026-01-01', 'USD', \
             '1', '0', '0', '1', '0', '1', '2026-01-01T00:00:00.000000Z')"
        ),
        Backend::Postgres => format!(
            "INSERT INTO documents (number, doc_key, kind, account_id, issued_at, due_at, currency, subtotal, \
             discount, tax, total, credit_applied, amount_due, created_at) \
             VALUES ('{number}', 'renewal/s1/2026-01-01', 'invoice', 'a1', DATE '2026-01-01', DATE '2026-01-01', 'USD', \
             1.00, 0.00, 0.00, 1.00, 0.00, 1.00, now())"
        ),
    };
    db.exec(&insert("INV-X-1")).await;
    let second = db.try_exec(&insert("INV-X-2")).await;
    let err =
        second.expect_err("a second document with the same key must be refused by the schema");
    assert!(
        err.to_string().to_lowercase().contains("unique"),
        "refused for the wrong reason: {err}"
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

on_each_backend!(dead_worker_claim:
    a_claim_left_by_a_dead_worker_is_taken_over_after_its_lease_sqlite,
    a_claim_left_by_a_dead_worker_is_taken_over_after_its_lease_postgres
);

async fn dead_worker_claim(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path(), "claims");
    let (store, catalog) = setup(&db).await;
    let store = store.as_ref();
    let as_of = NaiveDate::from_ymd_opt(2026, 4, 15).unwrap();
    let start = as_of.and_hms_opt(0, 0, 0).unwrap().and_utc();
    // A worker died holding a1 with a lease running 20 seconds past the start. SQLite keeps
    // the lease as RFC 3339 text (compared as text, so in the store's own format),
    // PostgreSQL as TIMESTAMPTZ.
    let lease = start + chrono::Duration::seconds(20);
    db.exec(&match backend {
        Backend::Sqlite => format!(
            "INSERT INTO close_claims (account_id, worker, claimed_until) VALUES ('a1', 'dead:1', '{}')",
            lease.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        Backend::Postgres => format!(
            "INSERT INTO close_claims (account_id, worker, claimed_until) \
             VALUES ('a1', 'dead:1', TIMESTAMPTZ '{}')",
            lease.to_rfc3339()
        ),
    })
    .await;
    let clock = TickingClock(std::sync::Mutex::new(start));
    let settings = billrun::close::CloseSettings::from_config(&Config::default());
    let report = Billing {
        store,
        catalog: &catalog,
        settings: &settings,
        clock: &clock,
        transport: None,
    }
    .close(as_of, &CloseOptions::default())
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
