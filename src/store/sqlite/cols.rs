//! SQLite's column types, under the names the shared statements (`store/shared/`) use:
//! dates, timestamps and amounts are TEXT (ISO dates, RFC 3339 UTC timestamps with
//! microseconds, exact decimals), JSON columns TEXT, and a list of ids one JSON array taken
//! apart by `json_each`.

use crate::store::Result;
use crate::store::rows::{Cols, plain_cols, text};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use sqlx::sqlite::SqliteRow;

pub(crate) type Db = sqlx::Sqlite;
pub(crate) type Conn = sqlx::SqliteConnection;
pub(crate) type DbRow = SqliteRow;

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn day(d: NaiveDate) -> String {
    d.to_string()
}

pub(crate) fn money(d: Decimal) -> String {
    d.to_string()
}

/// JSON for a JSON column. The values serialised here (tax rates, discounts, targets,
/// licence operations, audit details) are plain data that always serialise.
pub(crate) fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// JSON text already written, for a JSON column.
pub(crate) fn json_text(text: String) -> String {
    text
}

/// A JSON array of strings (ids), for [`in_list!`].
pub(crate) fn ids<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let values: Vec<&str> = values.into_iter().collect();
    serde_json::to_string(&values).unwrap_or_default()
}

/// A JSON array of row ids, for [`in_list!`].
pub(crate) fn row_ids(values: &[i64]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

/// `IN` the list of ids bound as parameter `$n` (see [`ids`], [`row_ids`]).
macro_rules! in_list {
    ($n:literal) => {
        concat!("IN (SELECT value FROM json_each($", $n, "))")
    };
}
pub(crate) use in_list;

/// A claim of outbox messages locks nothing more: `BEGIN IMMEDIATE` already holds the one
/// write lock.
macro_rules! skip_locked {
    () => {
        ""
    };
}
pub(crate) use skip_locked;

impl Cols for SqliteRow {
    plain_cols!();
    fn day(&self, col: &str) -> Result<NaiveDate> {
        text::date(&self.text(col)?)
    }
    fn opt_day(&self, col: &str) -> Result<Option<NaiveDate>> {
        self.opt_text(col)?.as_deref().map(text::date).transpose()
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        text::timestamp(&self.text(col)?)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        self.opt_text(col)?
            .as_deref()
            .map(text::timestamp)
            .transpose()
    }
    fn money(&self, col: &str) -> Result<Decimal> {
        text::amount(&self.text(col)?)
    }
    fn json_text(&self, col: &str) -> Result<String> {
        self.text(col)
    }
    fn opt_json_text(&self, col: &str) -> Result<Option<String>> {
        self.opt_text(col)
    }
}
