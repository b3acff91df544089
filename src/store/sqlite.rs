//! The SQLite implementation of [`Store`]: the embedded default, and the simulator's
//! throwaway in-memory store.
//!
//! Money is stored as exact decimal TEXT and dates as ISO TEXT. Every writing method runs in
//! one `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock up front, so a second
//! process waits (busy timeout) instead of failing half way.

use super::*;
use crate::core::billing::AccountState;
use crate::core::change::{CancelOutcome, ChangeOutcome};
use crate::core::document::{DraftDocument, Line, LineKind, REFUND_ON_CANCEL, RefundOwed};
use crate::core::domain::{
    AccountStatus, Discount, Item, PendingItem, Subscription, SubscriptionId, SubscriptionStatus,
    TaxRate,
};
use crate::core::domain::{QueuedChange, Target};
use crate::core::licence::{Licence, LicenceMutation, LicenceOutcome, LicenceStatus};
use crate::core::money::Currency;
use crate::core::period::Period;
use chrono::{Datelike, SecondsFormat};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

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

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn dec(s: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str_exact(s).map_err(|_| StoreError::Corrupt(format!("amount {s:?}")))
}

fn date(s: &str) -> Result<NaiveDate, StoreError> {
    // The form dates are stored in, read without chrono's general parser (a chunk reads a
    // dozen thousand dates); anything else goes through it.
    if let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *s.as_bytes()
        && [y0, y1, y2, y3, m0, m1, d0, d1]
            .iter()
            .all(u8::is_ascii_digit)
    {
        let n = |ds: &[u8]| ds.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
        let year = n(&[y0, y1, y2, y3]) as i32;
        if let Some(d) = NaiveDate::from_ymd_opt(year, n(&[m0, m1]), n(&[d0, d1])) {
            return Ok(d);
        }
    }
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("date {s:?}")))
}

fn opt_date(s: Option<String>) -> Result<Option<NaiveDate>, StoreError> {
    s.as_deref().map(date).transpose()
}

fn corrupt(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn conflict_on_unique(e: sqlx::Error, what: String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => e.into(),
    }
}

/// `col IN (?, ?, …)` for a list of text values.
fn push_in<'a>(q: &mut QueryBuilder<Sqlite>, values: impl IntoIterator<Item = &'a str>) {
    q.push(" IN (");
    let mut sep = q.separated(", ");
    for v in values {
        sep.push_bind(v.to_string());
    }
    sep.push_unseparated(")");
}

/// Many rows as one JSON array of arrays, bound as one parameter and taken apart in SQL
/// (`SELECT value->>0, value->>1, … FROM jsonb_each(?1)`). Bulk writes go this way rather
/// than as multi-row `VALUES` lists: the statement text is fixed, so SQLite compiles it once
/// per connection (sqlx's statement cache) instead of once per call, and sqlx binds one value
/// instead of allocating one per cell — that overhead, not SQLite's own work, was most of a
/// chunk's commit.
///
/// The array is written in SQLite's binary JSON, JSONB (<https://sqlite.org/jsonb.html>, a
/// stable part of the file format), not as JSON text: SQLite would otherwise parse the text
/// into JSONB first, and strings go in as they are, unescaped. `jsonb_each`, not `json_each`:
/// its `value` is the row as JSONB, which `->>` indexes directly (json_each's is JSON text,
/// rendered and parsed again for every cell read). Inserts read `… ORDER BY rowid`: the table
/// function yields the array in order and tells the planner so (no sort), and the ORDER BY
/// pins that order, so rowids follow the order the rows were given in.
struct JsonRows {
    jsonb: Vec<u8>,
    rows: usize,
    /// Where the row being written starts.
    row: Option<usize>,
    /// Room to format a value in before it is copied in (its size goes first).
    scratch: Vec<u8>,
}

// JSONB element types (the low four bits of an element's first byte).
const JSONB_NULL: u8 = 0;
const JSONB_INT: u8 = 3;
/// UTF-8 text as it is, escaped by SQLite if it is ever rendered as JSON text.
const JSONB_TEXTRAW: u8 = 10;
const JSONB_ARRAY: u8 = 11;
/// The high four bits of a first byte whose payload size follows in four bytes, big-endian.
/// Arrays use it (their size is known only at their end, then filled in); SQLite accepts a
/// longer size field than needed.
const JSONB_SIZE4: u8 = 14 << 4;

impl JsonRows {
    fn new() -> Self {
        JsonRows {
            jsonb: vec![JSONB_SIZE4 | JSONB_ARRAY, 0, 0, 0, 0],
            rows: 0,
            row: None,
            scratch: Vec::new(),
        }
    }

    /// Start the next row; its cells follow with [`JsonRows::cell`].
    fn row(&mut self) -> &mut Self {
        self.end_row();
        self.row = Some(self.jsonb.len());
        self.jsonb.extend([JSONB_SIZE4 | JSONB_ARRAY, 0, 0, 0, 0]);
        self.rows += 1;
        self
    }

    fn cell(&mut self, v: impl JsonCell) -> &mut Self {
        v.write(self);
        self
    }

    fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn finish(mut self) -> Vec<u8> {
        self.end_row();
        self.fill_size(0);
        self.jsonb
    }

    fn end_row(&mut self) {
        if let Some(start) = self.row.take() {
            self.fill_size(start);
        }
    }

    /// The size of the array that starts at `start` and ends here. (Past 4 GiB it would be
    /// wrong, and SQLite would refuse the array as malformed.)
    fn fill_size(&mut self, start: usize) {
        let size = u32::try_from(self.jsonb.len() - start - 5).unwrap_or(u32::MAX);
        self.jsonb[start + 1..start + 5].copy_from_slice(&size.to_be_bytes());
    }

    /// An element: its type, its payload's size (in the first byte up to 11, in the bytes
    /// after it beyond), its payload.
    fn element(&mut self, kind: u8, payload: &[u8]) {
        let size = payload.len();
        if let Ok(small @ 0..=11) = u8::try_from(size) {
            self.jsonb.push(kind | small << 4);
        } else if let Ok(size) = u8::try_from(size) {
            self.jsonb.extend([kind | 12 << 4, size]);
        } else {
            self.jsonb.push(kind | JSONB_SIZE4);
            let size = u32::try_from(size).unwrap_or(u32::MAX);
            self.jsonb.extend(size.to_be_bytes());
        }
        self.jsonb.extend_from_slice(payload);
    }
}

/// A value as a [`JsonRows`] cell. Integers are JSON integers (`->>` gives INTEGER); text,
/// money and dates are text, so `->>` gives TEXT — the very TEXT binding their `to_string()`
/// stored (a JSON number would come back INTEGER or REAL, and `1.50` as 1.5).
trait JsonCell {
    fn write(&self, rows: &mut JsonRows);
}

impl JsonCell for i64 {
    fn write(&self, rows: &mut JsonRows) {
        let mut text = [0; 21];
        let mut len = 0;
        if *self < 0 {
            text[0] = b'-';
            len = 1;
        }
        len += digits(&mut text[len..], self.unsigned_abs(), 1);
        rows.element(JSONB_INT, &text[..len]);
    }
}

/// As sqlx binds a bool: INTEGER 0 or 1.
impl JsonCell for bool {
    fn write(&self, rows: &mut JsonRows) {
        i64::from(*self).write(rows);
    }
}

impl JsonCell for str {
    fn write(&self, rows: &mut JsonRows) {
        rows.element(JSONB_TEXTRAW, self.as_bytes());
    }
}

impl JsonCell for String {
    fn write(&self, rows: &mut JsonRows) {
        self.as_str().write(rows);
    }
}

impl JsonCell for Decimal {
    fn write(&self, rows: &mut JsonRows) {
        use std::io::Write;
        let mut text = std::mem::take(&mut rows.scratch);
        text.clear();
        let _ = write!(text, "{self}");
        rows.element(JSONB_TEXTRAW, &text);
        rows.scratch = text;
    }
}

impl JsonCell for NaiveDate {
    fn write(&self, rows: &mut JsonRows) {
        // What chrono's Display prints for these years (YYYY-MM-DD), without its formatting
        // machinery: dates are in most rows of a chunk, and formatting cost more than the rest
        // of the row.
        let year = self.year();
        if (0..=9999).contains(&year) {
            let mut text = *b"0000-00-00";
            digits(&mut text[0..4], year.unsigned_abs().into(), 4);
            digits(&mut text[5..7], self.month().into(), 2);
            digits(&mut text[8..10], self.day().into(), 2);
            rows.element(JSONB_TEXTRAW, &text);
        } else {
            self.to_string().write(rows);
        }
    }
}

/// Write `n` in decimal, zero-padded to at least `width` digits, at the start of `out`;
/// returns how many bytes that took.
fn digits(out: &mut [u8], mut n: u64, width: usize) -> usize {
    let mut text = [b'0'; 20];
    let mut start = text.len();
    while n > 0 || text.len() - start < width {
        start -= 1;
        text[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let len = text.len() - start;
    out[..len].copy_from_slice(&text[start..]);
    len
}

impl<T: JsonCell + ?Sized> JsonCell for &T {
    fn write(&self, rows: &mut JsonRows) {
        (**self).write(rows);
    }
}

impl<T: JsonCell> JsonCell for Option<T> {
    fn write(&self, rows: &mut JsonRows) {
        match self {
            Some(v) => v.write(rows),
            None => rows.jsonb.push(JSONB_NULL),
        }
    }
}

/// A JSON array of strings (ids), for `IN (SELECT value FROM json_each(?))`.
fn json_strings<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let values: Vec<&str> = values.into_iter().collect();
    serde_json::to_string(&values).unwrap_or_default()
}

const ACCOUNT_COLS: &str =
    "id, name, email, currency, timezone, taxes, discount, status, balance, identity";
const DOCUMENT_COLS: &str = "id, number, doc_key, kind, account_id, subscription_id, finance_batch_id, issued_at, \
     due_at, period_start, period_end, currency, subtotal, discount, tax, total, credit_applied, amount_due, customer";

/// An `accounts` row (ACCOUNT_COLS) as stored: read from a result row, or from a JSON array
/// of those columns in that order.
#[derive(serde::Deserialize)]
struct AccountRow {
    id: String,
    name: String,
    email: String,
    currency: String,
    timezone: String,
    taxes: String,
    discount: Option<String>,
    status: String,
    balance: String,
    identity: Option<String>,
}

impl AccountRow {
    fn read(r: &SqliteRow) -> Result<Self, StoreError> {
        Ok(AccountRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            email: r.try_get("email")?,
            currency: r.try_get("currency")?,
            timezone: r.try_get("timezone")?,
            taxes: r.try_get("taxes")?,
            discount: r.try_get("discount")?,
            status: r.try_get("status")?,
            balance: r.try_get("balance")?,
            identity: r.try_get("identity")?,
        })
    }

    fn parse(self) -> Result<(Account, Decimal), StoreError> {
        let taxes: Vec<TaxRate> =
            serde_json::from_str(&self.taxes).map_err(|e| corrupt("taxes")(e.to_string()))?;
        let discount: Option<Discount> = match self.discount {
            Some(j) => {
                Some(serde_json::from_str(&j).map_err(|e| corrupt("discount")(e.to_string()))?)
            }
            None => None,
        };
        let status = self.status;
        let mut account = Account {
            id: AccountId::new(&self.id).map_err(corrupt("account id"))?,
            name: self.name,
            email: self.email,
            currency: Currency::new(&self.currency).map_err(corrupt("currency"))?,
            timezone: self.timezone,
            taxes,
            discount,
            status: AccountStatus::parse(&status)
                .ok_or_else(|| corrupt("status")(status.clone()))?,
            address: Vec::new(),
            country: None,
            tax_id: None,
            reverse_charge: false,
        };
        account
            .set_identity_json(self.identity.as_deref())
            .map_err(corrupt("identity"))?;
        Ok((account, dec(&self.balance)?))
    }
}

fn account_from_row(r: &SqliteRow) -> Result<(Account, Decimal), StoreError> {
    AccountRow::read(r)?.parse()
}

/// What `load_accounts` reads of a subscription, as a JSON array in this order.
#[derive(serde::Deserialize)]
struct SubscriptionRow {
    id: String,
    account_id: String,
    policy: String,
    cycle: String,
    discount: Option<String>,
    start_date: String,
    anchor: String,
    period_start: Option<String>,
    period_end: Option<String>,
    next_bill_date: String,
    periods_billed: i64,
    status: String,
    cancel_at: Option<String>,
    last_change_at: Option<String>,
    version: i64,
}

/// Rows a query aggregated into one JSON array (`json_group_array`).
fn json_rows<'a, T: serde::Deserialize<'a>>(
    what: &str,
    json: &'a str,
) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt(what)(e.to_string()))
}

/// Create the database file readable by its owner only (0600, whatever the umask) if it
/// does not exist: it holds names, addresses and amounts. SQLite gives its `-wal` and `-shm`
/// files the database file's mode. The folder must exist: a typo in the path should be an
/// error, not a new tree of folders.
fn create_private_file(path: &std::path::Path) -> Result<(), StoreError> {
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
    pub async fn open(url: &str) -> Result<Self, StoreError> {
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
            create_private_file(std::path::Path::new(path))?;
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(SqliteJournalMode::Wal)
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
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(connect)?
        };
        Ok(SqliteStore {
            pool,
            wal: !memory,
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

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn fetch_documents(
        &self,
        filter: DocFilter<'_>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let where_clause = |q: &mut QueryBuilder<Sqlite>| match filter {
            DocFilter::All => {}
            DocFilter::Account(a) => {
                q.push(" WHERE account_id = ").push_bind(a.to_string());
            }
            DocFilter::Number(n) => {
                q.push(" WHERE number = ").push_bind(n.to_string());
            }
            DocFilter::Id(id) => {
                q.push(" WHERE id = ").push_bind(id);
            }
            DocFilter::Batch(b) => {
                q.push(" WHERE finance_batch_id = ").push_bind(b);
            }
            DocFilter::Issued(from, to) => {
                q.push(" WHERE issued_at >= ")
                    .push_bind(from.to_string())
                    .push(" AND issued_at < ")
                    .push_bind(to.to_string());
            }
            DocFilter::Page(after, limit) => {
                q.push(" WHERE id > ")
                    .push_bind(after)
                    .push(" ORDER BY id LIMIT ")
                    .push_bind(i64::from(limit));
            }
        };
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {DOCUMENT_COLS} FROM documents"));
        where_clause(&mut q);
        if !matches!(filter, DocFilter::Page(..)) {
            q.push(" ORDER BY id");
        }
        let rows = q.build().persistent(false).fetch_all(&self.pool).await?;

        let mut lq = QueryBuilder::<Sqlite>::new(
            "SELECT document_id, kind, description, amount, detail FROM document_lines WHERE document_id IN (SELECT id FROM documents",
        );
        where_clause(&mut lq);
        lq.push(") ORDER BY document_id, position");
        let mut lines: BTreeMap<i64, Vec<Line>> = BTreeMap::new();
        for r in lq.build().persistent(false).fetch_all(&self.pool).await? {
            let kind: String = r.try_get("kind")?;
            let mut line = Line::amount(
                LineKind::parse(&kind).ok_or_else(|| corrupt("line kind")(kind.clone()))?,
                r.try_get("description")?,
                dec(&r.try_get::<String, _>("amount")?)?,
                false,
            );
            line.set_detail_json(r.try_get::<Option<String>, _>("detail")?.as_deref())
                .map_err(corrupt("line detail"))?;
            lines
                .entry(r.try_get("document_id")?)
                .or_default()
                .push(line);
        }

        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let kind: String = r.try_get("kind")?;
            let sub: Option<String> = r.try_get("subscription_id")?;
            let period = match (
                opt_date(r.try_get("period_start")?)?,
                opt_date(r.try_get("period_end")?)?,
            ) {
                (Some(start), Some(end)) => Some(Period { start, end }),
                _ => None,
            };
            let customer = match r.try_get::<Option<String>, _>("customer")? {
                Some(j) => {
                    serde_json::from_str(&j).map_err(|e| corrupt("customer")(e.to_string()))?
                }
                None => Default::default(),
            };
            let draft = DraftDocument {
                key: r.try_get("doc_key")?,
                customer,
                kind: crate::core::document::DocumentKind::parse(&kind)
                    .ok_or_else(|| corrupt("document kind")(kind.clone()))?,
                account: AccountId::new(&r.try_get::<String, _>("account_id")?)
                    .map_err(corrupt("account id"))?,
                subscription: sub
                    .as_deref()
                    .map(SubscriptionId::new)
                    .transpose()
                    .map_err(corrupt("subscription id"))?,
                issued_at: date(&r.try_get::<String, _>("issued_at")?)?,
                due_at: date(&r.try_get::<String, _>("due_at")?)?,
                period,
                currency: Currency::new(&r.try_get::<String, _>("currency")?)
                    .map_err(corrupt("currency"))?,
                lines: lines.remove(&id).unwrap_or_default(),
                subtotal: dec(&r.try_get::<String, _>("subtotal")?)?,
                discount: dec(&r.try_get::<String, _>("discount")?)?,
                tax: dec(&r.try_get::<String, _>("tax")?)?,
                total: dec(&r.try_get::<String, _>("total")?)?,
                credit_applied: dec(&r.try_get::<String, _>("credit_applied")?)?,
                amount_due: dec(&r.try_get::<String, _>("amount_due")?)?,
                consumes_pending: Vec::new(),
            };
            out.push(StoredDocument {
                id,
                document: Document {
                    number: r.try_get("number")?,
                    draft,
                },
                finance_batch: r.try_get("finance_batch_id")?,
            });
        }
        Ok(out)
    }

    async fn fetch_outbox(
        &self,
        due: Option<(DateTime<Utc>, u32)>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, message_key, kind, document_id, finance_batch_id, recipient, subject, attempts, status FROM outbox",
        );
        if let Some((now, limit)) = due {
            q.push(" WHERE status = 'pending' AND next_attempt_at <= ")
                .push_bind(ts(now))
                .push(" ORDER BY id LIMIT ")
                .push_bind(i64::from(limit));
        } else {
            q.push(" ORDER BY id");
        }
        q.build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(outbox_from_row)
            .collect()
    }
}

/// Items of subscriptions, in one statement.
async fn insert_items(
    tx: &mut Transaction<'static, Sqlite>,
    items: &[(&str, &Item)],
) -> Result<(), StoreError> {
    let mut rows = JsonRows::new();
    for (sub, item) in items {
        rows.row()
            .cell(*sub)
            .cell(item.plan.as_str())
            .cell(i64::from(item.quantity));
    }
    write_rows(
        tx,
        "INSERT INTO subscription_items (subscription_id, plan, quantity) \
         SELECT value->>0, value->>1, value->>2 FROM jsonb_each(?1) ORDER BY rowid",
        rows,
    )
    .await?;
    Ok(())
}

/// Run a statement that takes `rows` apart as `?1`; nothing when there are none.
async fn write_rows(
    tx: &mut Transaction<'static, Sqlite>,
    sql: &'static str,
    rows: JsonRows,
) -> Result<(), sqlx::Error> {
    if !rows.is_empty() {
        sqlx::query(sql)
            .bind(rows.finish())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Replace the items of these subscriptions (one or a whole chunk's).
async fn replace_items(
    tx: &mut Transaction<'static, Sqlite>,
    subs: &[(&str, &[Item])],
) -> Result<(), StoreError> {
    if subs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM subscription_items WHERE subscription_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_strings(subs.iter().map(|(sub, _)| *sub)))
    .execute(&mut **tx)
    .await?;
    let rows: Vec<(&str, &Item)> = subs
        .iter()
        .flat_map(|(sub, items)| items.iter().map(move |i| (*sub, i)))
        .collect();
    insert_items(tx, &rows).await
}

/// Reserve one block of numbers per series and year for these documents; returns the next
/// number to give in each.
async fn reserve_numbers<'a>(
    tx: &mut Transaction<'static, Sqlite>,
    numbering: &Numbering,
    docs: impl Iterator<Item = &'a DraftDocument>,
) -> Result<BTreeMap<(String, i32), i64>, StoreError> {
    let mut wanted: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for doc in docs {
        *wanted
            .entry((numbering.prefix(doc.kind).to_string(), doc.issued_at.year()))
            .or_default() += 1;
    }
    let mut next = BTreeMap::new();
    for ((prefix, year), n) in wanted {
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO number_series (prefix, year, last_number) VALUES (?, ?, ?) \
             ON CONFLICT (prefix, year) DO UPDATE SET last_number = last_number + excluded.last_number \
             RETURNING last_number",
        )
        .bind(&prefix)
        .bind(year)
        .bind(n)
        .fetch_one(&mut **tx)
        .await?;
        next.insert((prefix, year), last - n + 1);
    }
    Ok(next)
}

/// The most bound parameters one statement may carry (SQLite's limit is 32766).
const MAX_PARAMS: usize = 32_000;
/// Rows per multi-row statement: a chunk's worth, no more. Multi-row statements are built
/// per call and not kept in the statement cache (`persistent(false)`): a cached statement
/// with thousands of parameters holds megabytes of compiled program per connection.
const MAX_ROWS: usize = 200;

/// Rows of `cols` parameters each that fit in one statement.
fn rows_per_statement(cols: usize) -> usize {
    (MAX_PARAMS / cols).min(MAX_ROWS)
}

/// The finance batch of a run, made by the run's first issuing chunk (inside that chunk's
/// transaction, so a chunk that rolls back leaves no empty batch). A run's documents carry
/// their batch from the start: sealing the batch never rewrites them.
async fn run_batch(
    tx: &mut Transaction<'static, Sqlite>,
    run: RunId,
    created: &str,
) -> Result<i64, StoreError> {
    sqlx::query(
        "INSERT INTO finance_batches (run_id, created_at) VALUES (?, ?) ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(run)
    .bind(created)
    .execute(&mut **tx)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT id FROM finance_batches WHERE run_id = ?")
            .bind(run)
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Number and insert documents with their lines, ledger entries, consumed pending items and
/// one outbox message each, in multi-row statements: a handful per chunk, whatever its size.
async fn insert_documents(
    tx: &mut Transaction<'static, Sqlite>,
    numbering: &Numbering,
    run: Option<RunId>,
    docs: &[&DraftDocument],
    created: &str,
) -> Result<Vec<StoredDocument>, StoreError> {
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let batch = match run {
        Some(run) => Some(run_batch(tx, run, created).await?),
        None => None,
    };
    let mut next = reserve_numbers(tx, numbering, docs.iter().copied()).await?;
    let mut numbers = Vec::with_capacity(docs.len());
    for doc in docs {
        let key = (numbering.prefix(doc.kind).to_string(), doc.issued_at.year());
        let n = next
            .get_mut(&key)
            .ok_or_else(|| StoreError::Database("no number reserved for a document".into()))?;
        numbers.push(Numbering::format(&key.0, key.1, *n));
        *n += 1;
    }

    let mut rows = JsonRows::new();
    for (doc, number) in docs.iter().zip(&numbers) {
        rows.row()
            .cell(number)
            .cell(&doc.key)
            .cell(doc.kind.as_str())
            .cell(doc.account.as_str())
            .cell(doc.subscription.as_ref().map(|s| s.as_str()))
            .cell(doc.issued_at)
            .cell(doc.due_at)
            .cell(doc.period.map(|p| p.start))
            .cell(doc.period.map(|p| p.end))
            .cell(doc.currency.code())
            .cell(doc.subtotal)
            .cell(doc.discount)
            .cell(doc.tax)
            .cell(doc.total)
            .cell(doc.credit_applied)
            .cell(doc.amount_due)
            .cell(serde_json::to_string(&doc.customer).unwrap_or_default());
    }
    // The ids are given here rather than read back with RETURNING (a result row per
    // document): the next ones after the largest ever given, as AUTOINCREMENT would (this
    // transaction holds the write lock), in the order of `docs` — so documents listed in id
    // order come out in issue order.
    let first: i64 = sqlx::query_scalar(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'documents'), 0), \
         COALESCE((SELECT MAX(id) FROM documents), 0)) + 1",
    )
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO documents (id, number, doc_key, kind, account_id, subscription_id, run_id, issued_at, due_at, \
         period_start, period_end, currency, subtotal, discount, tax, total, credit_applied, amount_due, created_at, \
         finance_batch_id, customer) \
         SELECT ?2 + key, value->>0, value->>1, value->>2, value->>3, value->>4, ?3, value->>5, value->>6, value->>7, \
         value->>8, value->>9, value->>10, value->>11, value->>12, value->>13, value->>14, value->>15, ?4, ?5, value->>16 \
         FROM jsonb_each(?1) ORDER BY rowid",
    )
    .bind(rows.finish())
    .bind(first)
    .bind(run)
    .bind(created)
    .bind(batch)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        conflict_on_unique(
            e,
            format!("a document among {} (key already issued)", docs[0].key),
        )
    })?;
    let ids: Vec<i64> = (first..).take(docs.len()).collect();

    let mut lines = JsonRows::new();
    for (doc, id) in docs.iter().zip(&ids) {
        for (pos, line) in doc.lines.iter().enumerate() {
            lines
                .row()
                .cell(*id)
                .cell(pos as i64)
                .cell(line.kind.as_str())
                .cell(&line.description)
                .cell(line.amount)
                .cell(line.detail_json());
        }
    }
    write_rows(
        tx,
        "INSERT INTO document_lines (document_id, position, kind, description, amount, detail) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM jsonb_each(?1) ORDER BY rowid",
        lines,
    )
    .await?;

    let mut ledger = JsonRows::new();
    for (doc, id) in docs.iter().zip(&ids) {
        let (amount, reason) = match doc.kind {
            DocumentKind::Invoice if !doc.credit_applied.is_zero() => {
                (-doc.credit_applied, "credit_applied")
            }
            DocumentKind::CreditNote => (-doc.total, "credit_note"),
            _ => continue,
        };
        ledger
            .row()
            .cell(doc.account.as_str())
            .cell(doc.issued_at)
            .cell(amount)
            .cell(reason)
            .cell(*id);
    }
    write_rows(
        tx,
        "INSERT INTO balance_ledger (account_id, at, amount, reason, document_id) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM jsonb_each(?1) ORDER BY rowid",
        ledger,
    )
    .await?;

    let consumed: Vec<(i64, i64)> = docs
        .iter()
        .zip(&ids)
        .flat_map(|(d, id)| d.consumes_pending.iter().map(move |p| (*p, *id)))
        .collect();
    if !consumed.is_empty() {
        let mut rows = JsonRows::new();
        for (pending, doc) in &consumed {
            rows.row().cell(*pending).cell(*doc);
        }
        let taken: std::collections::BTreeSet<i64> = sqlx::query_scalar(
            "UPDATE pending_items SET document_id = u.value->>1 FROM jsonb_each(?1) AS u \
             WHERE pending_items.id = u.value->>0 AND pending_items.document_id IS NULL \
             RETURNING pending_items.id",
        )
        .bind(rows.finish())
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        if let Some((missing, _)) = consumed.iter().find(|(p, _)| !taken.contains(p)) {
            return Err(StoreError::Conflict(format!("pending item {missing}")));
        }
        if taken.len() != consumed.len() {
            return Err(StoreError::Conflict("a pending item consumed twice".into()));
        }
    }

    let mut messages = JsonRows::new();
    for ((doc, id), number) in docs.iter().zip(&ids).zip(&numbers) {
        messages
            .row()
            .cell(number)
            .cell(*id)
            .cell(crate::core::messages::document_subject(doc.kind, number))
            .cell(doc.account.as_str());
    }
    let done = sqlx::query(
        "INSERT INTO outbox (message_key, kind, document_id, recipient, subject, next_attempt_at, created_at) \
         SELECT u.value->>0, 'document', u.value->>1, a.email, u.value->>2, ?2, ?2 \
         FROM jsonb_each(?1) AS u JOIN accounts a ON a.id = u.value->>3 ORDER BY u.rowid",
    )
    .bind(messages.finish())
    .bind(created)
    .execute(&mut **tx)
    .await
    .map_err(|e| conflict_on_unique(e, "an outbox message of this chunk".into()))?;
    if done.rows_affected() != docs.len() as u64 {
        return Err(StoreError::Corrupt(
            "a document names an account that does not exist".into(),
        ));
    }

    Ok(docs
        .iter()
        .zip(ids)
        .zip(numbers)
        .map(|((d, id), number)| StoredDocument {
            id,
            document: Document {
                number,
                draft: (*d).clone(),
            },
            finance_batch: None,
        })
        .collect())
}

fn outbox_from_row(r: &SqliteRow) -> Result<OutboxEntry, StoreError> {
    let kind: String = r.try_get("kind")?;
    let kind = match kind.as_str() {
        "document" => OutboxKind::Document(r.try_get("document_id")?),
        _ => OutboxKind::FinanceBatch(r.try_get("finance_batch_id")?),
    };
    Ok(OutboxEntry {
        id: r.try_get("id")?,
        key: r.try_get("message_key")?,
        kind,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        attempts: r.try_get("attempts")?,
        sent: r.try_get::<String, _>("status")? == "sent",
    })
}

/// Delete one module table's rows of an account. Identifiers were validated as plain SQL
/// identifiers when the configuration was loaded, and are quoted here as well.
async fn purge_table(
    tx: &mut Transaction<'static, Sqlite>,
    t: &super::modules::ModuleTable,
    account: &str,
) -> Result<u64, StoreError> {
    if !super::modules::is_identifier(&t.table) || !super::modules::is_identifier(&t.account_column)
    {
        return Err(StoreError::Rejected(format!(
            "module table {:?} is not a plain identifier",
            t.table
        )));
    }
    let sql = format!(
        "DELETE FROM \"{}\" WHERE \"{}\" = ?",
        t.table, t.account_column
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// Issue documents made outside a close run (a change, a licence operation) and move the
/// account's balance from what they were computed from.
async fn issue_out_of_run(
    tx: &mut Transaction<'static, Sqlite>,
    numbering: &Numbering,
    documents: &[DraftDocument],
    account: &str,
    (before, after): (Decimal, Decimal),
    created: &str,
) -> Result<Vec<StoredDocument>, StoreError> {
    let docs: Vec<&DraftDocument> = documents.iter().collect();
    let issued = insert_documents(tx, numbering, None, &docs, created).await?;
    update_balance(tx, account, before, after).await?;
    Ok(issued)
}

/// Move an account's balance, but only from the value the change was computed from.
async fn update_balance(
    tx: &mut Transaction<'static, Sqlite>,
    account: &str,
    before: Decimal,
    after: Decimal,
) -> Result<(), StoreError> {
    if before == after {
        return Ok(());
    }
    let done = sqlx::query("UPDATE accounts SET balance = ? WHERE id = ? AND balance = ?")
        .bind(after.to_string())
        .bind(account)
        .bind(before.to_string())
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict(format!(
            "balance of account {account}"
        )));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum DocFilter<'a> {
    All,
    Account(&'a str),
    Number(&'a str),
    Id(i64),
    Batch(i64),
    /// Issued on or after the first date and before the second.
    Issued(NaiveDate, NaiveDate),
    /// Ids above the first, at most the second many.
    Page(i64, u32),
}

/// Which refunds owed to read: those a finance batch reports, or those recorded in a range
/// of dates.
enum RefundFilter {
    Batch(i64),
    Recorded(NaiveDate, NaiveDate),
}

impl SqliteStore {
    async fn fetch_refunds(&self, filter: RefundFilter) -> Result<Vec<RefundOwed>, StoreError> {
        let select = "SELECT l.account_id, a.name, a.currency, l.amount FROM balance_ledger l \
                      JOIN accounts a ON a.id = l.account_id WHERE l.reason = 'refund' AND ";
        let rows = match filter {
            RefundFilter::Batch(batch) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{select}l.finance_batch_id = ? ORDER BY l.id"
                )))
                .bind(batch)
                .fetch_all(&self.pool)
                .await?
            }
            RefundFilter::Recorded(from, to) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{select}l.at >= ? AND l.at < ? ORDER BY l.id"
                )))
                .bind(from.to_string())
                .bind(to.to_string())
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(RefundOwed {
                    account: r.try_get("account_id")?,
                    customer_name: r.try_get("name")?,
                    currency: r.try_get("currency")?,
                    amount: -dec(&r.try_get::<String, _>("amount")?)?,
                    reason: REFUND_ON_CANCEL.into(),
                })
            })
            .collect()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))
    }

    async fn accounts(&self, ids: &[String]) -> Result<Vec<Account>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id"));
        push_in(&mut q, ids.iter().map(String::as_str));
        let rows = q.build().persistent(false).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| account_from_row(r).map(|(a, _)| a))
            .collect()
    }

    async fn import(&self, batch: &ImportBatch, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let created = ts(now);
        let today = now.date_naive().to_string();
        // DO NOTHING rather than an error, so the first id already stored (in file order) is
        // the one named.
        for part in batch.accounts.chunks(rows_per_statement(10)) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO accounts (id, name, email, currency, timezone, taxes, discount, balance, status, created_at, identity) ",
            );
            q.push_values(part, |mut b, new| {
                let a = &new.account;
                b.push_bind(a.id.as_str())
                    .push_bind(a.name.as_str())
                    .push_bind(a.email.as_str())
                    .push_bind(a.currency.code())
                    .push_bind(a.timezone.as_str())
                    .push_bind(serde_json::to_string(&a.taxes).unwrap_or_default())
                    .push_bind(
                        a.discount
                            .as_ref()
                            .map(|d| serde_json::to_string(d).unwrap_or_default()),
                    )
                    .push_bind(new.opening_credit.to_string())
                    .push("'active'")
                    .push_bind(created.as_str())
                    .push_bind(a.identity_json());
            });
            q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let inserted: std::collections::BTreeSet<String> = q
                .build_query_scalar()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            if let Some(dup) = part
                .iter()
                .find(|n| !inserted.contains(n.account.id.as_str()))
            {
                return Err(StoreError::Rejected(format!(
                    "account {:?} already exists",
                    dup.account.id.as_str()
                )));
            }
        }
        let credited: Vec<_> = batch
            .accounts
            .iter()
            .filter(|n| !n.opening_credit.is_zero())
            .collect();
        for part in credited.chunks(rows_per_statement(3)) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO balance_ledger (account_id, at, amount, reason) ",
            );
            q.push_values(part, |mut b, new| {
                b.push_bind(new.account.id.as_str())
                    .push_bind(today.as_str())
                    .push_bind(new.opening_credit.to_string())
                    .push("'opening_credit'");
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for part in batch.subscriptions.chunks(rows_per_statement(12)) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO subscriptions (id, account_id, policy, cycle, discount, start_date, anchor, period_start, \
                 period_end, next_bill_date, periods_billed, status, created_at) ",
            );
            q.push_values(part, |mut b, new| {
                let s = &new.subscription;
                b.push_bind(s.id.as_str())
                    .push_bind(s.account.as_str())
                    .push_bind(s.policy.as_str())
                    .push_bind(s.cycle.as_str())
                    .push_bind(
                        s.discount
                            .as_ref()
                            .map(|d| serde_json::to_string(d).unwrap_or_default()),
                    )
                    .push_bind(s.start.to_string())
                    .push_bind(s.anchor.to_string())
                    .push_bind(s.current_period.map(|p| p.start.to_string()))
                    .push_bind(s.current_period.map(|p| p.end.to_string()))
                    .push_bind(s.next_bill_date.to_string())
                    .push_bind(i64::from(s.periods_billed))
                    .push("'active'")
                    .push_bind(created.as_str());
            });
            q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let inserted: std::collections::BTreeSet<String> = q
                .build_query_scalar()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            if let Some(dup) = part
                .iter()
                .find(|n| !inserted.contains(n.subscription.id.as_str()))
            {
                return Err(StoreError::Rejected(format!(
                    "subscription {:?} already exists",
                    dup.subscription.id.as_str()
                )));
            }
        }
        let items: Vec<(&str, &Item)> = batch
            .subscriptions
            .iter()
            .flat_map(|n| {
                n.subscription
                    .items
                    .iter()
                    .map(|i| (n.subscription.id.as_str(), i))
            })
            .collect();
        insert_items(&mut tx, &items).await?;
        let licences: Vec<(&str, &str, Option<&str>)> = batch
            .subscriptions
            .iter()
            .flat_map(|n| {
                n.licences.iter().map(|(plan, holder)| {
                    (n.subscription.id.as_str(), plan.as_str(), holder.as_deref())
                })
            })
            .collect();
        for part in licences.chunks(rows_per_statement(5)) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO licences (subscription_id, plan, status, assigned_to, created_at) ",
            );
            q.push_values(part, |mut b, (sub, plan, holder)| {
                b.push_bind(*sub)
                    .push_bind(*plan)
                    .push_bind(if holder.is_some() {
                        "assigned"
                    } else {
                        "available"
                    })
                    .push_bind(*holder)
                    .push_bind(created.as_str());
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for part in batch.queued_changes.chunks(rows_per_statement(6)) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO scheduled_changes (subscription_id, kind, target, change_key, requested_at, effective_at) ",
            );
            q.push_values(part, |mut b, c| {
                b.push_bind(c.subscription.as_str())
                    .push_bind(c.kind.as_str())
                    .push_bind(serde_json::to_string(&c.target).unwrap_or_default())
                    .push_bind(c.key.as_str())
                    .push_bind(c.requested_at.to_string())
                    .push_bind(c.effective_at.to_string());
            });
            q.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_on_unique(e, "a queued change key already stored".into()))?;
        }
        for part in batch.pending_items.chunks(rows_per_statement(6)) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) ",
            );
            q.push_values(part, |mut b, p| {
                b.push_bind(p.subscription.as_str())
                    .push_bind(p.description.as_str())
                    .push_bind(p.amount.to_string())
                    .push_bind(p.discountable)
                    .push_bind(created.as_str())
                    .push_bind(p.key.as_str());
            });
            q.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_on_unique(e, "a pending item key already stored".into()))?;
        }
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, details) VALUES (?, 'cli', 'import', ?)",
        )
        .bind(&created)
        .bind(format!(
            "{{\"accounts\": {}, \"subscriptions\": {}}}",
            batch.accounts.len(),
            batch.subscriptions.len()
        ))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn begin_run(&self, as_of: NaiveDate, now: DateTime<Utc>) -> Result<RunId, StoreError> {
        let id: i64 =
            sqlx::query_scalar("INSERT INTO runs (as_of, started_at) VALUES (?, ?) RETURNING id")
                .bind(as_of.to_string())
                .bind(ts(now))
                .fetch_one(&self.pool)
                .await?;
        Ok(id)
    }

    async fn finish_run(
        &self,
        run: RunId,
        now: DateTime<Utc>,
        documents: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET finished_at = ?, status = ?, documents = ?, error = ? WHERE id = ?",
        )
        .bind(ts(now))
        .bind(if error.is_some() {
            "failed"
        } else {
            "completed"
        })
        .bind(documents as i64)
        .bind(error)
        .bind(run)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_claims(&self, worker: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM close_claims WHERE worker = ?")
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_accounts(
        &self,
        as_of: NaiveDate,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut tx = self.write_tx().await?;
        // Walk the active subscriptions in account order from `after` (see the index's
        // migration), rather than sort every due one for each chunk. The accounts come back
        // as one JSON array rather than a RETURNING row each; the claims are then written in
        // the same write transaction, so nobody can take one in between.
        let found: String = sqlx::query_scalar(
            "SELECT json_group_array(account_id) FROM ( \
               SELECT DISTINCT s.account_id FROM subscriptions s INDEXED BY subscriptions_active_by_account \
               WHERE s.status = 'active' AND s.account_id > ?1 AND s.next_bill_date <= ?2 \
               AND NOT EXISTS (SELECT 1 FROM close_claims c WHERE c.account_id = s.account_id AND c.claimed_until > ?3) \
               ORDER BY s.account_id LIMIT ?4)",
        )
        .bind(after.map_or("", |a| a.as_str()))
        .bind(as_of.to_string())
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_one(&mut *tx)
        .await?;
        let ids: Vec<String> = json_rows("claimed accounts", &found)?;
        if !ids.is_empty() {
            // An account found has no claim or an expired one: take it over.
            sqlx::query(
                "INSERT INTO close_claims (account_id, worker, claimed_until) \
                 SELECT value, ?2, ?3 FROM json_each(?1) WHERE true \
                 ON CONFLICT (account_id) DO UPDATE SET worker = excluded.worker, claimed_until = excluded.claimed_until",
            )
            .bind(&found)
            .bind(worker)
            .bind(ts(lease_until))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let mut ids: Vec<AccountId> = ids
            .iter()
            .map(|s| AccountId::new(s).map_err(corrupt("account id")))
            .collect::<Result<_, _>>()?;
        ids.sort();
        Ok(ids)
    }

    async fn due_accounts(
        &self,
        as_of: NaiveDate,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT account_id FROM subscriptions INDEXED BY subscriptions_active_by_account \
             WHERE status = 'active' AND next_bill_date <= ? AND account_id > ? ORDER BY account_id LIMIT ?",
        )
        .bind(as_of.to_string())
        .bind(after.map(|a| a.as_str()).unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|s| AccountId::new(s).map_err(corrupt("account id")))
            .collect()
    }

    async fn load_accounts(&self, ids: &[AccountId]) -> Result<Vec<AccountState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One statement, one result row: each table's rows for the chunk aggregated into one
        // JSON array. sqlx hands a result over row by row and value by value (a message and
        // a copy each), which cost far more than SQLite's reading; this is five values. One
        // statement also reads the five tables in one snapshot.
        // The chunk's subscriptions are looked up once (MATERIALIZED) and joined to their
        // items, pending items and queued changes. Without statistics SQLite would rather scan
        // whole tables (every active subscription, every item) than look up a few thousand
        // rows: INDEXED BY and CROSS JOIN (which keeps the chunk's subscriptions the outer
        // loop) hold it to the lookups.
        let row = sqlx::query(
            "WITH subs AS MATERIALIZED ( \
               SELECT * FROM subscriptions INDEXED BY subscriptions_account \
               WHERE status = 'active' AND account_id IN (SELECT value FROM json_each(?1))) \
             SELECT \
             (SELECT json_group_array(json_array(id, name, email, currency, timezone, taxes, discount, status, balance, identity)) \
              FROM accounts WHERE id IN (SELECT value FROM json_each(?1))), \
             (SELECT json_group_array(json_array(id, account_id, policy, cycle, discount, start_date, anchor, \
               period_start, period_end, next_bill_date, periods_billed, status, cancel_at, last_change_at, version) \
               ORDER BY id) FROM subs), \
             (SELECT json_group_array(json_array(i.subscription_id, i.plan, i.quantity) ORDER BY i.subscription_id, i.plan) \
              FROM subs CROSS JOIN subscription_items i ON i.subscription_id = subs.id), \
             (SELECT json_group_array(json_array(p.id, p.subscription_id, p.description, p.amount, p.discountable) ORDER BY p.id) \
              FROM subs CROSS JOIN pending_items p ON p.subscription_id = subs.id AND p.document_id IS NULL), \
             (SELECT json_group_array(json_array(c.id, c.subscription_id, c.effective_at, c.kind, c.target) ORDER BY c.effective_at, c.id) \
              FROM subs CROSS JOIN scheduled_changes c INDEXED BY scheduled_changes_queued \
              ON c.subscription_id = subs.id AND c.status = 'queued')",
        )
        .bind(json_strings(ids.iter().map(|i| i.as_str())))
        .fetch_one(&self.pool)
        .await?;

        let mut states: BTreeMap<String, AccountState> = BTreeMap::new();
        for a in json_rows::<AccountRow>("accounts", row.try_get(0)?)? {
            let (account, balance) = a.parse()?;
            states.insert(
                account.id.as_str().to_string(),
                AccountState {
                    account,
                    balance,
                    subscriptions: Vec::new(),
                },
            );
        }
        let mut items: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for (sub, plan, quantity) in json_rows::<(String, String, i64)>("items", row.try_get(2)?)? {
            items.entry(sub).or_default().push(Item {
                plan,
                quantity: u32::try_from(quantity)
                    .map_err(|e| corrupt("quantity")(e.to_string()))?,
            });
        }
        let mut pending: BTreeMap<String, Vec<PendingItem>> = BTreeMap::new();
        for (id, sub, description, amount, discountable) in
            json_rows::<(i64, String, String, String, i64)>("pending items", row.try_get(3)?)?
        {
            pending.entry(sub).or_default().push(PendingItem {
                id,
                description,
                amount: dec(&amount)?,
                discountable: discountable != 0,
            });
        }
        let mut queued: BTreeMap<String, Vec<QueuedChange>> = BTreeMap::new();
        for (id, sub, effective_at, kind, target) in
            json_rows::<(i64, String, String, String, String)>("queued changes", row.try_get(4)?)?
        {
            let target: Target = serde_json::from_str(&target)
                .map_err(|e| corrupt("change target")(e.to_string()))?;
            queued.entry(sub).or_default().push(QueuedChange {
                id,
                effective_at: date(&effective_at)?,
                kind,
                target,
            });
        }

        for r in json_rows::<SubscriptionRow>("subscriptions", row.try_get(1)?)? {
            let discount: Option<Discount> = match r.discount {
                Some(j) => {
                    Some(serde_json::from_str(&j).map_err(|e| corrupt("discount")(e.to_string()))?)
                }
                None => None,
            };
            let current_period = match (opt_date(r.period_start)?, opt_date(r.period_end)?) {
                (Some(start), Some(end)) => Some(Period { start, end }),
                _ => None,
            };
            let sub = Subscription {
                id: SubscriptionId::new(&r.id).map_err(corrupt("subscription id"))?,
                account: AccountId::new(&r.account_id).map_err(corrupt("account id"))?,
                policy: r.policy,
                cycle: r.cycle,
                items: items.remove(&r.id).unwrap_or_default(),
                discount,
                start: date(&r.start_date)?,
                anchor: date(&r.anchor)?,
                current_period,
                next_bill_date: date(&r.next_bill_date)?,
                periods_billed: u32::try_from(r.periods_billed).unwrap_or(u32::MAX),
                status: SubscriptionStatus::parse(&r.status)
                    .ok_or_else(|| corrupt("status")(r.status.clone()))?,
                cancel_at: opt_date(r.cancel_at)?,
                pending: pending.remove(&r.id).unwrap_or_default(),
                last_change_at: opt_date(r.last_change_at)?,
                version: r.version,
                queued: queued.remove(&r.id).unwrap_or_default(),
            };
            if let Some(state) = states.get_mut(&r.account_id) {
                state.subscriptions.push(sub);
            }
        }
        Ok(states.into_values().collect())
    }

    async fn commit_chunk(
        &self,
        ctx: &ChunkContext<'_>,
        closes: &[AccountClose],
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let mut tx = self.write_tx().await?;
        let created = ts(ctx.now);
        let updates: Vec<_> = closes.iter().flat_map(|c| &c.updates).collect();
        if !updates.is_empty() {
            let mut rows = JsonRows::new();
            for u in &updates {
                rows.row()
                    .cell(u.id.as_str())
                    .cell(u.expected_version)
                    .cell(u.cycle.as_str())
                    .cell(u.anchor)
                    .cell(u.current_period.map(|p| p.start))
                    .cell(u.current_period.map(|p| p.end))
                    .cell(u.next_bill_date)
                    .cell(i64::from(u.periods_billed))
                    .cell(u.status.as_str())
                    .cell(u.ended_at);
            }
            let rows = rows.finish();
            // `+status`: without it SQLite may walk an index on status (every active row)
            // instead of looking the chunk's subscriptions up by id.
            let done = sqlx::query(
                "UPDATE subscriptions SET cycle = u.value->>2, anchor = u.value->>3, period_start = u.value->>4, \
                 period_end = u.value->>5, next_bill_date = u.value->>6, periods_billed = u.value->>7, \
                 status = u.value->>8, ended_at = u.value->>9, version = subscriptions.version + 1 \
                 FROM jsonb_each(?1) AS u \
                 WHERE subscriptions.id = u.value->>0 AND subscriptions.version = u.value->>1 \
                 AND +subscriptions.status = 'active'",
            )
            .bind(&rows)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != updates.len() as u64 {
                // Some subscription moved on since the chunk was read. Which one is looked up
                // only now (the update returns no row per subscription), after the rollback:
                // versions only grow, so one stale then is still stale in a fresh read.
                tx.rollback().await?;
                let stale: Option<String> = sqlx::query_scalar(
                    "SELECT u.value->>0 FROM jsonb_each(?1) AS u WHERE NOT EXISTS ( \
                       SELECT 1 FROM subscriptions s WHERE s.id = u.value->>0 AND s.version = u.value->>1 \
                       AND +s.status = 'active') \
                     ORDER BY u.rowid LIMIT 1",
                )
                .bind(&rows)
                .fetch_optional(&self.pool)
                .await?;
                return Err(StoreError::Conflict(match stale {
                    Some(id) => format!("subscription {id}"),
                    None => "a subscription of this chunk".into(),
                }));
            }
        }
        // Queued changes applied at their boundary: the subscriptions' items replaced and the
        // changes marked applied, in bulk like the rest.
        let changed: Vec<_> = updates
            .iter()
            .filter(|u| !u.applied_changes.is_empty())
            .collect();
        let new_items: Vec<(&str, &[Item])> = changed
            .iter()
            .map(|u| (u.id.as_str(), u.items.as_slice()))
            .collect();
        replace_items(&mut tx, &new_items).await?;
        let applied: Vec<(i64, Option<NaiveDate>)> = changed
            .iter()
            .flat_map(|u| {
                u.applied_changes
                    .iter()
                    .map(|id| (*id, u.current_period.map(|p| p.start)))
            })
            .collect();
        if !applied.is_empty() {
            let mut rows = JsonRows::new();
            for (id, at) in &applied {
                rows.row().cell(*id).cell(*at);
            }
            // `+status`: as above, look the changes up by id (scheduled_changes_due leads with
            // status).
            let done: std::collections::BTreeSet<i64> = sqlx::query_scalar(
                "UPDATE scheduled_changes SET status = 'applied', applied_at = u.value->>1 FROM jsonb_each(?1) AS u \
                 WHERE scheduled_changes.id = u.value->>0 AND +scheduled_changes.status = 'queued' \
                 RETURNING scheduled_changes.id",
            )
            .bind(rows.finish())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            if let Some((id, _)) = applied.iter().find(|(id, _)| !done.contains(id)) {
                return Err(StoreError::Conflict(format!("scheduled change {id}")));
            }
        }

        let docs: Vec<&DraftDocument> = closes.iter().flat_map(|c| &c.documents).collect();
        let issued =
            insert_documents(&mut tx, ctx.numbering, Some(ctx.run), &docs, &created).await?;

        let moves: Vec<&AccountClose> = closes
            .iter()
            .filter(|c| c.balance_before != c.balance_after)
            .collect();
        if !moves.is_empty() {
            let mut rows = JsonRows::new();
            for c in &moves {
                rows.row()
                    .cell(c.account.as_str())
                    .cell(c.balance_before)
                    .cell(c.balance_after);
            }
            let moved: std::collections::BTreeSet<String> = sqlx::query_scalar(
                "UPDATE accounts SET balance = u.value->>2 FROM jsonb_each(?1) AS u \
                 WHERE accounts.id = u.value->>0 AND accounts.balance = u.value->>1 RETURNING accounts.id",
            )
            .bind(rows.finish())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            if let Some(c) = moves.iter().find(|c| !moved.contains(c.account.as_str())) {
                return Err(StoreError::Conflict(format!(
                    "balance of account {}",
                    c.account
                )));
            }
        }

        // Canceled accounts and their refunds, in bulk like the rest.
        let (mut canceled, mut refunds) = (JsonRows::new(), JsonRows::new());
        for close in closes {
            let Some(at) = close.canceled_at else {
                continue;
            };
            canceled
                .row()
                .cell(close.account.as_str())
                .cell(at)
                .cell(at + chrono::Days::new(u64::from(ctx.retention_days)));
            if !close.refund.is_zero() {
                refunds
                    .row()
                    .cell(close.account.as_str())
                    .cell(at)
                    .cell(-close.refund);
            }
        }
        write_rows(
            &mut tx,
            "UPDATE accounts SET status = 'canceled', canceled_at = u.value->>1, delete_after = u.value->>2 \
             FROM jsonb_each(?1) AS u WHERE accounts.id = u.value->>0 AND accounts.status = 'active'",
            canceled,
        )
        .await?;
        write_rows(
            &mut tx,
            "INSERT INTO balance_ledger (account_id, at, amount, reason) \
             SELECT value->>0, value->>1, value->>2, 'refund' FROM jsonb_each(?1) ORDER BY rowid",
            refunds,
        )
        .await
        .map_err(|e| conflict_on_unique(e, "refund of an account of this chunk".into()))?;
        if !closes.is_empty() {
            sqlx::query(
                "DELETE FROM close_claims WHERE account_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json_strings(closes.iter().map(|c| c.account.as_str())))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE runs SET documents = documents + ? WHERE id = ?")
            .bind(issued.len() as i64)
            .bind(ctx.run)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.checkpoint_behind();
        Ok(issued)
    }

    async fn apply_change(
        &self,
        outcome: &ChangeOutcome,
        account: &AccountId,
        numbering: &Numbering,
        modules: &ModuleMap,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let mut tx = self.write_tx().await?;
        let created = ts(now);
        let sub = outcome.subscription.as_str();
        let key = format!("change/{sub}/v{}", outcome.expected_version);
        let (period_start, period_end, next_bill, anchor, cycle, billed) = match &outcome.changed {
            Some(c) => (
                Some(c.current_period.start.to_string()),
                Some(c.current_period.end.to_string()),
                Some(c.next_bill_date.to_string()),
                Some(c.anchor.to_string()),
                Some(c.cycle.clone()),
                Some(i64::from(c.periods_billed)),
            ),
            None => (None, None, None, None, None, None),
        };
        let done = sqlx::query(
            "UPDATE subscriptions SET period_start = COALESCE(?, period_start), period_end = COALESCE(?, period_end), \
             next_bill_date = COALESCE(?, next_bill_date), anchor = COALESCE(?, anchor), cycle = COALESCE(?, cycle), \
             periods_billed = COALESCE(?, periods_billed), last_change_at = ?, version = version + 1 \
             WHERE id = ? AND version = ? AND status = 'active'",
        )
        .bind(period_start)
        .bind(period_end)
        .bind(next_bill)
        .bind(anchor)
        .bind(cycle)
        .bind(billed)
        .bind(outcome.at.to_string())
        .bind(sub)
        .bind(outcome.expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("subscription {sub}")));
        }
        if let Some(c) = &outcome.changed {
            replace_items(&mut tx, &[(sub, c.items.as_slice())]).await?;
        }
        // A new request supersedes whatever was waiting for the period end.
        sqlx::query("UPDATE scheduled_changes SET status = 'withdrawn' WHERE subscription_id = ? AND status = 'queued'")
            .bind(sub)
            .execute(&mut *tx)
            .await?;
        let target = serde_json::to_string(&outcome.target)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        sqlx::query(
            "INSERT INTO scheduled_changes (subscription_id, kind, target, change_key, requested_at, effective_at, status, applied_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(sub)
        .bind(outcome.kind.as_str())
        .bind(target)
        .bind(&key)
        .bind(outcome.at.to_string())
        .bind(outcome.queued_for.unwrap_or(outcome.at).to_string())
        .bind(if outcome.queued_for.is_some() { "queued" } else { "applied" })
        .bind(outcome.queued_for.is_none().then(|| outcome.at.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, format!("change {key}")))?;
        for p in &outcome.pending {
            sqlx::query(
                "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(sub)
            .bind(&p.description)
            .bind(p.amount.to_string())
            .bind(p.discountable)
            .bind(&created)
            .bind(&p.key)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on_unique(e, format!("pending item {}", p.key)))?;
        }
        let issued = issue_out_of_run(
            &mut tx,
            numbering,
            &outcome.documents,
            account.as_str(),
            (outcome.balance_before, outcome.balance_after),
            &created,
        )
        .await?;
        if !outcome.purge_modules.is_empty() {
            let mut purged = BTreeMap::new();
            for module in &outcome.purge_modules {
                for t in modules.get(module).map(Vec::as_slice).unwrap_or_default() {
                    let n = purge_table(&mut tx, t, account.as_str()).await?;
                    purged.insert(format!("{module}:{}", t.table), n);
                }
            }
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) \
                 VALUES (?, 'billrun', 'module_data_purged', ?, ?, ?)",
            )
            .bind(&created)
            .bind(account.as_str())
            .bind(sub)
            .bind(serde_json::json!({"modules": outcome.purge_modules, "rows": purged}).to_string())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) VALUES (?, 'billrun', 'change', ?, ?, ?)",
        )
        .bind(&created)
        .bind(account.as_str())
        .bind(sub)
        .bind(
            serde_json::json!({"kind": outcome.kind.as_str(), "at": outcome.at.to_string(), "target": outcome.target,
                               "documents": issued.iter().map(|d| d.document.number.clone()).collect::<Vec<_>>()})
            .to_string(),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    async fn subscription_account(
        &self,
        subscription: &str,
    ) -> Result<Option<AccountId>, StoreError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM subscriptions WHERE id = ?")
                .bind(subscription)
                .fetch_optional(&self.pool)
                .await?;
        id.map(|a| AccountId::new(&a).map_err(corrupt("account id")))
            .transpose()
    }

    async fn set_cancel(
        &self,
        outcome: &CancelOutcome,
        account: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let sub = outcome.subscription.as_str();
        let done = sqlx::query(
            "UPDATE subscriptions SET cancel_at = ?, version = version + 1 WHERE id = ? AND version = ? AND status = 'active'",
        )
        .bind(outcome.cancel_at.map(|d| d.to_string()))
        .bind(sub)
        .bind(outcome.expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("subscription {sub}")));
        }
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) VALUES (?, 'billrun', ?, ?, ?, ?)",
        )
        .bind(ts(now))
        .bind(if outcome.cancel_at.is_some() { "cancel" } else { "cancel_undone" })
        .bind(account.as_str())
        .bind(sub)
        .bind(serde_json::json!({"at": outcome.at.to_string(), "ends": outcome.cancel_at.map(|d| d.to_string())}).to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn licences(&self, subscription: &str) -> Result<Vec<Licence>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query("SELECT id, plan, status, assigned_to FROM licences WHERE subscription_id = ? ORDER BY id")
            .bind(subscription)
            .fetch_all(&self.pool)
            .await?
        {
            let status: String = r.try_get("status")?;
            out.push(Licence {
                id: r.try_get("id")?,
                plan: r.try_get("plan")?,
                status: LicenceStatus::parse(&status).ok_or_else(|| corrupt("licence status")(status.clone()))?,
                assigned_to: r.try_get("assigned_to")?,
            });
        }
        Ok(out)
    }

    async fn apply_licence_op(
        &self,
        outcome: &LicenceOutcome,
        account: &AccountId,
        numbering: &Numbering,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let mut tx = self.write_tx().await?;
        let created = ts(now);
        let sub = outcome.subscription.as_str();
        let dated = !outcome.documents.is_empty() || outcome.items.is_some();
        let done = sqlx::query(
            "UPDATE subscriptions SET last_change_at = CASE WHEN ? THEN ? ELSE last_change_at END, version = version + 1 \
             WHERE id = ? AND version = ? AND status = 'active'",
        )
        .bind(dated)
        .bind(outcome.at.to_string())
        .bind(sub)
        .bind(outcome.expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("subscription {sub}")));
        }
        if let Some(items) = &outcome.items {
            replace_items(&mut tx, &[(sub, items)]).await?;
        }
        for m in &outcome.mutations {
            let (sql, id, text): (&'static str, i64, Option<&str>) = match m {
                LicenceMutation::Add { plan, count } => {
                    for _ in 0..*count {
                        sqlx::query(
                            "INSERT INTO licences (subscription_id, plan, status, created_at) VALUES (?, ?, 'available', ?)",
                        )
                        .bind(sub)
                        .bind(plan)
                        .bind(&created)
                        .execute(&mut *tx)
                        .await?;
                    }
                    continue;
                }
                LicenceMutation::Assign { id, user } => (
                    "UPDATE licences SET status = 'assigned', assigned_to = ? WHERE id = ? AND status = 'available'",
                    *id,
                    Some(user.as_str()),
                ),
                LicenceMutation::Unassign { id } => (
                    "UPDATE licences SET status = 'available', assigned_to = NULL WHERE id = ? AND status = 'assigned'",
                    *id,
                    None,
                ),
                LicenceMutation::Remove { id } => (
                    "UPDATE licences SET status = 'removed', removed_at = ? WHERE id = ? AND status = 'available'",
                    *id,
                    Some(created.as_str()),
                ),
                LicenceMutation::Replan { id, plan } => (
                    "UPDATE licences SET plan = ? WHERE id = ? AND status = 'assigned'",
                    *id,
                    Some(plan.as_str()),
                ),
            };
            let mut q = sqlx::query(sql);
            if let Some(t) = text {
                q = q.bind(t);
            }
            let done = q.bind(id).execute(&mut *tx).await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!("licence {id}")));
            }
        }
        let issued = issue_out_of_run(
            &mut tx,
            numbering,
            &outcome.documents,
            account.as_str(),
            (outcome.balance_before, outcome.balance_after),
            &created,
        )
        .await?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) VALUES (?, 'billrun', 'licence', ?, ?, ?)",
        )
        .bind(&created)
        .bind(account.as_str())
        .bind(sub)
        .bind(serde_json::to_string(&outcome.op).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    async fn check_module_tables(&self, modules: &ModuleMap) -> Result<(), StoreError> {
        for (module, tables) in modules {
            for t in tables {
                let n: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?")
                        .bind(&t.table)
                        .bind(&t.account_column)
                        .fetch_one(&self.pool)
                        .await?;
                if n != 1 {
                    return Err(StoreError::Rejected(format!(
                        "modules.{module}: table {:?} with column {:?} does not exist",
                        t.table, t.account_column
                    )));
                }
            }
        }
        Ok(())
    }

    async fn deletable_accounts(&self, as_of: NaiveDate) -> Result<Vec<AccountId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM accounts a WHERE status = 'canceled' AND delete_after <= ? \
             AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = a.id AND s.status = 'active') ORDER BY id",
        )
        .bind(as_of.to_string())
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|s| AccountId::new(s).map_err(corrupt("account id")))
            .collect()
    }

    async fn delete_account(
        &self,
        account: &AccountId,
        as_of: NaiveDate,
        modules: &ModuleMap,
        now: DateTime<Utc>,
    ) -> Result<Deletion, StoreError> {
        let mut tx = self.write_tx().await?;
        let id = account.as_str();
        // The guard lives in the statement: only a canceled account past its date, with no
        // active subscription, can be marked deleted.
        let done = sqlx::query(
            "UPDATE accounts SET status = 'deleted', deleted_at = ?, name = '', email = '' \
             WHERE id = ? AND status = 'canceled' AND delete_after <= ? \
             AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = accounts.id AND s.status = 'active')",
        )
        .bind(as_of.to_string())
        .bind(id)
        .bind(as_of.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Rejected(format!(
                "account {id} is not canceled and past its retention date; nothing was deleted"
            )));
        }
        let mut deletion = Deletion {
            account: id.to_string(),
            ..Default::default()
        };
        deletion.licence_assignments = sqlx::query(
            "UPDATE licences SET assigned_to = NULL, status = CASE WHEN status = 'assigned' THEN 'available' ELSE status END \
             WHERE assigned_to IS NOT NULL AND subscription_id IN (SELECT id FROM subscriptions WHERE account_id = ?)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for (module, tables) in modules {
            for t in tables {
                let n = purge_table(&mut tx, t, id).await?;
                deletion
                    .module_rows
                    .insert(format!("{module}:{}", t.table), n);
            }
        }
        // Addresses of messages already sent are personal data too; unsent ones still go out.
        sqlx::query(
            "UPDATE outbox SET recipient = '' WHERE status = 'sent' \
             AND document_id IN (SELECT id FROM documents WHERE account_id = ?)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO audit_log (at, actor, action, account_id, details) VALUES (?, 'billrun', 'account_deleted', ?, ?)")
            .bind(ts(now))
            .bind(id)
            .bind(serde_json::to_string(&deletion).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deletion)
    }

    async fn deleted_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM accounts WHERE status = 'deleted' ORDER BY deleted_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn batch_extras(&self, batch: i64) -> Result<BatchExtras, StoreError> {
        let mut extras = BatchExtras {
            refunds: self.fetch_refunds(RefundFilter::Batch(batch)).await?,
            ..Default::default()
        };
        extras.deleted_accounts =
            sqlx::query_scalar("SELECT id FROM accounts WHERE finance_batch_id = ? ORDER BY id")
                .bind(batch)
                .fetch_all(&self.pool)
                .await?;
        Ok(extras)
    }

    async fn licence_counts(&self, subscription: &str) -> Result<(u32, u32), StoreError> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(status = 'assigned'), 0) AS assigned, COALESCE(SUM(status = 'available'), 0) AS available \
             FROM licences WHERE subscription_id = ?",
        )
        .bind(subscription)
        .fetch_one(&self.pool)
        .await?;
        let (a, b): (i64, i64) = (r.try_get("assigned")?, r.try_get("available")?);
        Ok((a as u32, b as u32))
    }

    async fn changes(&self) -> Result<Vec<ChangeRecord>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT subscription_id, kind, target, requested_at, effective_at, status FROM scheduled_changes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        {
            out.push(ChangeRecord {
                subscription: r.try_get("subscription_id")?,
                kind: r.try_get("kind")?,
                target: serde_json::from_str(&r.try_get::<String, _>("target")?)
                    .map_err(|e| corrupt("change target")(e.to_string()))?,
                requested_at: date(&r.try_get::<String, _>("requested_at")?)?,
                effective_at: date(&r.try_get::<String, _>("effective_at")?)?,
                status: r.try_get("status")?,
            });
        }
        Ok(out)
    }

    async fn create_finance_batch(
        &self,
        run: RunId,
        as_of: NaiveDate,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write_tx().await?;
        let created = ts(now);
        // A run that issued nothing has no batch yet; it makes one only when there is
        // something to report, so batch numbers stay consecutive.
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM finance_batches WHERE run_id = ?")
                .bind(run)
                .fetch_optional(&mut *tx)
                .await?;
        let others: i64 = sqlx::query_scalar(UNREPORTED_EXTRAS)
            .fetch_one(&mut *tx)
            .await?;
        if existing.is_none() && others == 0 {
            let waiting: i64 = sqlx::query_scalar(UNREPORTED_DOCUMENTS)
                .fetch_one(&mut *tx)
                .await?;
            if waiting == 0 {
                return Ok(None);
            }
        }
        let batch = match existing {
            Some(b) => b,
            None => run_batch(&mut tx, run, &created).await?,
        };
        // Adopt what is not reported yet: documents issued outside a run, and those of
        // batches never sealed (a run that died; or, with several workers, one still going —
        // it seals whatever it issues after this).
        sqlx::query("UPDATE documents SET finance_batch_id = ? WHERE finance_batch_id IS NULL")
            .bind(batch)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE documents SET finance_batch_id = ?1 WHERE finance_batch_id IN \
             (SELECT b.id FROM finance_batches b WHERE b.id <> ?1 \
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.finance_batch_id = b.id))",
        )
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        // The batches emptied so are gone; a worker still running makes a new one for what
        // it issues next.
        sqlx::query(
            "DELETE FROM finance_batches WHERE id <> ?1 \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.finance_batch_id = finance_batches.id) \
             AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.finance_batch_id = finance_batches.id)",
        )
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE finance_batch_id = ?")
                .bind(batch)
                .fetch_one(&mut *tx)
                .await?;
        if count == 0 && others == 0 {
            sqlx::query("DELETE FROM finance_batches WHERE id = ?")
                .bind(batch)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        }
        for sql in [
            "UPDATE balance_ledger SET finance_batch_id = ? WHERE reason = 'refund' AND finance_batch_id IS NULL",
            "UPDATE accounts SET finance_batch_id = ? WHERE status = 'deleted' AND finance_batch_id IS NULL",
            "UPDATE parked_events SET finance_batch_id = ? WHERE finance_batch_id IS NULL",
        ] {
            sqlx::query(sql).bind(batch).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO outbox (message_key, kind, finance_batch_id, recipient, subject, next_attempt_at, created_at) \
             VALUES (?, 'finance_batch', ?, ?, ?, ?, ?)",
        )
        .bind(crate::core::messages::finance_batch_key(batch))
        .bind(batch)
        .bind(recipient)
        .bind(crate::core::messages::finance_batch_subject(batch, as_of, count as u64))
        .bind(&created)
        .bind(&created)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, format!("finance batch of run {run}")))?;
        tx.commit().await?;
        Ok(Some(batch))
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.fetch_outbox(Some((now, limit))).await
    }

    async fn claim_outbox(
        &self,
        worker: &str,
        due_before: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN ( \
               SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? \
               AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY id LIMIT ?) \
             RETURNING id, message_key, kind, document_id, finance_batch_id, recipient, subject, attempts, status",
        )
        .bind(worker)
        .bind(ts(lease_until))
        .bind(ts(due_before))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(outbox_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    async fn outbox_waiting(&self, now: DateTime<Utc>) -> Result<OutboxWaiting, StoreError> {
        let now = ts(now);
        let (in_backoff, next, claimed, until): (i64, Option<String>, i64, Option<String>) =
            sqlx::query_as(
                "SELECT \
                   COUNT(*) FILTER (WHERE next_attempt_at > $1 AND NOT (claimed_until > $1)), \
                   MIN(next_attempt_at) FILTER (WHERE next_attempt_at > $1 AND NOT (claimed_until > $1)), \
                   COUNT(*) FILTER (WHERE claimed_until > $1), \
                   MAX(claimed_until) FILTER (WHERE claimed_until > $1) \
                 FROM (SELECT next_attempt_at, COALESCE(claimed_until, '') AS claimed_until \
                       FROM outbox WHERE status = 'pending')",
            )
            .bind(&now)
            .fetch_one(&self.pool)
            .await?;
        Ok(OutboxWaiting {
            in_backoff: in_backoff as u64,
            next_attempt: next.as_deref().map(timestamp).transpose()?,
            claimed: claimed as u64,
            claimed_until: until.as_deref().map(timestamp).transpose()?,
        })
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.fetch_outbox(None).await
    }

    async fn mark_sent(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL, \
             claimed_by = NULL, claimed_until = NULL WHERE id = ?")
            .bind(ts(now))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, \
             claimed_by = NULL, claimed_until = NULL WHERE id = ?",
        )
        .bind(crate::redact(error))
        .bind(ts(next_attempt))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn document(&self, number: &str) -> Result<Option<StoredDocument>, StoreError> {
        Ok(self.fetch_documents(DocFilter::Number(number)).await?.pop())
    }

    async fn document_by_id(&self, id: i64) -> Result<Option<StoredDocument>, StoreError> {
        Ok(self.fetch_documents(DocFilter::Id(id)).await?.pop())
    }

    async fn documents(&self, account: Option<&str>) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(account.map_or(DocFilter::All, DocFilter::Account))
            .await
    }

    async fn batch_documents(&self, batch: i64) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(DocFilter::Batch(batch)).await
    }

    async fn documents_issued(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(DocFilter::Issued(from, to)).await
    }

    async fn refunds_recorded(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<RefundOwed>, StoreError> {
        self.fetch_refunds(RefundFilter::Recorded(from, to)).await
    }

    async fn documents_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(DocFilter::Page(after, limit)).await
    }

    async fn balance(&self, account: &str) -> Result<Option<BalanceReport>, StoreError> {
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?"
        )))
        .bind(account)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let (account_row, balance) = account_from_row(&row)?;
        let mut entries = Vec::new();
        for r in sqlx::query(
            "SELECT l.at, l.amount, l.reason, d.number FROM balance_ledger l LEFT JOIN documents d ON d.id = l.document_id \
             WHERE l.account_id = ? ORDER BY l.id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?
        {
            entries.push(LedgerEntry {
                at: date(&r.try_get::<String, _>("at")?)?,
                amount: dec(&r.try_get::<String, _>("amount")?)?,
                reason: r.try_get("reason")?,
                document: r.try_get("number")?,
            });
        }
        Ok(Some(BalanceReport {
            account: account_row,
            balance,
            entries,
        }))
    }

    async fn balances(&self) -> Result<Vec<(AccountId, Decimal)>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query("SELECT id, balance FROM accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await?
        {
            out.push((
                AccountId::new(&r.try_get::<String, _>("id")?).map_err(corrupt("account id"))?,
                dec(&r.try_get::<String, _>("balance")?)?,
            ));
        }
        Ok(out)
    }

    async fn previous_invoice_totals(
        &self,
        subscriptions: &[&str],
    ) -> Result<BTreeMap<SubscriptionId, PreviousInvoice>, StoreError> {
        let mut out = BTreeMap::new();
        if subscriptions.is_empty() {
            return Ok(out);
        }
        // One bound parameter whatever the chunk size (json_each), and the partial index
        // documents_subscription_invoices makes each MAX(id) an index lookup.
        let ids = serde_json::to_string(subscriptions)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        for r in sqlx::query(
            "SELECT subscription_id, total, period_start, period_end FROM documents WHERE id IN ( \
               SELECT MAX(id) FROM documents WHERE kind = 'invoice' AND period_start IS NOT NULL \
               AND subscription_id IN (SELECT value FROM json_each(?)) GROUP BY subscription_id)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?
        {
            let sub = SubscriptionId::new(&r.try_get::<String, _>("subscription_id")?)
                .map_err(corrupt("subscription id"))?;
            let period = match (
                opt_date(r.try_get("period_start")?)?,
                opt_date(r.try_get("period_end")?)?,
            ) {
                (Some(start), Some(end)) => Some(Period { start, end }),
                _ => None,
            };
            out.insert(
                sub,
                PreviousInvoice {
                    total: dec(&r.try_get::<String, _>("total")?)?,
                    period,
                },
            );
        }
        Ok(out)
    }

    async fn park_status(
        &self,
        accounts: &[AccountId],
    ) -> Result<BTreeMap<AccountId, ParkedAccount>, StoreError> {
        if accounts.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<&str> = accounts.iter().map(|a| a.as_str()).collect();
        let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Database(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT account_id, reason, status, parked_at, run_id, released_at FROM parked_accounts \
             WHERE account_id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parked_from_row(r).map(|p| (p.account.clone(), p)))
            .collect()
    }

    async fn park_accounts(
        &self,
        run: RunId,
        parked: &[(AccountId, String)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if parked.is_empty() {
            return Ok(());
        }
        let now = ts(now);
        let mut tx = self.write_tx().await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO parked_accounts (account_id, reason, parked_at, run_id, status, released_at) ",
        );
        q.push_values(parked, |mut b, (account, reason)| {
            b.push_bind(account.as_str())
                .push_bind(reason.as_str())
                .push_bind(&now)
                .push_bind(run)
                .push("'parked'")
                .push("NULL");
        });
        q.push(
            " ON CONFLICT (account_id) DO UPDATE SET reason = excluded.reason, parked_at = excluded.parked_at, \
             run_id = excluded.run_id, status = 'parked', released_at = NULL",
        );
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO parked_events (account_id, run_id, reason, parked_at) ",
        );
        q.push_values(parked, |mut b, (account, reason)| {
            b.push_bind(account.as_str())
                .push_bind(run)
                .push_bind(reason.as_str())
                .push_bind(&now);
        });
        q.push(" ON CONFLICT (run_id, account_id) DO NOTHING");
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit_log (at, actor, action, account_id, details) ",
        );
        q.push_values(parked, |mut b, (account, reason)| {
            b.push_bind(&now)
                .push("'billrun'")
                .push("'account_parked'")
                .push_bind(account.as_str())
                .push_bind(serde_json::json!({"run": run, "reason": reason}).to_string());
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn consume_releases(
        &self,
        accounts: &[AccountId],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if accounts.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = accounts.iter().map(|a| a.as_str()).collect();
        let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Database(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        let gone: Vec<String> = sqlx::query_scalar(
            "DELETE FROM parked_accounts WHERE status = 'released' \
             AND account_id IN (SELECT value FROM json_each(?)) RETURNING account_id",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        if !gone.is_empty() {
            let now = ts(now);
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_log (at, actor, action, account_id) ",
            );
            q.push_values(&gone, |mut b, account| {
                b.push_bind(&now)
                    .push("'billrun'")
                    .push("'account_release_used'")
                    .push_bind(account);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<ParkedAccount>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, reason, status, parked_at, run_id, released_at FROM parked_accounts ORDER BY account_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(parked_from_row).collect()
    }

    async fn unpark(&self, account: &str, now: DateTime<Utc>) -> Result<ParkedAccount, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE parked_accounts SET status = 'released', released_at = ? \
             WHERE account_id = ? AND status = 'parked' \
             RETURNING account_id, reason, status, parked_at, run_id, released_at",
        )
        .bind(ts(now))
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = ?)")
                    .bind(account)
                    .fetch_one(&mut *tx)
                    .await?;
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM parked_accounts WHERE account_id = ?")
                    .bind(account)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(unpark_refusal(
                account,
                exists,
                status.as_deref().and_then(ParkStatus::parse),
            ));
        };
        let parked = parked_from_row(&row)?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, details) VALUES (?, 'billrun', 'account_unparked', ?, ?)",
        )
        .bind(ts(now))
        .bind(account)
        .bind(serde_json::json!({"reason": parked.reason, "run": parked.run}).to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(parked)
    }

    async fn batch_parked(&self, batch: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT account_id, reason FROM parked_events WHERE finance_batch_id = ? ORDER BY account_id, id",
        )
        .bind(batch)
        .fetch_all(&self.pool)
        .await?
        {
            out.push((r.try_get("account_id")?, r.try_get("reason")?));
        }
        Ok(out)
    }
}

fn timestamp(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt(format!("timestamp {s:?}")))
}

fn parked_from_row(r: &SqliteRow) -> Result<ParkedAccount, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(ParkedAccount {
        account: AccountId::new(&r.try_get::<String, _>("account_id")?)
            .map_err(corrupt("account id"))?,
        reason: r.try_get("reason")?,
        status: ParkStatus::parse(&status).ok_or_else(|| corrupt("park status")(status.clone()))?,
        since: timestamp(&r.try_get::<String, _>("parked_at")?)?,
        run: r.try_get("run_id")?,
        released_at: r
            .try_get::<Option<String>, _>("released_at")?
            .as_deref()
            .map(timestamp)
            .transpose()?,
    })
}

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

    /// Every kind of cell, taken apart by SQLite, gives the value and type that binding it
    /// the way the store did before (`to_string()` for money and dates) gives.
    #[tokio::test]
    async fn json_cells_arrive_as_bound_values() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let texts = [
            "",
            "plain",
            "quote \" and backslash \\ and slash /",
            "control \u{0} \u{1} \t \n \r \u{1f} and del \u{7f}",
            "unicode é ß 中文 \u{2028} 🦀",
            "\\u0041 is not unescaped twice",
            "twelve bytes",
            &"long ".repeat(60),
            &"longer ".repeat(10_000),
        ];
        let amounts = ["0", "19.00", "-0.50", "1234567.8900", "0.000001"]
            .map(|a| Decimal::from_str_exact(a).unwrap());
        let dates = [
            (2026, 1, 31),
            (1, 2, 3),
            (0, 1, 1),
            (9999, 12, 31),
            (10000, 1, 1),
            (-1, 6, 6),
        ]
        .map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let ints = [0, -1, 42, i64::MAX, i64::MIN];

        let mut rows = JsonRows::new();
        let mut bound: Vec<(Option<String>, Option<i64>)> = Vec::new();
        for t in &texts {
            rows.row().cell(*t);
            bound.push((Some(t.to_string()), None));
        }
        for a in amounts {
            rows.row().cell(a);
            bound.push((Some(a.to_string()), None));
        }
        for d in dates {
            rows.row().cell(d);
            bound.push((Some(d.to_string()), None));
        }
        for i in ints {
            rows.row().cell(i);
            bound.push((None, Some(i)));
        }
        for b in [true, false] {
            rows.row().cell(b);
            bound.push((None, Some(i64::from(b))));
        }
        rows.row().cell(None::<&str>);
        bound.push((None, None));
        let jsonb = rows.finish();

        let got: Vec<(Option<String>, Option<i64>, String)> = sqlx::query_as(
            "SELECT CASE WHEN typeof(value->>0) = 'text' THEN value->>0 END, \
             CASE WHEN typeof(value->>0) = 'integer' THEN value->>0 END, typeof(value->>0) \
             FROM jsonb_each(?1) ORDER BY rowid",
        )
        .bind(&jsonb)
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(got.len(), bound.len());
        for ((text, int, kind), (want_text, want_int)) in got.into_iter().zip(bound) {
            let want_kind = match (&want_text, want_int) {
                (Some(_), _) => "text",
                (None, Some(_)) => "integer",
                (None, None) => "null",
            };
            assert_eq!((text, int, kind.as_str()), (want_text, want_int, want_kind));
        }
    }

    #[tokio::test]
    async fn dates_read_and_written_as_chrono_does() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let mut dates: Vec<NaiveDate> = (0..12_000)
            .map(|i| NaiveDate::from_ymd_opt(1999, 12, 25).unwrap() + chrono::Days::new(3 * i))
            .collect();
        dates.extend(
            [
                (0, 1, 1),
                (9999, 12, 31),
                (10000, 1, 1),
                (-1, 6, 6),
                (-10000, 2, 29),
            ]
            .map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap()),
        );
        let mut rows = JsonRows::new();
        for d in &dates {
            rows.row().cell(d);
        }
        let written: Vec<String> =
            sqlx::query_scalar("SELECT value->>0 FROM jsonb_each(?1) ORDER BY rowid")
                .bind(rows.finish())
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(
            written,
            dates.iter().map(|d| d.to_string()).collect::<Vec<_>>()
        );
        for d in &dates {
            assert_eq!(date(&d.to_string()).unwrap(), *d);
        }
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "",
        ] {
            assert_eq!(
                date(bad).is_err(),
                bad.parse::<NaiveDate>().is_err(),
                "{bad}"
            );
        }
    }

    /// A subscription another writer moved on since the chunk was read: the whole chunk rolls
    /// back and the conflict names that subscription.
    #[tokio::test]
    async fn stale_subscription_rolls_the_chunk_back_and_is_named() {
        use crate::input::{ImportBatch, NewAccount, NewSubscription};
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let as_of = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 6, 0, 0).unwrap();
        let account = AccountId::new("acct1").unwrap();
        let mut batch = ImportBatch::default();
        batch.accounts.push(NewAccount {
            account: Account::new(
                account.clone(),
                "Customer",
                "billing@acct1.example",
                Currency::new("USD").unwrap(),
            ),
            opening_credit: Decimal::ZERO,
        });
        let start = NaiveDate::from_ymd_opt(2025, 12, 1).unwrap();
        for id in ["sub1", "sub2"] {
            batch.subscriptions.push(NewSubscription {
                subscription: Subscription {
                    id: SubscriptionId::new(id).unwrap(),
                    account: account.clone(),
                    policy: "deferred".into(),
                    cycle: "monthly".into(),
                    items: vec![Item {
                        plan: "basic".into(),
                        quantity: 1,
                    }],
                    discount: None,
                    start,
                    anchor: start,
                    current_period: Some(Period { start, end: as_of }),
                    next_bill_date: as_of,
                    periods_billed: 1,
                    status: SubscriptionStatus::Active,
                    cancel_at: None,
                    pending: Vec::new(),
                    last_change_at: None,
                    version: 0,
                    queued: Vec::new(),
                },
                licences: Vec::new(),
            });
        }
        store.import(&batch, now).await.unwrap();

        let catalog = crate::core::catalog::Catalog::from_toml_str(crate::bench::CATALOG).unwrap();
        let states = store
            .load_accounts(std::slice::from_ref(&account))
            .await
            .unwrap();
        let terms = crate::core::billing::Terms {
            payment_terms_days: 14,
        };
        let close =
            crate::core::billing::close_account(&states[0], &catalog, terms, as_of).unwrap();
        assert_eq!(close.documents.len(), 2);
        sqlx::query("UPDATE subscriptions SET version = version + 1 WHERE id = 'sub2'")
            .execute(&store.pool)
            .await
            .unwrap();

        let numbering = Numbering {
            invoice_prefix: "INV".into(),
            credit_note_prefix: "CN".into(),
        };
        let ctx = ChunkContext {
            run: store.begin_run(as_of, now).await.unwrap(),
            numbering: &numbering,
            now,
            retention_days: 30,
        };
        match store.commit_chunk(&ctx, &[close]).await {
            Err(StoreError::Conflict(what)) => assert_eq!(what, "subscription sub2"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(store.documents(None).await.unwrap().is_empty());
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM subscriptions ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(versions, [0, 1]);
    }

    #[tokio::test]
    async fn json_rows_are_arrays_of_arrays() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let render = |rows: JsonRows| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>("SELECT json(?1)")
                    .bind(rows.finish())
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(render(JsonRows::new()).await, "[]");
        let mut rows = JsonRows::new();
        rows.row()
            .cell(1_i64)
            .cell("a")
            .cell(-1_i64)
            .cell(i64::MIN)
            .cell(true);
        rows.row();
        rows.row().cell(None::<i64>).cell(Decimal::new(150, 2));
        assert_eq!(
            render(rows).await,
            r#"[[1,"a",-1,-9223372036854775808,1],[],[null,"1.50"]]"#
        );
        assert_eq!(json_strings(["x", "y\"z"]), r#"["x","y\"z"]"#);
    }
}
