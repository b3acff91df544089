//! The books of a test database, read straight from its tables, and the invariants every
//! committed state must satisfy whatever happened to the runs that wrote it (crashes, kills,
//! several workers, lost connections): each document key once, numbers gapless per prefix and
//! year, balances equal to their ledger and never negative, the ledger tied to the documents'
//! applied credit, exactly one outbox message per document and per finance batch.
//!
//! Every column is read as text (`CAST(… AS TEXT)`), so one query runs on both backends and
//! nothing depends on the store's Rust types, which may change under these tests.

use super::{Backend, TestDb};
use rust_decimal::Decimal;
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// Every row of `sql` with every column as optional text. Columns must be TEXT already or
/// cast to it in the query.
pub async fn text_rows(db: &TestDb, sql: &str) -> Vec<Vec<Option<String>>> {
    snapshot_rows(db, &[sql]).await.pop().unwrap()
}

/// The rows of several queries read in one transaction, so from one consistent state even
/// while a writer (or the backend of a killed one) commits.
pub async fn snapshot_rows(db: &TestDb, queries: &[&str]) -> Vec<Vec<Vec<Option<String>>>> {
    macro_rules! texts {
        ($rows:expr) => {
            $rows
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.try_get::<Option<String>, _>(i).unwrap())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
    }
    let mut out = Vec::new();
    match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("{}?mode=ro", db.url))
                .await
                .unwrap_or_else(|e| panic!("open {}: {e}", db.url));
            let mut tx = conn.begin().await.unwrap();
            for sql in queries {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                out.push(texts!(rows));
            }
            tx.rollback().await.unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await
                .unwrap();
            for sql in queries {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                out.push(texts!(rows));
            }
            tx.rollback().await.unwrap();
            conn.close().await.unwrap();
        }
    }
    out
}

/// One number from a query (cast to text), on either backend.
pub async fn number(db: &TestDb, sql: &str) -> i64 {
    let rows = text_rows(db, sql).await;
    rows[0][0]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn dec(s: &Option<String>) -> Decimal {
    let s = s.as_deref().expect("an amount");
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s:?} is not a decimal: {e}"))
}

fn text(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// What [`Doc::content`] returns.
pub type DocContent = (String, String, String, String, String, String, [Decimal; 6]);

/// One stored document, as text and decimals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub id: String,
    pub number: String,
    pub kind: String,
    pub account: String,
    pub subscription: String,
    pub period_start: String,
    pub issued_at: String,
    pub currency: String,
    pub subtotal: Decimal,
    pub discount: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    pub credit_applied: Decimal,
    pub amount_due: Decimal,
    pub finance_batch: Option<String>,
}

impl Doc {
    /// Everything but what depends on the order of issue (id, number) and on which run
    /// reported it: what an interrupted close must reproduce exactly.
    pub fn content(&self) -> DocContent {
        (
            self.kind.clone(),
            self.account.clone(),
            self.subscription.clone(),
            self.period_start.clone(),
            self.issued_at.clone(),
            self.currency.clone(),
            [
                self.subtotal,
                self.discount,
                self.tax,
                self.total,
                self.credit_applied,
                self.amount_due,
            ],
        )
    }
}

/// One outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub key: String,
    pub kind: String,
    pub document: Option<String>,
    pub finance_batch: Option<String>,
    pub status: String,
    pub attempts: i64,
}

/// What the invariant check read, for the caller's own comparisons.
#[derive(Debug, Clone)]
pub struct Books {
    /// doc_key → document.
    pub documents: BTreeMap<String, Doc>,
    /// account → balance.
    pub balances: BTreeMap<String, Decimal>,
    pub outbox: Vec<OutboxRow>,
    pub finance_batches: usize,
    /// Batches with their message queued (the run that made them ended).
    pub sealed_batches: usize,
}

impl Books {
    /// (count, Σ total) per currency.
    pub fn totals_per_currency(&self) -> BTreeMap<String, (usize, Decimal)> {
        let mut out: BTreeMap<String, (usize, Decimal)> = BTreeMap::new();
        for d in self.documents.values() {
            let e = out.entry(d.currency.clone()).or_default();
            e.0 += 1;
            e.1 += d.total;
        }
        out
    }

    /// subscription → period starts billed, sorted.
    pub fn periods_per_subscription(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in self.documents.values() {
            out.entry(d.subscription.clone())
                .or_default()
                .push(d.period_start.clone());
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }
}

const DOCUMENTS: &str = "SELECT CAST(id AS TEXT), number, doc_key, kind, account_id, \
     subscription_id, CAST(period_start AS TEXT), CAST(issued_at AS TEXT), currency, \
     CAST(subtotal AS TEXT), CAST(discount AS TEXT), CAST(tax AS TEXT), CAST(total AS TEXT), \
     CAST(credit_applied AS TEXT), CAST(amount_due AS TEXT), CAST(finance_batch_id AS TEXT) \
     FROM documents";

/// Read the books and assert every invariant a committed state must hold. `ctx` goes into
/// every assertion message (the test, the seed, which kill).
pub async fn check_books(db: &TestDb, ctx: &str) -> Books {
    let mut snapshot = snapshot_rows(
        db,
        &[
            DOCUMENTS,
            "SELECT id, CAST(balance AS TEXT) FROM accounts",
            "SELECT account_id, CAST(amount AS TEXT), reason, CAST(document_id AS TEXT) FROM balance_ledger",
            "SELECT message_key, kind, CAST(document_id AS TEXT), CAST(finance_batch_id AS TEXT), \
             status, CAST(attempts AS TEXT) FROM outbox",
            "SELECT CAST(id AS TEXT) FROM finance_batches",
        ],
    )
    .await
    .into_iter();
    let mut next = || snapshot.next().unwrap();
    let docs = next();
    let accounts = next();
    let ledger = next();
    let rows = next();
    let batches = next();
    let mut documents = BTreeMap::new();
    let mut by_id = BTreeMap::new();
    let mut numbers: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in &docs {
        let d = Doc {
            id: text(&r[0]),
            number: text(&r[1]),
            kind: text(&r[3]),
            account: text(&r[4]),
            subscription: text(&r[5]),
            period_start: text(&r[6]),
            issued_at: text(&r[7]),
            currency: text(&r[8]),
            subtotal: dec(&r[9]),
            discount: dec(&r[10]),
            tax: dec(&r[11]),
            total: dec(&r[12]),
            credit_applied: dec(&r[13]),
            amount_due: dec(&r[14]),
            finance_batch: r[15].clone(),
        };
        let key = text(&r[2]);
        // PREFIX-YEAR-NNNNNN, the year being the year of issue.
        let parts: Vec<&str> = d.number.split('-').collect();
        assert_eq!(parts.len(), 3, "{ctx}: malformed number {}", d.number);
        assert_eq!(
            parts[1],
            &d.issued_at[..4],
            "{ctx}: {} is numbered in another year than its issue date {}",
            d.number,
            d.issued_at
        );
        numbers
            .entry((parts[0].to_string(), parts[1].to_string()))
            .or_default()
            .push(parts[2].parse().expect("a numeric sequence"));
        assert!(
            d.credit_applied >= Decimal::ZERO && d.amount_due == d.total - d.credit_applied,
            "{ctx}: {key}: amount due {} is not total {} minus credit {}",
            d.amount_due,
            d.total,
            d.credit_applied
        );
        by_id.insert(d.id.clone(), key.clone());
        if let Some(prev) = documents.insert(key.clone(), d) {
            panic!("{ctx}: document key {key} issued twice ({})", prev.number);
        }
    }
    for ((prefix, year), mut seq) in numbers {
        seq.sort_unstable();
        let n = seq.len() as u64;
        let want: Vec<u64> = (1..=n).collect();
        if seq != want {
            let present: BTreeSet<u64> = seq.iter().copied().collect();
            let missing: Vec<u64> = (1..=n).filter(|i| !present.contains(i)).take(5).collect();
            let mut dups = seq.clone();
            dups.dedup();
            panic!(
                "{ctx}: {prefix}-{year} numbers are not 1..={n} without gaps: missing {missing:?}, \
                 {} duplicate(s), highest {:?}",
                seq.len() - dups.len(),
                seq.last()
            );
        }
    }

    // Balances: the cached balance is the ledger's sum and never negative; credit used by a
    // document is one ledger entry of the same amount, and nothing else takes credit.
    let mut balances = BTreeMap::new();
    for r in &accounts {
        balances.insert(text(&r[0]), dec(&r[1]));
    }
    let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut applied: BTreeMap<String, Decimal> = BTreeMap::new();
    for r in &ledger {
        let account = text(&r[0]);
        let amount = dec(&r[1]);
        *sums.entry(account.clone()).or_default() += amount;
        if r[2].as_deref() == Some("credit_applied") {
            let doc = r[3]
                .clone()
                .unwrap_or_else(|| panic!("{ctx}: credit applied to no document ({account})"));
            let key = by_id
                .get(&doc)
                .unwrap_or_else(|| panic!("{ctx}: ledger names missing document {doc}"));
            assert!(
                applied.insert(key.clone(), -amount).is_none(),
                "{ctx}: credit applied twice to {key}"
            );
        }
    }
    for (account, balance) in &balances {
        let sum = sums.get(account).copied().unwrap_or_default();
        assert_eq!(
            *balance, sum,
            "{ctx}: account {account}: balance {balance} but its ledger sums to {sum}"
        );
        assert!(
            *balance >= Decimal::ZERO,
            "{ctx}: account {account}: negative balance {balance}"
        );
    }
    for (key, d) in &documents {
        let in_ledger = applied.get(key).copied().unwrap_or_default();
        assert_eq!(
            d.credit_applied, in_ledger,
            "{ctx}: {key} applied credit {} but the ledger took {in_ledger}",
            d.credit_applied
        );
    }

    // The outbox: one message per document, one per finance batch, nothing else.
    let outbox: Vec<OutboxRow> = rows
        .iter()
        .map(|r| OutboxRow {
            key: text(&r[0]),
            kind: text(&r[1]),
            document: r[2].clone(),
            finance_batch: r[3].clone(),
            status: text(&r[4]),
            attempts: text(&r[5]).parse().unwrap(),
        })
        .collect();
    let mut per_document: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_batch: BTreeMap<String, usize> = BTreeMap::new();
    for m in &outbox {
        match (m.kind.as_str(), &m.document, &m.finance_batch) {
            ("document", Some(d), None) => *per_document.entry(d.clone()).or_default() += 1,
            ("finance_batch", None, Some(b)) => *per_batch.entry(b.clone()).or_default() += 1,
            _ => panic!("{ctx}: malformed outbox row {m:?}"),
        }
    }
    for (id, key) in &by_id {
        let n = per_document.get(id).copied().unwrap_or(0);
        assert_eq!(n, 1, "{ctx}: {key} has {n} outbox message(s)");
    }
    assert_eq!(
        per_document.len(),
        by_id.len(),
        "{ctx}: outbox messages for documents that do not exist"
    );
    // A run's batch gets its message when the run ends (it is sealed); a run cut short
    // leaves its batch unsealed until the next run adopts its documents.
    for b in &batches {
        let id = text(&b[0]);
        let n = per_batch.get(&id).copied().unwrap_or(0);
        assert!(n <= 1, "{ctx}: finance batch {id} has {n} outbox messages");
    }
    let batch_ids: BTreeSet<String> = batches.iter().map(|b| text(&b[0])).collect();
    assert!(
        per_batch.keys().all(|b| batch_ids.contains(b)),
        "{ctx}: outbox messages for finance batches that do not exist"
    );
    // References PostgreSQL does not check row by row (its migration 0004): every one must
    // point at a row that exists.
    let orphans = text_rows(
        db,
        "SELECT 'document without its account', CAST(COUNT(*) AS TEXT) FROM documents d \
         WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = d.account_id) \
         UNION ALL SELECT 'document without its subscription', CAST(COUNT(*) AS TEXT) FROM documents d \
         WHERE d.subscription_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = d.subscription_id) \
         UNION ALL SELECT 'document without its run', CAST(COUNT(*) AS TEXT) FROM documents d \
         WHERE d.run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = d.run_id) \
         UNION ALL SELECT 'document without its finance batch', CAST(COUNT(*) AS TEXT) FROM documents d \
         WHERE d.finance_batch_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM finance_batches b WHERE b.id = d.finance_batch_id) \
         UNION ALL SELECT 'line without its document', CAST(COUNT(*) AS TEXT) FROM document_lines l \
         WHERE NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = l.document_id) \
         UNION ALL SELECT 'claim without its account', CAST(COUNT(*) AS TEXT) FROM close_claims c \
         WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = c.account_id)",
    )
    .await;
    for r in &orphans {
        assert_eq!(text(&r[1]), "0", "{ctx}: {}", text(&r[0]));
    }
    Books {
        documents,
        balances,
        outbox,
        finance_batches: batches.len(),
        sealed_batches: per_batch.len(),
    }
}

/// The checks of a finished close, on top of [`check_books`]: every document reported to
/// finance, every message sent, no claim left behind.
pub async fn check_finished(db: &TestDb, ctx: &str) -> Books {
    let books = check_books(db, ctx).await;
    let unreported: Vec<&String> = books
        .documents
        .iter()
        .filter(|(_, d)| d.finance_batch.is_none())
        .map(|(k, _)| k)
        .take(5)
        .collect();
    assert!(
        unreported.is_empty(),
        "{ctx}: documents in no finance batch: {unreported:?}…"
    );
    assert_eq!(
        books.sealed_batches, books.finance_batches,
        "{ctx}: a finance batch was never sealed (no message queued for it)"
    );
    let unsent: Vec<&OutboxRow> = books
        .outbox
        .iter()
        .filter(|m| m.status != "sent")
        .take(5)
        .collect();
    assert!(unsent.is_empty(), "{ctx}: messages not sent: {unsent:?}…");
    assert_eq!(
        number(db, "SELECT CAST(COUNT(*) AS TEXT) FROM close_claims").await,
        0,
        "{ctx}: claims left after the close finished"
    );
    books
}

/// A small seeded PRNG (SplitMix64): the same seed, the same data and the same choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `BILLRUN_<name>` as a number, or the default.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// A seed from `var` if set, else a fresh one (printed by the caller so it can be replayed).
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a whole number")),
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                % 1_000_000_000
        }
    }
}
