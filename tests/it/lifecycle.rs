//! Cancellation, retention and deletion through the real binary on each backend: what is
//! deleted (personal data, licence assignments, module data), what stays (documents), and
//! what is never touched (active accounts, accounts canceled but not yet due).

use crate::common::{Backend, Sandbox, count, fixtures, snapshot};

/// A sandbox whose database also holds a module data table, configured for the `reports`
/// module, with rows for every account.
async fn sandbox(backend: Backend, extra_config: &str) -> Sandbox {
    let sb = Sandbox::with_config_extra(
        backend,
        &format!(
            "{extra_config}\n[modules]\nreports = [{{ table = \"report_rows\", account_column = \"account_id\" }}]\n"
        ),
    );
    sb.ok(&["migrate"]);
    // The module's own table; this SQL reads the same in both dialects.
    sb.db
        .exec(
            "CREATE TABLE report_rows (account_id TEXT NOT NULL, payload TEXT); \
             INSERT INTO report_rows (account_id, payload) \
             VALUES ('a1', 'data'), ('a1', 'data'), ('a2', 'data'), ('a3', 'data')",
        )
        .await;
    sb.ok(&[
        "import",
        fixtures().join("lifecycle.json").to_str().unwrap(),
    ]);
    sb.ok(&["close", "--as-of", "2026-01-10"]);
    sb
}

on_each_backend!(canceled_account_is_deleted:
    canceled_account_is_deleted_at_period_end_and_its_documents_stay_sqlite,
    canceled_account_is_deleted_at_period_end_and_its_documents_stay_postgres
);

async fn canceled_account_is_deleted(backend: Backend) {
    let sb = sandbox(backend, "").await;
    // Quoted-printable folds long lines with a trailing `=`.
    let eml = std::fs::read_to_string(sb.mail().join("INV-2026-000001.eml"))
        .unwrap()
        .replace("=\r\n", "")
        .replace("=\n", "");
    assert!(
        eml.contains(
            "1 licence(s) on this subscription are not assigned to anyone and are still billed"
        ),
        "{eml}"
    );

    let out = sb.ok(&["cancel", "s1", "--at", "2026-01-15"]);
    assert!(out.contains("ends on 2026-02-01"), "{out}");
    sb.ok(&["cancel", "s2", "--at", "2026-01-15"]);
    sb.ok(&["cancel", "s2", "--undo"]);

    let before = snapshot(&sb.db).await;
    let dry = sb.ok(&["close", "--as-of", "2026-02-10", "--dry-run"]);
    assert!(dry.contains("Would delete the data of: a1"), "{dry}");
    assert!(dry.contains("Would issue 2 invoice(s)"), "{dry}");
    assert_eq!(snapshot(&sb.db).await, before, "the dry run wrote");

    let real = sb.ok(&["close", "--as-of", "2026-02-10"]);
    assert!(
        real.contains("Issued 2 invoice(s)") && real.contains("Deleted the data of: a1"),
        "{real}"
    );
    let db = &sb.db;
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM documents WHERE issued_at = '2026-02-01'"
        )
        .await,
        2
    );
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM documents WHERE account_id = 'a1'").await,
        1,
        "a1's January invoice stays"
    );
    assert_eq!(count(db, "SELECT COUNT(*) FROM accounts WHERE id = 'a1' AND status = 'deleted' AND name = '' AND email = ''").await, 1);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM licences WHERE assigned_to IS NOT NULL AND subscription_id = 's1'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM report_rows WHERE account_id = 'a1'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM report_rows WHERE account_id IN ('a2', 'a3')"
        )
        .await,
        2,
        "others' data stays"
    );
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM accounts WHERE status = 'active'").await,
        2
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'account_deleted' AND account_id = 'a1'"
        )
        .await,
        1
    );
    let batch = std::fs::read_dir(sb.mail())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("finance-batch-000002")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .next()
        .expect("a second finance batch");
    assert!(
        batch.contains("Accounts whose data was deleted") && batch.contains("  a1"),
        "{batch}"
    );

    // A deleted account takes no new subscription; nothing is written.
    let before = snapshot(db).await;
    let out = sb.run(&[
        "import",
        fixtures()
            .join("bad/sub_for_deleted_account.json")
            .to_str()
            .unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("account \"a1\" is deleted; it takes no new subscriptions"),
        "{err}"
    );
    assert_eq!(snapshot(db).await, before);

    // A second run deletes nothing more and issues nothing.
    let again = sb.ok(&["close", "--as-of", "2026-02-10"]);
    assert!(
        again.contains("Issued 0 invoice(s)") && !again.contains("Deleted the data"),
        "{again}"
    );
}

on_each_backend!(retention_keeps:
    retention_keeps_a_canceled_account_until_its_date_sqlite,
    retention_keeps_a_canceled_account_until_its_date_postgres
);

async fn retention_keeps(backend: Backend) {
    let sb = sandbox(backend, "retention_days = 30").await;
    sb.ok(&["cancel", "s1", "--at", "2026-01-15"]);
    let out = sb.ok(&["close", "--as-of", "2026-02-10"]);
    assert!(!out.contains("Deleted the data"), "{out}");
    let db = &sb.db;
    assert_eq!(count(db, "SELECT COUNT(*) FROM accounts WHERE id = 'a1' AND status = 'canceled' AND delete_after = '2026-03-03'").await, 1);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM report_rows WHERE account_id = 'a1'"
        )
        .await,
        2,
        "not yet due: untouched"
    );
    let dry = sb.ok(&["close", "--as-of", "2026-03-02", "--dry-run"]);
    assert!(!dry.contains("a1"), "{dry}");
    let out = sb.ok(&["close", "--as-of", "2026-03-03"]);
    assert!(out.contains("Deleted the data of: a1"), "{out}");
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM report_rows WHERE account_id = 'a1'"
        )
        .await,
        0
    );
}

on_each_backend!(deletion_refuses:
    deletion_refuses_active_and_not_yet_due_accounts_inside_the_store_sqlite,
    deletion_refuses_active_and_not_yet_due_accounts_inside_the_store_postgres
);

async fn deletion_refuses(backend: Backend) {
    use billrun::core::domain::AccountId;
    use billrun::store::DeletionRequest;
    let sb = sandbox(backend, "retention_days = 30").await;
    sb.ok(&["cancel", "s1", "--at", "2026-01-15"]);
    sb.ok(&["close", "--as-of", "2026-02-10"]);
    let store = billrun::store::open(&sb.db.url).await.unwrap();
    let modules =
        billrun::config::Config::load(Some(&sb.dir.path().join("billrun.toml")), |_| None)
            .unwrap()
            .modules;
    let before = snapshot(&sb.db).await;
    let as_of = "2026-02-10".parse().unwrap();
    for (account, why) in [("a2", "active"), ("a1", "canceled, retention not over")] {
        let err = store
            .delete_account(&DeletionRequest {
                account: &AccountId::new(account).unwrap(),
                as_of,
                modules: &modules,
                actor: "test",
                now: chrono::Utc::now(),
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("is not canceled and past its retention date"),
            "{why}: {err}"
        );
    }
    assert!(store.deletable_accounts(as_of).await.unwrap().is_empty());
    assert_eq!(
        snapshot(&sb.db).await,
        before,
        "a refused deletion changed something"
    );
}

on_each_backend!(deferred_downgrade_purges:
    deferred_downgrade_purges_the_modules_the_new_plan_lacks_sqlite,
    deferred_downgrade_purges_the_modules_the_new_plan_lacks_postgres
);

async fn deferred_downgrade_purges(backend: Backend) {
    let sb = sandbox(backend, "").await;
    let db = &sb.db;
    // a3 also takes Seat Pro (modules core + reports) under `deferred`.
    let extra = sb.dir.path().join("s4.json");
    std::fs::write(
        &extra,
        r#"{"subscriptions": [{"id": "s4", "account": "a3", "policy": "deferred", "cycle": "monthly",
            "start": "2026-01-01", "items": [{"plan": "seat_pro"}]}]}"#,
    )
    .unwrap();
    sb.ok(&["import", extra.to_str().unwrap()]);
    sb.ok(&["close", "--as-of", "2026-01-10"]);
    // An upgrade keeps every module's data.
    sb.ok(&["change", "s3", "--plan", "plus", "--at", "2026-01-15"]);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM report_rows WHERE account_id = 'a3'"
        )
        .await,
        1
    );
    // Seat (core only) lacks `reports`: its data goes at once, audited; others' stays.
    sb.ok(&["change", "s4", "--plan", "seat", "--at", "2026-01-20"]);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM report_rows WHERE account_id = 'a3'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM report_rows WHERE account_id IN ('a1', 'a2')"
        )
        .await,
        3
    );
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'module_data_purged' AND account_id = 'a3'").await,
        1
    );
}
