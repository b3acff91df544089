//! The PostgreSQL implementation of the store: the production mode, where several workers
//! share one database. It owns the PostgreSQL schema (`migrations/postgres/`) and keeps the
//! semantics of the SQLite store method for method.
//!
//! SQLite serialises every writer with `BEGIN IMMEDIATE`; PostgreSQL runs writers side by side
//! under READ COMMITTED. What keeps them apart here: writes guarded by the version (or
//! balance) they were computed from, unique keys, the row lock of the `number_series` upsert
//! (held to commit, so numbering stays gapless), `ON CONFLICT` for work claims, and one table
//! lock where a write first counts what it is about to take (`create_finance_batch`).
//! Row locks are taken in one order in every write — subscriptions, then `number_series`, then
//! accounts — so writers queue behind each other instead of deadlocking; a deadlock or
//! serialisation failure that still happens is reported as `Conflict` (`store/conflict.rs`),
//! which callers retry.
//!
//! What is the same on both backends comes from `store/shared/`, expanded here and in the
//! files beside this one; those files hold what PostgreSQL does its own way: rows that
//! belong together go in one statement (`UNNEST` of arrays, one parameter per column whatever
//! the row count) rather than one round trip per row, and planner settings hold the plans of
//! claims and chunk writes whatever the statistics say. `claims.rs` claims work, `close.rs`
//! reads and commits a close's chunks, `writes.rs` the bulk writes of documents and items,
//! `import.rs` imports, and `outbox.rs`, `finance.rs` and `parking.rs` their
//! concern.

mod claims;
mod close;
pub(crate) mod cols;
mod finance;
mod import;
mod outbox;
mod parking;
mod queries;
mod writes;

// The names the shared bodies use, for this file and (`use super::*`) the files beside it.
use super::conflict::{Fail, classify, conflict_as, guarded, written};
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
use queries::all;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, QueryBuilder, Transaction};
use std::collections::BTreeSet;
use std::str::FromStr;
use writes::*;

/// The migrator holds an advisory lock, so workers starting together migrate once.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Migrate(crate::redact(&e.to_string()))
}

/// sqlx's table of applied migrations exists: 1.
const MIGRATIONS_TABLE_EXISTS: &str = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'";

/// A (table, column) pair that exists: 1. Exact names: the purge quotes them, so case
/// matters as it does there.
const COLUMN_EXISTS: &str = "SELECT COUNT(*) FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2";

/// Connections per process: a close uses one at a time; the daemon adds its HTTP handlers
/// and the outbox drain.
const MAX_CONNECTIONS: u32 = 5;

pub struct PgStore {
    pool: PgPool,
    /// For the worker's own session (`claims.rs`, `register_worker`).
    options: PgConnectOptions,
    /// The session on which this worker holds its advisory lock while it claims work.
    session: tokio::sync::Mutex<Option<claims::WorkerSession>>,
}

impl PgStore {
    /// `postgres://user:password@host:port/database`; the database must exist.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, Access::ReadWrite).await
    }

    /// As `open`; `Access::ReadOnly` makes every transaction of every connection read-only,
    /// so the server refuses any write.
    pub async fn open_with(url: &str, access: Access) -> Result<Self> {
        let connect = |e: sqlx::Error| StoreError::Connect(crate::redact(&e.to_string()));
        let mut opts = PgConnectOptions::from_str(url).map_err(connect)?;
        if access == Access::ReadOnly {
            opts = opts.options([("default_transaction_read_only", "on")]);
        }
        // One connection first: an unreachable server fails at once, naming the server and
        // the reason, where the pool would retry until its timeout and say only that.
        use sqlx::{ConnectOptions, Connection};
        let server = format!("{}:{}", opts.get_host(), opts.get_port());
        let first = opts.connect().await.map_err(|e| {
            StoreError::Connect(format!("{server}: {}", crate::redact(&e.to_string())))
        })?;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(opts.clone())
            .await
            .map_err(connect)?;
        Ok(PgStore {
            pool,
            options: opts,
            session: tokio::sync::Mutex::new(None),
        })
    }

    /// A transaction whose queries walk an index in order rather than collect and sort: for
    /// the claims, which take the next `limit` due accounts after a key (see `claims.rs`).
    async fn ordered_walk_tx(&self) -> Result<Transaction<'static, Db>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)",
        )
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Db>, sqlx::Error> {
        self.pool.begin().await
    }
}

impl Store for PgStore {}

shared::schema::schema_store!(PgStore);
shared::changes::change_store!(PgStore);
shared::deletion::deletion_store!(PgStore);
