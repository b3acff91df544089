//! Test harness: a sandbox per test with its own SQLite file, mail folder and configuration,
//! and the real `billrun` binary.
#![allow(dead_code)]

use sqlx::Row;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with_catalog(&fixtures().join("catalog.toml"))
    }

    pub fn with_catalog(catalog: &Path) -> Sandbox {
        Sandbox::build(catalog, "")
    }

    /// The standard sandbox with more configuration appended.
    pub fn with_config_extra(extra: &str) -> Sandbox {
        Sandbox::build(&fixtures().join("catalog.toml"), extra)
    }

    fn build(catalog: &Path, extra: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "database_url = \"sqlite://{db}\"\ncatalog = \"{catalog}\"\nmail_dir = \"{mail}\"\n\
             mail_from = \"Billing <billing@billrun.test>\"\nfinance_to = \"finance@billrun.test\"\n",
            db = dir.path().join("billrun.db").display(),
            catalog = catalog.display(),
            mail = dir.path().join("mail").display(),
        );
        std::fs::write(
            dir.path().join("billrun.toml"),
            format!("{config}{extra}\n"),
        )
        .unwrap();
        Sandbox { dir }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("billrun.db")
    }

    pub fn mail(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    pub fn run_with_env(&self, args: &[&str], env: &[(String, String)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_billrun"));
        cmd.arg("--config")
            .arg(self.dir.path().join("billrun.toml"))
            .args(args);
        cmd.current_dir(self.dir.path());
        for (k, v) in std::env::vars() {
            if k.starts_with("BILLRUN_") {
                cmd.env_remove(k);
            }
            let _ = v;
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
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
pub async fn snapshot(db: &Path) -> BTreeMap<String, (i64, String)> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
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

pub async fn count(db: &Path, sql: &'static str) -> i64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}
