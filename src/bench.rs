//! `billrun bench`: close one period for N generated subscriptions on a fresh database, verify
//! the result, and report the close phase's time and the process's peak memory.
//!
//! The generator streams: subscriptions are written in batches through [`Store::import`], so
//! memory stays flat whatever N is. The close is the real [`close`] with the configured chunk
//! size; nothing is sent (no transport), everything else — numbers, documents, lines, ledger,
//! outbox rows, the finance batch — is written as in production. The baseline is the same
//! close with chunks of one account: one transaction per subscription, the way a naive
//! billing loop works, measured in the same run so the speed-up is a ratio. With
//! `--deliver`, every queued message is then delivered (`deliver`).

pub mod deliver;

use crate::clock::ManualClock;
use crate::close::{CloseOptions, CloseSettings};
use crate::context::Billing;
use crate::core::catalog::Catalog;
use crate::core::document::DocumentKind;
use crate::core::domain::{
    Account, AccountId, Discount, DiscountValue, Item, Subscription, SubscriptionId, Target,
    TaxRate,
};
use crate::core::money::Currency;
use crate::core::period::Period;
use crate::input::{ImportBatch, NewAccount, NewPendingItem, NewQueuedChange, NewSubscription};
use crate::store::prelude::*;
use crate::store::{self, StoreError};
use chrono::{Months, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use std::time::Instant;

/// The catalog the generated subscriptions use.
pub const CATALOG: &str = include_str!("bench_catalog.toml");

/// The date the benchmark closes at; every generated subscription renews on it.
pub fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).expect("a valid date")
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub subscriptions: u64,
    /// Where to run: a PostgreSQL server (a fresh database is created on it and dropped
    /// after) or a SQLite file that must not exist yet. None: a temporary SQLite file.
    pub database_url: Option<String>,
    /// Subscriptions for the one-transaction-per-subscription baseline (0: none).
    pub baseline: u64,
    pub seed: u64,
    /// Keep the database afterwards (PostgreSQL: do not drop it).
    pub keep: bool,
    /// After the close, deliver every message there (SMTP server or `.eml` folder).
    pub deliver: Option<deliver::DeliverTo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub subscriptions: u64,
    pub close_seconds: f64,
    pub per_second: f64,
    pub peak_rss_bytes: Option<u64>,
    pub backend: &'static str,
    pub chunk_size: u32,
    pub documents: u64,
    pub seed_seconds: f64,
    pub verify_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<deliver::DeliveryBench>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub subscriptions: u64,
    pub close_seconds: f64,
    pub per_second: f64,
    /// How many times faster the chunked close is.
    pub speedup: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Close(#[from] crate::close::CloseError),
    #[error("{0}")]
    Setup(String),
    #[error("the benchmark's result is wrong: {0}")]
    Verify(String),
}

/// Peak resident set size of this process (Linux: `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A small deterministic generator (SplitMix64), so a seed names a dataset.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What was generated, to check the close against.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Generated {
    accounts: u64,
    subscriptions: u64,
    queued: u64,
    pending: u64,
}

/// Generate `n` subscriptions in batches and import them. Accounts hold one to three
/// subscriptions; the mix is: monthly 70% / quarterly 20% / annual 10%; Basic, Pro, or 1–20
/// Team seats; USD, EUR, CAD (GST + QST) and GBP; sales taxes and VAT; 10% of accounts with a
/// percent discount, 5% with opening credit; ~2% with a downgrade queued for the period end
/// and ~10% with a pending proration item.
pub(crate) async fn generate(
    store: &dyn Store,
    n: u64,
    seed: u64,
) -> Result<Generated, BenchError> {
    const BATCH: usize = 5_000;
    let mut rng = Rng(seed);
    let mut made = Generated::default();
    let as_of = as_of();
    let created = Utc
        .with_ymd_and_hms(2025, 12, 31, 12, 0, 0)
        .single()
        .expect("a valid instant");
    let currencies = ["USD", "USD", "USD", "USD", "EUR", "EUR", "CAD", "GBP"];
    let mut batch = ImportBatch::default();
    while made.subscriptions < n {
        let a = made.accounts;
        made.accounts += 1;
        let account_id = AccountId::new(&format!("acct{a:08}")).map_err(BenchError::Setup)?;
        let code = currencies[rng.below(currencies.len() as u64) as usize];
        let currency = Currency::new(code).map_err(BenchError::Setup)?;
        let tax = |name: &str, percent: Decimal| TaxRate::new(name, percent);
        let taxes = match code {
            "CAD" => vec![
                tax("GST", Decimal::new(5, 0))?,
                tax("QST", Decimal::new(9975, 3))?,
            ],
            "EUR" | "GBP" => vec![tax("VAT", Decimal::new(20, 0))?],
            _ if rng.chance(30) => vec![tax("Sales tax", Decimal::new(825, 2))?],
            _ => Vec::new(),
        };
        let discount = if rng.chance(10) {
            Some(Discount::new(
                DiscountValue::Percent(Decimal::new(10, 0)),
                None,
                None,
            )?)
        } else {
            None
        };
        let opening_credit = if rng.chance(5) {
            Decimal::new(2500, 2)
        } else {
            Decimal::ZERO
        };
        batch.accounts.push(NewAccount {
            account: Account {
                taxes,
                discount,
                ..Account::new(
                    account_id.clone(),
                    &format!("Customer {a}"),
                    &format!("billing@acct{a:08}.example"),
                    currency,
                )
            },
            opening_credit,
        });
        let subs = match rng.below(100) {
            0..80 => 1,
            80..95 => 2,
            _ => 3,
        };
        for _ in 0..subs {
            if made.subscriptions == n {
                break;
            }
            let s = made.subscriptions;
            made.subscriptions += 1;
            let id = SubscriptionId::new(&format!("sub{s:08}")).map_err(BenchError::Setup)?;
            let (cycle, months) = match rng.below(10) {
                0..7 => ("monthly", 1),
                7..9 => ("quarterly", 3),
                _ => ("annual", 12),
            };
            // Anchored some whole periods before the close, so it renews on `as_of`.
            let periods = 1 + rng.below(if months == 1 { 12 } else { 2 }) as u32;
            let anchor = as_of - Months::new(months * periods);
            let current = Period {
                start: as_of - Months::new(months),
                end: as_of,
            };
            let item = match rng.below(10) {
                0..5 => Item {
                    plan: "basic".into(),
                    quantity: 1,
                },
                5..8 => Item {
                    plan: "pro".into(),
                    quantity: 1,
                },
                _ => Item {
                    plan: "team".into(),
                    quantity: 1 + rng.below(20) as u32,
                },
            };
            if item.plan == "pro" && rng.chance(7) {
                made.queued += 1;
                batch.queued_changes.push(NewQueuedChange {
                    subscription: id.clone(),
                    key: format!("bench/{id}/downgrade"),
                    kind: "tier_downgrade".into(),
                    target: Target {
                        plan: Some("basic".into()),
                        cycle: None,
                        quantity: None,
                    },
                    requested_at: as_of - chrono::Days::new(10),
                    effective_at: as_of,
                });
            }
            if rng.chance(10) {
                made.pending += 1;
                batch.pending_items.push(NewPendingItem {
                    subscription: id.clone(),
                    key: format!("bench/{id}/proration"),
                    description: "Proration: seats added mid-period".into(),
                    amount: Decimal::new(100 + rng.below(5_000) as i64, 2),
                    discountable: true,
                });
            }
            batch.subscriptions.push(NewSubscription {
                subscription: Subscription {
                    current_period: Some(current),
                    next_bill_date: as_of,
                    periods_billed: periods,
                    ..Subscription::new(
                        id,
                        account_id.clone(),
                        "deferred",
                        cycle,
                        vec![item],
                        anchor,
                    )
                },
                licences: Vec::new(),
            });
        }
        if batch.subscriptions.len() >= BATCH || made.subscriptions == n {
            store.import(&batch, created).await?;
            batch = ImportBatch::default();
        }
    }
    Ok(made)
}

impl From<String> for BenchError {
    fn from(e: String) -> Self {
        BenchError::Setup(e)
    }
}

/// Check the close: one renewal invoice per subscription for the period, every document's
/// lines summing to its totals, queued changes applied, pending items consumed. Reads the
/// documents a page at a time.
async fn verify(
    url: &str,
    store: &dyn Store,
    made: Generated,
    report: &crate::close::CloseReport,
) -> Result<u64, BenchError> {
    let fail = |what: String| Err(BenchError::Verify(what));
    if report.invoices != made.subscriptions || report.credit_notes != 0 {
        return fail(format!(
            "{} invoices and {} credit notes for {} subscriptions",
            report.invoices, report.credit_notes, made.subscriptions
        ));
    }
    if !report.failed.is_empty() {
        return fail(format!("{} account(s) not closed", report.failed.len()));
    }
    let mut after = 0;
    let mut seen = 0u64;
    let mut expected_number = 1i64;
    let start = as_of().to_string();
    loop {
        let page = store.documents_page(after, 1_000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for d in &page {
            let doc = &d.document.draft;
            seen += 1;
            if doc.kind != DocumentKind::Invoice
                || !doc.key.starts_with("renewal/")
                || !doc.key.ends_with(&start)
            {
                return fail(format!("unexpected document {}", doc.key));
            }
            let sum: Decimal = doc.lines.iter().map(|l| l.amount).sum();
            let parts = doc.subtotal + doc.discount + doc.tax;
            if sum != doc.total || parts != doc.total {
                return fail(format!(
                    "{}: lines sum to {sum}, parts to {parts}, total is {}",
                    d.document.number, doc.total
                ));
            }
            if doc.amount_due != doc.total - doc.credit_applied {
                return fail(format!("{}: amount due is wrong", d.document.number));
            }
            let want = crate::store::Numbering::format("INV", 2026, expected_number);
            if d.document.number != want {
                return fail(format!(
                    "numbering has a gap: {} where {want} was expected",
                    d.document.number
                ));
            }
            expected_number += 1;
        }
    }
    if seen != made.subscriptions {
        return fail(format!(
            "{seen} documents stored for {} subscriptions",
            made.subscriptions
        ));
    }
    let queued_left = queued_changes_left(url).await?;
    if queued_left != 0 {
        return fail(format!(
            "{queued_left} of {} queued changes not applied",
            made.queued
        ));
    }
    Ok(seen)
}

/// Queued changes not applied, counted in the database (the store's `changes()` reads every
/// change into memory, which would make the benchmark's own memory grow with its size).
async fn queued_changes_left(url: &str) -> Result<i64, BenchError> {
    use sqlx::Connection;
    const SQL: &str = "SELECT COUNT(*) FROM scheduled_changes WHERE status = 'queued'";
    let fail = |e: sqlx::Error| BenchError::Setup(format!("count queued changes: {e}"));
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.map_err(fail)?;
        sqlx::query_scalar(SQL)
            .fetch_one(&mut conn)
            .await
            .map_err(fail)
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(fail)?;
        sqlx::query_scalar(SQL)
            .fetch_one(&mut conn)
            .await
            .map_err(fail)
    }
}

/// A fresh database for one benchmark run, and how to clean it up.
struct FreshDatabase {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Nothing,
    RemoveFile(std::path::PathBuf),
    DropDatabase { admin_url: String, name: String },
}

async fn fresh_database(
    url: Option<&str>,
    tag: &str,
    keep: bool,
) -> Result<FreshDatabase, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    match url {
        None => {
            let path =
                std::env::temp_dir().join(format!("billrun-bench-{}-{tag}.db", std::process::id()));
            remove_sqlite(&path);
            Ok(FreshDatabase {
                url: format!("sqlite://{}", path.display()),
                cleanup: if keep {
                    Cleanup::Nothing
                } else {
                    Cleanup::RemoveFile(path)
                },
            })
        }
        Some(u) if u.starts_with("sqlite:") => {
            let path = u
                .strip_prefix("sqlite://")
                .or_else(|| u.strip_prefix("sqlite:"))
                .unwrap_or(u);
            let path = std::path::PathBuf::from(path.split('?').next().unwrap_or(path));
            let path = if tag == "main" {
                path
            } else {
                path.with_extension(format!("{tag}.db"))
            };
            if path.exists() {
                return Err(setup(format!(
                    "{} exists; the benchmark needs a database of its own (give a new file)",
                    path.display()
                )));
            }
            Ok(FreshDatabase {
                url: format!("sqlite://{}", path.display()),
                cleanup: Cleanup::Nothing,
            })
        }
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            use sqlx::Connection;
            let name = format!("billrun_bench_{}_{tag}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(u).await.map_err(|e| {
                setup(format!(
                    "cannot connect to the PostgreSQL server: {}",
                    crate::redact(&e.to_string())
                ))
            })?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .map_err(|e| setup(format!("cannot create database {name}: {e}")))?;
            Ok(FreshDatabase {
                url: with_database(u, &name),
                cleanup: if keep {
                    Cleanup::Nothing
                } else {
                    Cleanup::DropDatabase {
                        admin_url: u.to_string(),
                        name,
                    }
                },
            })
        }
        Some(u) => Err(setup(format!(
            "database URL {:?} must start with sqlite:// or postgres://",
            crate::display_url(u)
        ))),
    }
}

fn remove_sqlite(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

impl FreshDatabase {
    async fn clean_up(self) {
        match self.cleanup {
            Cleanup::Nothing => {}
            Cleanup::RemoveFile(path) => remove_sqlite(&path),
            Cleanup::DropDatabase { admin_url, name } => {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut admin)
                        .await
                    {
                        tracing::warn!(database = %name, error = %e, "could not drop the benchmark database");
                    }
                }
            }
        }
    }
}

/// The same PostgreSQL server and options, another database.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{authority}/{database}?{q}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

/// The benchmark's clock: the morning of [`as_of`].
pub(crate) fn clock() -> ManualClock {
    ManualClock::at(
        Utc.with_ymd_and_hms(2026, 1, 1, 6, 0, 0)
            .single()
            .expect("a valid instant"),
    )
}

/// Generate, close and time one dataset. Returns (seconds of the close, the report, what was
/// generated, seconds of generation).
async fn one_close(
    url: &str,
    n: u64,
    seed: u64,
    settings: &CloseSettings,
) -> Result<
    (
        f64,
        crate::close::CloseReport,
        Generated,
        f64,
        Box<dyn Store>,
    ),
    BenchError,
> {
    let store = store::open(url).await?;
    store.migrate().await?;
    let catalog = Catalog::from_toml_str(CATALOG)
        .map_err(|e| BenchError::Setup(format!("benchmark catalog: {e}")))?;
    let t = Instant::now();
    let made = generate(store.as_ref(), n, seed).await?;
    if !url.starts_with("sqlite:") {
        // A production database has statistics long before its close (autovacuum analyzes
        // what changed); one loaded a moment ago has none yet. Measure the close, not the
        // race with autovacuum.
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| BenchError::Setup(format!("analyze the dataset: {e}")))?;
        sqlx::query("ANALYZE")
            .execute(&mut conn)
            .await
            .map_err(|e| BenchError::Setup(format!("analyze the dataset: {e}")))?;
    }
    let seed_seconds = t.elapsed().as_secs_f64();
    tracing::debug!(peak_rss = peak_rss_bytes(), "generated");
    let clock = clock();
    let t = Instant::now();
    let billing = Billing {
        store: store.as_ref(),
        catalog: &catalog,
        settings,
        clock: &clock,
        transport: None,
    };
    let report = billing.close(as_of(), &CloseOptions::default()).await?;
    let close_seconds = t.elapsed().as_secs_f64();
    tracing::debug!(peak_rss = peak_rss_bytes(), "closed");
    Ok((close_seconds, report, made, seed_seconds, store))
}

pub async fn run(
    options: &BenchOptions,
    settings: &CloseSettings,
) -> Result<BenchReport, BenchError> {
    if options.subscriptions == 0 {
        return Err(BenchError::Setup(
            "--subscriptions must be at least 1".into(),
        ));
    }
    let mut settings = settings.clone();
    // Every message is due at the close: none waits for a review.
    settings.review_hours = 0;
    settings.numbering = crate::store::Numbering {
        invoice_prefix: "INV".into(),
        credit_note_prefix: "CN".into(),
    };
    let db = fresh_database(options.database_url.as_deref(), "main", options.keep).await?;
    let backend = if db.url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let outcome = async {
        let (close_seconds, report, made, seed_seconds, store) =
            one_close(&db.url, options.subscriptions, options.seed, &settings).await?;
        let t = Instant::now();
        let documents = verify(&db.url, store.as_ref(), made, &report).await?;
        let verify_seconds = t.elapsed().as_secs_f64();
        tracing::info!(
            accounts = made.accounts,
            queued = made.queued,
            pending = made.pending,
            "benchmark dataset"
        );
        // Peak memory of the measured run, before the delivery and the baseline add theirs.
        let peak_rss_bytes = peak_rss_bytes();
        let delivery = match &options.deliver {
            // The documents and the finance batch.
            Some(to) => Some(
                deliver::deliver(store.as_ref(), &settings, &clock(), to, documents + 1).await?,
            ),
            None => None,
        };
        Ok::<_, BenchError>((
            close_seconds,
            documents,
            seed_seconds,
            verify_seconds,
            peak_rss_bytes,
            delivery,
        ))
    }
    .await;
    db.clean_up().await;
    let (close_seconds, documents, seed_seconds, verify_seconds, peak_rss_bytes, delivery) =
        outcome?;
    let per_second = options.subscriptions as f64 / close_seconds;

    let baseline = if options.baseline > 0 {
        let db = fresh_database(options.database_url.as_deref(), "baseline", options.keep).await?;
        let mut one_by_one = settings.clone();
        one_by_one.chunk_size = 1;
        let outcome = one_close(&db.url, options.baseline, options.seed, &one_by_one).await;
        db.clean_up().await;
        let (seconds, report, made, _, _) = outcome?;
        if report.invoices != made.subscriptions {
            return Err(BenchError::Verify(format!(
                "baseline issued {} invoices for {} subscriptions",
                report.invoices, made.subscriptions
            )));
        }
        let baseline_rate = options.baseline as f64 / seconds;
        Some(Baseline {
            subscriptions: options.baseline,
            close_seconds: seconds,
            per_second: baseline_rate,
            speedup: per_second / baseline_rate,
        })
    } else {
        None
    };

    Ok(BenchReport {
        subscriptions: options.subscriptions,
        close_seconds,
        per_second,
        peak_rss_bytes,
        backend,
        chunk_size: settings.chunk_size,
        documents,
        seed_seconds,
        verify_seconds,
        baseline,
        delivery,
    })
}
