//! Test harness: the database backends a test runs on, a fresh database per test, a sandbox
//! per test (database, mail folder, configuration) and the real `billrun` binary.
//!
//! SQLite is always there. PostgreSQL is used when a server answers at
//! `BILLRUN_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); each
//! test gets its own `billrun_test_*` database, dropped when the test ends. Without a server
//! the PostgreSQL variants pass without running and one line says so on stderr — unless
//! `BILLRUN_REQUIRE_POSTGRES=1`, which turns the missing server into a failure.

pub mod books;

use billrun::bench::with_database;
use sqlx::Connection;
use sqlx::Row;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test on every backend, as separate test functions so a failure names its backend:
/// `on_each_backend!(body: name_sqlite, name_postgres);` with `async fn body(Backend)`.
#[macro_export]
macro_rules! on_each_backend {
    ($body:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $body($crate::common::Backend::Sqlite).await
        }

        #[tokio::test]
        async fn $postgres() {
            if let Some(backend) = $crate::common::postgres() {
                $body(backend).await
            }
        }
    };
}

/// The server URL the PostgreSQL variants use (an administrative database on it).
fn admin_url() -> String {
    std::env::var("BILLRUN_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// `host:port` of a URL, for messages (no user, no password).
fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_string()
}

/// Run a future on a runtime of its own, on a thread of its own: usable from inside a test's
/// runtime (where blocking on another future would panic) and from `Drop`.
fn block_on_own_runtime<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the test harness")
            .block_on(fut)
    })
    .join()
    .expect("test harness thread panicked")
}

/// Whether the PostgreSQL server answers; asked once per test binary.
fn probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let url = admin_url();
        block_on_own_runtime(async move {
            match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url))
                .await
            {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Ok(())
                }
                Ok(Err(e)) => Err(billrun::redact(&e.to_string())),
                Err(_) => Err("no answer within 5 s".into()),
            }
        })
    })
}

/// The PostgreSQL backend if its tests should run: `None` (after one line on stderr) when
/// there is no server, a panic when `BILLRUN_REQUIRE_POSTGRES=1` and there is none.
pub fn postgres() -> Option<Backend> {
    static SKIP_NOTICE: OnceLock<()> = OnceLock::new();
    match probe() {
        Ok(()) => Some(Backend::Postgres),
        Err(why) => {
            let server = server_of(&admin_url());
            if std::env::var("BILLRUN_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "PostgreSQL is required (BILLRUN_REQUIRE_POSTGRES=1) but no server answers at {server}: {why} \
                     (set BILLRUN_TEST_POSTGRES_URL)"
                );
            }
            SKIP_NOTICE.get_or_init(|| {
                // Straight to the process's stderr: libtest captures only print!/eprint!, and
                // this line must be seen in `cargo test` output.
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL suite skipped: no server at {server} (set BILLRUN_TEST_POSTGRES_URL)"
                );
            });
            None
        }
    }
}

/// A fresh, empty database for one test: a SQLite file in a folder the caller owns, or a
/// PostgreSQL database of its own, dropped with this value.
pub struct TestDb {
    pub backend: Backend,
    /// What `database_url` is set to.
    pub url: String,
    /// The PostgreSQL database to drop.
    pg_name: Option<String>,
}

impl TestDb {
    /// `name` distinguishes several databases of one test (the SQLite file name).
    pub fn new(backend: Backend, dir: &Path, name: &str) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb {
                backend,
                url: format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
                pg_name: None,
            },
            Backend::Postgres => {
                let random = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish();
                let db = format!("billrun_test_{random:016x}");
                let admin = admin_url();
                let create = format!("CREATE DATABASE {db}");
                block_on_own_runtime(async move {
                    let mut conn = sqlx::PgConnection::connect(&admin)
                        .await
                        .unwrap_or_else(|e| panic!("connect to {}: {e}", server_of(&admin)));
                    sqlx::query(sqlx::AssertSqlSafe(create))
                        .execute(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("create the test database: {e}"));
                    let _ = conn.close().await;
                });
                TestDb {
                    backend,
                    url: with_database(&admin_url(), &db),
                    pg_name: Some(db),
                }
            }
        }
    }

    /// Run SQL with no parameters (each backend's own dialect is the caller's business).
    pub async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.close().await.unwrap();
            }
        }
    }

    /// Like `exec`, but the outcome is the caller's to judge.
    pub async fn try_exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .map(|_| ());
                conn.close().await?;
                r
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .map(|_| ());
                conn.close().await?;
                r
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = admin_url();
        // FORCE: a pool the test leaves behind must not keep the database alive.
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        block_on_own_runtime(async move {
            match sqlx::PgConnection::connect(&admin).await {
                Ok(mut conn) => {
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await
                    {
                        let _ = writeln!(std::io::stderr(), "could not drop {name}: {e}");
                    }
                    let _ = conn.close().await;
                }
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "could not drop {name}: {e}");
                }
            }
        });
    }
}

pub struct Sandbox {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new(backend: Backend) -> Sandbox {
        Sandbox::with_catalog(backend, &fixtures().join("catalog.toml"))
    }

    pub fn with_catalog(backend: Backend, catalog: &Path) -> Sandbox {
        Sandbox::build(backend, catalog, "")
    }

    /// The standard sandbox with more configuration appended.
    pub fn with_config_extra(backend: Backend, extra: &str) -> Sandbox {
        Sandbox::build(backend, &fixtures().join("catalog.toml"), extra)
    }

    fn build(backend: Backend, catalog: &Path, extra: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(backend, dir.path(), "billrun");
        let config = format!(
            "database_url = \"{db}\"\ncatalog = \"{catalog}\"\nmail_dir = \"{mail}\"\n\
             mail_from = \"Billing <billing@billrun.test>\"\nfinance_to = \"finance@billrun.test\"\n",
            db = db.url,
            catalog = catalog.display(),
            mail = dir.path().join("mail").display(),
        );
        let seller = if extra.contains("[seller]") {
            ""
        } else {
            billrun::config::EXAMPLE_SELLER
        };
        std::fs::write(
            dir.path().join("billrun.toml"),
            format!("{config}{extra}\n{seller}"),
        )
        .unwrap();
        Sandbox { db, dir }
    }

    pub fn mail(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("billrun.toml")
    }

    /// The binary with this sandbox's configuration and no `BILLRUN_*` from the test's own
    /// environment, only `env`.
    pub fn command(&self, args: &[&str], env: &[(String, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_billrun"));
        cmd.arg("--config").arg(self.config()).args(args);
        cmd.current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("BILLRUN_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run_with_env(&self, args: &[&str], env: &[(String, String)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// Run and insist on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "billrun {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Names of the `.eml` files in the mail folder, sorted.
    pub fn emails(&self) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.mail()) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".eml"))
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

/// Every table's row count and a digest of its contents: equal snapshots mean nothing was
/// written.
pub async fn snapshot(db: &TestDb) -> BTreeMap<String, (i64, String)> {
    match db.backend {
        Backend::Sqlite => sqlite_snapshot(db).await,
        Backend::Postgres => postgres_snapshot(db).await,
    }
}

async fn sqlite_snapshot(db: &TestDb) -> BTreeMap<String, (i64, String)> {
    let pool = sqlx::SqlitePool::connect(&format!("{}?mode=ro", db.url))
        .await
        .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{t}\"")))
                .fetch_one(&pool)
                .await
                .unwrap();
        // Concatenate every column of every row as text, in rowid order.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{t}\"")))
            .fetch_all(&pool)
            .await
            .unwrap();
        let mut digest = String::new();
        for r in rows {
            for i in 0..r.len() {
                let v: Option<String> = r.try_get::<Option<String>, _>(i).ok().flatten();
                let n: Option<i64> = r.try_get::<Option<i64>, _>(i).ok().flatten();
                digest.push_str(&format!("{v:?}{n:?}|"));
            }
            digest.push('\n');
        }
        out.insert(t, (count, digest));
    }
    pool.close().await;
    out
}

async fn postgres_snapshot(db: &TestDb) -> BTreeMap<String, (i64, String)> {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        // Each row as its text form, sorted, hashed: independent of physical order.
        let (count, digest): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), COALESCE(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM \"{t}\" t"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        out.insert(t, (count, digest));
    }
    conn.close().await.unwrap();
    out
}

/// The one number a query returns (`SELECT COUNT(*) …`), written to run on both backends.
pub async fn count(db: &TestDb, sql: &'static str) -> i64 {
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=ro", db.url))
                .await
                .unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let n = sqlx::query_scalar(sql)
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            conn.close().await.unwrap();
            n
        }
    }
}

/// Import `n` accounts `{prefix}00001`…, each with one monthly `basic` subscription (deferred)
/// from 2026-01-01: as of 2026-02-15 each is due for January and February.
pub fn import_monthly(sb: &Sandbox, prefix: &str, n: usize) {
    let accounts: Vec<serde_json::Value> = (1..=n)
        .map(|i| {
            serde_json::json!({"id": format!("{prefix}{i:05}"), "name": format!("Customer {i}"),
                               "email": format!("billing@{prefix}{i:05}.example"), "currency": "USD"})
        })
        .collect();
    let subscriptions: Vec<serde_json::Value> = (1..=n)
        .map(|i| {
            serde_json::json!({"id": format!("{prefix}s{i:05}"), "account": format!("{prefix}{i:05}"),
                               "policy": "deferred", "cycle": "monthly", "start": "2026-01-01",
                               "items": [{"plan": "basic"}]})
        })
        .collect();
    let file = sb.dir.path().join(format!("{prefix}-accounts.json"));
    std::fs::write(
        &file,
        serde_json::json!({"accounts": accounts, "subscriptions": subscriptions}).to_string(),
    )
    .unwrap();
    sb.ok(&["import", file.to_str().unwrap()]);
}
