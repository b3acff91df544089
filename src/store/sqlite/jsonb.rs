//! Bulk rows on SQLite: many rows bound as one JSONB parameter and taken apart in SQL by
//! `jsonb_each` ([`JsonRows`]), and rows a query aggregated into one JSON array read back
//! ([`json_rows`]).

use super::cols::Conn;
use crate::store::Result;
use crate::store::rows::corrupt;
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;

/// Many rows as one JSON array of arrays, bound as one parameter and taken apart in SQL
/// (`SELECT value->>0, value->>1, … FROM jsonb_each($1)`). Bulk writes go this way rather
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
pub(crate) struct JsonRows {
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
    pub(crate) fn new() -> Self {
        JsonRows {
            jsonb: vec![JSONB_SIZE4 | JSONB_ARRAY, 0, 0, 0, 0],
            rows: 0,
            row: None,
            scratch: Vec::new(),
        }
    }

    /// Start the next row; its cells follow with [`JsonRows::cell`].
    pub(crate) fn row(&mut self) -> &mut Self {
        self.end_row();
        self.row = Some(self.jsonb.len());
        self.jsonb.extend([JSONB_SIZE4 | JSONB_ARRAY, 0, 0, 0, 0]);
        self.rows += 1;
        self
    }

    pub(crate) fn cell(&mut self, v: impl JsonCell) -> &mut Self {
        v.write(self);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
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
pub(crate) trait JsonCell {
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

/// Rows a query aggregated into one JSON array (`json_group_array`).
pub(crate) fn json_rows<'a, T: serde::Deserialize<'a>>(
    what: &str,
    json: &'a str,
) -> Result<Vec<T>> {
    serde_json::from_str(json).map_err(|e| corrupt(what)(e.to_string()))
}

/// Run a statement that takes `rows` apart as `$1`; nothing when there are none.
pub(crate) async fn write_rows(
    conn: &mut Conn,
    sql: &'static str,
    rows: JsonRows,
) -> Result<(), sqlx::Error> {
    if !rows.is_empty() {
        sqlx::query(sql).bind(rows.finish()).execute(conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::text::date;
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::cols::ids;

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
        assert_eq!(ids(["x", "y\"z"]), r#"["x","y\"z"]"#);
    }
}
