//! Security: secrets never reach output, logs or errors; module purge identifiers are
//! validated before anything runs; the deletion path refuses anything not canceled and past
//! its date, inside the store.

use crate::common::{Backend, Sandbox, count, fixtures, snapshot};
use billrun::config::{Config, ModuleTable};
use billrun::core::domain::AccountId;
use billrun::store::{DeletionRequest, ModuleMap, StoreError};
use std::process::Output;

const DB_SECRET: &str = "S3cretPw";
const SMTP_URL_SECRET: &str = "S3cretSmtp";
const SMTP_PASSWORD: &str = "S3cretPass";
const FILE_PASSWORD: &str = "S3cretFile";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Debug logs, as JSON or as text: everything the binary can say.
fn loud(json_logs: bool) -> Vec<(String, String)> {
    let mut e = env(&[("BILLRUN_LOG", "trace"), ("RUST_LOG", "trace")]);
    if json_logs {
        e.push(("BILLRUN_LOG_FORMAT".into(), "json".into()));
    }
    e
}

fn assert_no_secret(what: &str, out: &Output) {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [DB_SECRET, SMTP_URL_SECRET, SMTP_PASSWORD, FILE_PASSWORD] {
        assert!(
            !text.contains(secret),
            "{what}: {secret} appears in the output:\n{text}"
        );
    }
}

/// An unreachable PostgreSQL server whose URL holds a password, and SMTP settings with
/// passwords in every form: each command fails, says why and where, and shows no secret.
#[test]
fn secrets_never_appear_when_the_database_is_unreachable() {
    let sb = Sandbox::new(Backend::Sqlite);
    let password_file = sb.dir.path().join("smtp-password");
    std::fs::write(&password_file, format!("{FILE_PASSWORD}\n")).unwrap();
    let import = fixtures().join("three_monthly.json");
    let commands: &[&[&str]] = &[
        &["migrate"],
        &["close", "--as-of", "2026-02-01", "--json"],
        &["close", "--as-of", "2026-02-01", "--dry-run"],
        &["send"],
        &["import", import.to_str().unwrap()],
        &["invoices", "--json"],
    ];
    let smtp_variants = [
        env(&[(
            "BILLRUN_SMTP_URL",
            &format!("smtp://user:{SMTP_URL_SECRET}@127.0.0.1:1"),
        )]),
        env(&[
            ("BILLRUN_SMTP_URL", "smtp://127.0.0.1:1"),
            ("BILLRUN_SMTP_USER", "user"),
            ("BILLRUN_SMTP_PASSWORD", SMTP_PASSWORD),
        ]),
        env(&[
            ("BILLRUN_SMTP_URL", "smtps://127.0.0.1:1"),
            ("BILLRUN_SMTP_USER", "user"),
            (
                "BILLRUN_SMTP_PASSWORD_FILE",
                password_file.to_str().unwrap(),
            ),
        ]),
    ];
    for (i, smtp) in smtp_variants.iter().enumerate() {
        for args in commands {
            let mut e = loud(i % 2 == 0);
            e.extend(smtp.iter().cloned());
            e.push((
                "BILLRUN_DATABASE_URL".into(),
                format!("postgres://billrun:{DB_SECRET}@127.0.0.1:1/nope"),
            ));
            let out = sb.run_with_env(args, &e);
            let what = format!("billrun {args:?} with SMTP settings {i}");
            assert!(!out.status.success(), "{what}: exited 0");
            assert_no_secret(&what, &out);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let error = stderr
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_else(|| panic!("{what}: no error line in {stderr}"));
            assert!(
                error.contains("cannot open the database") && error.contains("127.0.0.1:1"),
                "{what}: the error does not say what failed and where: {error}"
            );
        }
    }
}

/// A working database and an unreachable SMTP server with credentials: the close and the
/// send report the failed deliveries, the messages stay queued, and no secret is shown.
async fn smtp_down(backend: Backend) {
    let sb = Sandbox::new(backend);
    let password_file = sb.dir.path().join("smtp-password");
    std::fs::write(&password_file, format!("{FILE_PASSWORD}\n")).unwrap();
    sb.ok(&[
        "import",
        fixtures().join("three_monthly.json").to_str().unwrap(),
    ]);
    let variants = [
        env(&[
            (
                "BILLRUN_SMTP_URL",
                &format!("smtp://user:{SMTP_URL_SECRET}@127.0.0.1:1"),
            ),
            ("BILLRUN_SMTP_USER", "user"),
            ("BILLRUN_SMTP_PASSWORD", SMTP_PASSWORD),
        ]),
        env(&[
            ("BILLRUN_SMTP_URL", "smtp://127.0.0.1:1"),
            ("BILLRUN_SMTP_USER", "user"),
            (
                "BILLRUN_SMTP_PASSWORD_FILE",
                password_file.to_str().unwrap(),
            ),
        ]),
    ];
    for (i, smtp) in variants.iter().enumerate() {
        let mut e = loud(i == 0);
        e.extend(smtp.iter().cloned());
        let as_of = if i == 0 { "2026-02-01" } else { "2026-03-01" };
        let close = sb.run_with_env(&["close", "--as-of", as_of, "--json"], &e);
        assert_no_secret(&format!("close with SMTP settings {i}"), &close);
        assert_eq!(
            close.status.code(),
            Some(4),
            "close with SMTP down: {}",
            String::from_utf8_lossy(&close.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&close.stdout).unwrap();
        assert!(
            !report.to_string().contains("S3cret"),
            "close --json shows a secret: {report}"
        );
        let send = sb.run_with_env(&["send", "--retry-now"], &e);
        assert_no_secret(&format!("send with SMTP settings {i}"), &send);
        let stdout = String::from_utf8_lossy(&send.stdout);
        assert!(
            stdout.contains("Sent 0 message(s)") && !send.status.success(),
            "send with SMTP down: {stdout}{}",
            String::from_utf8_lossy(&send.stderr)
        );
    }
    assert!(sb.emails().is_empty(), "nothing went to the .eml folder");
    assert_eq!(
        count(&sb.db, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await,
        0
    );
    assert!(count(&sb.db, "SELECT COUNT(*) FROM outbox").await > 0);
    // The recorded errors say what failed, and hold no secret either.
    let errors = count(
        &sb.db,
        "SELECT COUNT(*) FROM outbox WHERE last_error LIKE '%S3cret%'",
    )
    .await;
    assert_eq!(errors, 0, "an outbox error holds a secret");
}

on_each_backend!(smtp_down:
    secrets_never_appear_when_smtp_is_unreachable_sqlite,
    secrets_never_appear_when_smtp_is_unreachable_postgres
);

#[test]
fn config_debug_output_redacts_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("billrun.toml");
    std::fs::write(
        &path,
        format!(
            "database_url = \"postgres://billrun:{DB_SECRET}@db.example:5432/billing\"\n{}",
            billrun::config::EXAMPLE_SELLER
        ),
    )
    .unwrap();
    let vars = env(&[
        (
            "BILLRUN_SMTP_URL",
            &format!("smtps://user:{SMTP_URL_SECRET}@mail.example:465"),
        ),
        ("BILLRUN_SMTP_USER", "user"),
        ("BILLRUN_SMTP_PASSWORD", SMTP_PASSWORD),
    ]);
    let config = Config::load(Some(&path), |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    // The values are there, for the program...
    assert_eq!(config.smtp_password.as_deref(), Some(SMTP_PASSWORD));
    assert!(config.database_url.contains(DB_SECRET));
    // ...and never in what it prints.
    let shown = format!("{config:?} {config:#?}");
    for secret in [DB_SECRET, SMTP_URL_SECRET, SMTP_PASSWORD] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("db.example:5432") && shown.contains("mail.example:465"),
        "{shown}"
    );
    let settings = config.smtp_settings().unwrap().unwrap();
    let shown = format!("{settings:?}");
    for secret in [SMTP_URL_SECRET, SMTP_PASSWORD] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

/// Identifiers a `[modules]` table must never accept, and what the refusal says.
const BAD_MODULE_TABLES: &[(&str, &str, &str)] = &[
    (
        "reports; DROP TABLE accounts",
        "account_id",
        "is not a plain SQL identifier",
    ),
    ("\"x\"", "account_id", "is not a plain SQL identifier"),
    (
        "report_rows",
        "account_id\"; DELETE FROM documents; --",
        "is not a plain SQL identifier",
    ),
    ("report rows", "account_id", "is not a plain SQL identifier"),
    ("", "account_id", "is not a plain SQL identifier"),
    ("1table", "account_id", "is not a plain SQL identifier"),
    ("documents", "account_id", "is one of billrun's own tables"),
    ("Accounts", "id", "is one of billrun's own tables"),
    (
        "balance_ledger",
        "account_id",
        "is one of billrun's own tables",
    ),
    (
        "_sqlx_migrations",
        "version",
        "is one of billrun's own tables",
    ),
];

async fn module_identifiers(backend: Backend) {
    let sb = Sandbox::new(backend);
    sb.ok(&[
        "import",
        fixtures().join("three_monthly.json").to_str().unwrap(),
    ]);
    sb.ok(&["close", "--as-of", "2026-02-01"]);
    let good = std::fs::read_to_string(sb.config()).unwrap();
    let before = snapshot(&sb.db).await;
    let mail = sb.emails();
    for (table, column, reason) in BAD_MODULE_TABLES {
        std::fs::write(
            sb.config(),
            format!(
                "{good}\n[modules]\nreports = [{{ table = {table:?}, account_column = {column:?} }}]\n"
            ),
        )
        .unwrap();
        for args in [
            &["migrate"][..],
            &["close", "--as-of", "2026-06-01"],
            &["cancel", "s1", "--at", "2026-02-10"],
        ] {
            let out = sb.run(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().next().unwrap_or("");
            assert!(
                !out.status.success()
                    && first.contains("modules.reports")
                    && first.contains(reason),
                "{table:?}/{column:?} with {args:?}: {first:?}"
            );
            assert_eq!(
                snapshot(&sb.db).await,
                before,
                "{table:?}: the database changed"
            );
            assert_eq!(sb.emails(), mail, "{table:?}: mail was written");
        }
    }
}

on_each_backend!(module_identifiers:
    module_tables_with_unsafe_or_own_names_are_refused_and_nothing_is_written_sqlite,
    module_tables_with_unsafe_or_own_names_are_refused_and_nothing_is_written_postgres
);

/// The lifecycle sandbox: a module table with rows for every account, three accounts with one
/// subscription each, 30 days of retention, a1 canceled (its data due on 2026-03-03).
async fn lifecycle(backend: Backend) -> (Sandbox, ModuleMap) {
    let sb = Sandbox::with_config_extra(
        backend,
        "retention_days = 30\n[modules]\nreports = [{ table = \"report_rows\", account_column = \"account_id\" }]\n",
    );
    sb.ok(&["migrate"]);
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
    sb.ok(&["cancel", "s1", "--at", "2026-01-15"]);
    sb.ok(&["close", "--as-of", "2026-02-10"]);
    let modules = Config::load(Some(&sb.config()), |_| None).unwrap().modules;
    (sb, modules)
}

async fn deletion_guard(backend: Backend) {
    let (sb, modules) = lifecycle(backend).await;
    let db = &sb.db;
    // a3 marked canceled and past its date while its subscription is still active: only the
    // store's own guard stands between it and deletion.
    db.exec("UPDATE accounts SET status = 'canceled', delete_after = '2026-01-01' WHERE id = 'a3'")
        .await;
    let store = billrun::store::open(&db.url).await.unwrap();
    let as_of = "2026-02-10".parse().unwrap();
    let before = snapshot(db).await;
    for (account, why) in [
        ("a2", "active"),
        ("a1", "canceled, delete_after in the future"),
        (
            "a3",
            "canceled and past its date, with an active subscription",
        ),
        ("zz", "unknown"),
    ] {
        let r = store
            .delete_account(&DeletionRequest {
                account: &AccountId::new(account).unwrap(),
                as_of,
                modules: &modules,
                actor: "test",
                now: chrono::Utc::now(),
            })
            .await;
        match r {
            Err(StoreError::Rejected(msg)) => assert!(
                msg.contains(account) && msg.contains("nothing was deleted"),
                "{why}: {msg}"
            ),
            other => panic!("{why}: expected a rejection, got {other:?}"),
        }
    }
    assert!(
        store.deletable_accounts(as_of).await.unwrap().is_empty(),
        "none of them is deletable"
    );
    assert_eq!(snapshot(db).await, before, "a refused deletion wrote");
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM report_rows").await,
        4,
        "module data stays"
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM accounts WHERE email <> '' AND status <> 'deleted'"
        )
        .await,
        3
    );

    // An identifier smuggled past the configuration is refused by the store as well, and the
    // deletion it was part of is rolled back whole.
    let due = "2026-03-03".parse().unwrap();
    let mut hostile: ModuleMap = modules.clone();
    hostile.insert(
        "zz_evil".into(),
        vec![ModuleTable {
            table: "report_rows\"; DROP TABLE accounts; --".into(),
            account_column: "account_id".into(),
        }],
    );
    let before = snapshot(db).await;
    let r = store
        .delete_account(&DeletionRequest {
            account: &AccountId::new("a1").unwrap(),
            as_of: due,
            modules: &hostile,
            actor: "test",
            now: chrono::Utc::now(),
        })
        .await;
    assert!(
        matches!(&r, Err(StoreError::Rejected(m)) if m.contains("not a plain identifier")),
        "{r:?}"
    );
    assert_eq!(snapshot(db).await, before, "the refused deletion wrote");

    // Canceled, past its date, nothing active: deleted, its documents kept.
    let docs = count(db, "SELECT COUNT(*) FROM documents WHERE account_id = 'a1'").await;
    assert!(docs > 0);
    let a1 = AccountId::new("a1").unwrap();
    let request = DeletionRequest {
        account: &a1,
        as_of: due,
        modules: &modules,
        actor: "test",
        now: chrono::Utc::now(),
    };
    let deletion = store.delete_account(&request).await.unwrap();
    assert_eq!(deletion.account, "a1");
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM accounts WHERE id = 'a1' AND status = 'deleted' AND name = '' AND email = ''").await,
        1
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
        count(db, "SELECT COUNT(*) FROM report_rows").await,
        2,
        "the others' data stays"
    );
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM documents WHERE account_id = 'a1'").await,
        docs
    );
    // And not twice.
    let again = store.delete_account(&request).await;
    assert!(matches!(again, Err(StoreError::Rejected(_))), "{again:?}");
}

on_each_backend!(deletion_guard:
    deletion_refuses_anything_not_canceled_and_past_its_date_sqlite,
    deletion_refuses_anything_not_canceled_and_past_its_date_postgres
);
