//! The SQLite implementation of the store: the embedded default, and the simulator's
//! throwaway in-memory store. It owns the SQLite schema (`migrations/sqlite/`).
//!
//! Money is stored as exact decimal TEXT and dates as ISO TEXT (`cols.rs`). Every writing
//! method runs in one `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock up
//! front, so a second process waits (busy timeout) instead of failing half way.
//!
//! What is the same on both backends comes from `store/shared/`, expanded here and in the
//! files beside this one; those files hold what SQLite does its own way: bulk rows bound as
//! one JSONB parameter (`jsonb.rs`) in statements compiled once, `INDEXED BY` where SQLite
//! without statistics would scan, claims found and written inside the one write transaction.
//! `claims.rs` claims work, `close.rs` reads and commits a close's chunks, `writes.rs` the
//! bulk writes of documents and items, `import.rs` imports, and `outbox.rs`, `finance.rs` and
//! `parking.rs` their concern.

mod claims;
mod close;
pub(crate) mod cols;
mod finance;
mod import;
mod jsonb;
mod outbox;
mod parking;
mod queries;
mod writes;

// The names the shared bodies use, for this file and (`use super::*`) the files beside it.
use super::conflict::{Fail, conflict_as, guarded, written};
use super::modules::{ModuleTable, is_identifier};
use super::rows::{self, Cols, account_id};
use super::shared::changes::Issues;
use super::shared::writes::{Applied, Issue, Move, cancellations};
use super::shared::{self, parking::Parks, queries::DocFilter};
use super::*;
use crate::core::billing::SubscriptionUpdate;
use crate::core::change::{CancelOutcome, ChangeOutcome, NewPending};
use crate::core::document::{DraftDocument, Line, RefundOwed};
use crate::core::domain::{Item, PendingItem, QueuedChange};
use crate::core::licence::{Licence, LicenceMutation, LicenceOutcome};
use chrono::Datelike;
use cols::*;
use jsonb::{JsonRows, json_rows, write_rows};
use queries::all;
use sqlx::QueryBuilder;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlitePool, Transaction};
use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use writes::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Migrate(e.to_string())
}

/// sqlx's table of applied migrations exists: 1.
const MIGRATIONS_TABLE_EXISTS: &str =
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";

/// A (table, column) pair that exists: 1.
const COLUMN_EXISTS: &str = "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2";

pub struct SqliteStore {
    pool: SqlitePool,
    /// A file database in WAL mode: its committed pages are copied back into the database
    /// file by checkpoints (an in-memory database has none).
    wal: bool,
    /// A checkpoint is running in the background.
    checkpointing: Arc<AtomicBool>,
}

/// WAL size, in pages, past which a commit checkpoints by itself (SQLite's default is 1,000).
/// A close commits chunks of a few thousand pages each and checkpoints them beside the writer
/// (`SqliteStore::checkpoint_behind`); at the default, every chunk's commit would also copy
/// its own pages into the database file before the next chunk could begin.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// Create the database file readable by its owner only (0600, whatever the umask) if it
/// does not exist: it holds names, addresses and amounts. SQLite gives its `-wal` and `-shm`
/// files the database file's mode. The folder must exist: a typo in the path should be an
/// error, not a new tree of folders.
fn create_private_file(path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(StoreError::Connect(format!(
            "folder {} of the SQLite database does not exist; create it first",
            dir.display()
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(file) => {
            // The mode given to open() is masked by the umask; set it exactly.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::Connect(format!("{}: {e}", path.display())))?;
            }
            drop(file);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Connect(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

impl SqliteStore {
    /// `sqlite::memory:` opens a private in-memory database (one connection, kept open);
    /// `sqlite://PATH` or `sqlite:PATH` a file, created if missing.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, Access::ReadWrite).await
    }

    /// As `open`; `Access::ReadOnly` opens an existing file read-only and creates nothing.
    pub async fn open_with(url: &str, access: Access) -> Result<Self> {
        let read_only = access == Access::ReadOnly;
        let connect = |e: sqlx::Error| StoreError::Connect(e.to_string());
        let memory = url == "sqlite::memory:" || url == "sqlite://:memory:";
        let pool = if memory {
            let opts = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(connect)?
                .foreign_keys(true);
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await
                .map_err(connect)?
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            if let Some((_, query)) = path.split_once('?') {
                return Err(StoreError::Connect(format!(
                    "SQLite URL parameters are not supported (?{query}): billrun always opens its database read-write"
                )));
            }
            if path.is_empty() {
                return Err(StoreError::Connect("the sqlite URL names no file".into()));
            }
            if read_only {
                if !std::path::Path::new(path).is_file() {
                    return Err(StoreError::Connect(format!(
                        "the SQLite database {path} does not exist (nothing to read; `billrun migrate` creates it)"
                    )));
                }
            } else {
                create_private_file(std::path::Path::new(path))?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .read_only(read_only)
                .create_if_missing(!read_only)
                .foreign_keys(true)
                // A committed invoice must survive a power cut: it may already be emailed.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                // Checkpoints run beside the writer (`checkpoint_behind`), not inside its
                // commits; this is the backstop for whatever writes outside a close.
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
                .pragma(
                    "journal_size_limit",
                    (WAL_AUTOCHECKPOINT_PAGES * 4096).to_string(),
                );
            // WAL is recorded in the file: a read-only connection finds it there, and could
            // not switch an empty file to it (that is a write).
            let opts = if read_only {
                opts
            } else {
                opts.journal_mode(SqliteJournalMode::Wal)
            };
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(connect)?
        };
        Ok(SqliteStore {
            pool,
            wal: !memory && !read_only,
            checkpointing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Copy what the writer committed into the database file, on another connection while
    /// the writer goes on (a passive checkpoint waits for no one and blocks no one). At most
    /// one runs at a time; a failure only leaves the work to the next one.
    fn checkpoint_behind(&self) {
        if !self.wal || self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.pool.clone();
        let running = Arc::clone(&self.checkpointing);
        tokio::spawn(async move {
            let done: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "background checkpoint failed");
            }
            running.store(false, Ordering::Release);
        });
    }

    /// The one write transaction at a time: SQLite's write lock taken up front.
    async fn write_tx(&self) -> Result<Transaction<'static, Db>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// A write transaction for a walk in index order: SQLite's statements say how they walk
    /// (`INDEXED BY`, `NOT INDEXED`), so nothing more is needed.
    async fn ordered_walk_tx(&self) -> Result<Transaction<'static, Db>, sqlx::Error> {
        self.write_tx().await
    }
}

impl Store for SqliteStore {}

shared::schema::schema_store!(SqliteStore);
shared::changes::change_store!(SqliteStore);
shared::deletion::deletion_store!(SqliteStore);

#[cfg(test)]
mod tests {
    use super::*;

    /// Migration 0005 rebuilds the tables a close fills in bulk: an existing database keeps
    /// every row, the outbox's ids carry on past any ever given, and the rebuilt tables have
    /// the shape the migration promises.
    #[tokio::test]
    async fn rebuilt_close_tables_keep_their_rows_and_ids() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        MIGRATOR.run_to(4, &store.pool).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO accounts (id, name, email, currency, timezone, created_at) \
               VALUES ('a1', 'A', 'a@example.com', 'USD', 'UTC', 't'); \
             INSERT INTO subscriptions (id, account_id, policy, cycle, start_date, anchor, next_bill_date, created_at) \
               VALUES ('s1', 'a1', 'deferred', 'monthly', '2026-01-01', '2026-01-01', '2026-02-01', 't'); \
             INSERT INTO runs (id, as_of, started_at) VALUES (1, '2026-01-01', 't'); \
             INSERT INTO finance_batches (id, run_id, created_at) VALUES (1, 1, 't'); \
             INSERT INTO documents (id, number, doc_key, kind, account_id, subscription_id, run_id, finance_batch_id, \
               issued_at, due_at, currency, subtotal, discount, tax, total, credit_applied, amount_due, created_at) \
               VALUES (7, 'INV-1', 'k1', 'invoice', 'a1', 's1', 1, 1, '2026-01-01', '2026-01-01', 'USD', \
               '10', '0', '0', '10', '0', '10', 't'); \
             INSERT INTO document_lines VALUES (7, 0, 'plan', 'Basic', '10'), (7, 1, 'tax', 'VAT', '0'); \
             INSERT INTO outbox (id, message_key, kind, document_id, recipient, subject, next_attempt_at, created_at) \
               VALUES (1, 'INV-1', 'document', 7, 'a@example.com', 'Invoice', 't', 't'); \
             INSERT INTO outbox (id, message_key, kind, finance_batch_id, recipient, subject, next_attempt_at, created_at) \
               VALUES (2, 'finance-batch-1', 'finance_batch', 1, 'f@example.com', 'Batch', 't', 't'); \
             INSERT INTO outbox (id, message_key, kind, recipient, subject, next_attempt_at, created_at) \
               VALUES (9, 'gone', 'document', 'a@example.com', 'Gone', 't', 't'); \
             DELETE FROM outbox WHERE id = 9; \
             INSERT INTO close_claims VALUES ('a1', 'w1', 'later');",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.migrate().await.unwrap();

        let lines: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT document_id, position, description FROM document_lines ORDER BY position",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(lines, [(7, 0, "Basic".into()), (7, 1, "VAT".into())]);
        let outbox: Vec<(i64, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT id, message_key, document_id, finance_batch_id FROM outbox ORDER BY id",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(
            outbox,
            [
                (1, "INV-1".into(), Some(7), None),
                (2, "finance-batch-1".into(), None, Some(1)),
            ]
        );
        let claims: Vec<(String, String)> =
            sqlx::query_as("SELECT account_id, worker FROM close_claims")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(claims, [("a1".into(), "w1".into())]);

        // The next message gets an id never given before (9 was, then deleted).
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (message_key, kind, recipient, subject, next_attempt_at, created_at) \
             VALUES ('next', 'document', 'a@example.com', 'Next', 't', 't') RETURNING id",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(id, 10);
        // One message per batch; any number without one.
        let twice = sqlx::query(
            "INSERT INTO outbox (message_key, kind, finance_batch_id, recipient, subject, next_attempt_at, created_at) \
             VALUES ('again', 'finance_batch', 1, 'f@example.com', 'Batch', 't', 't')",
        )
        .execute(&store.pool)
        .await;
        assert!(twice.is_err(), "a second message for batch 1 was accepted");

        for table in ["document_lines", "close_claims"] {
            let sql: String = sqlx::query_scalar(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?",
            )
            .bind(table)
            .fetch_one(&store.pool)
            .await
            .unwrap();
            assert!(sql.ends_with("WITHOUT ROWID"), "{table}: {sql}");
        }
        for table in ["document_lines", "close_claims", "outbox"] {
            let references: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pragma_foreign_key_list(?)")
                    .bind(table)
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(references, 0, "{table} still checks references");
        }
        let broken: Vec<(String,)> =
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert!(broken.is_empty(), "{broken:?}");
    }
}
