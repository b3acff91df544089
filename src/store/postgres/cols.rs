//! PostgreSQL's column types, under the names the shared statements (`store/shared/`) use:
//! DATE, TIMESTAMPTZ and NUMERIC (through [`Money`], which keeps the scale of zero), JSONB
//! (through [`Jsonb`], JSON text both ways), and a list of ids a `text[]` for `= ANY`.

use crate::store::Result;
use crate::store::rows::{Cols, plain_cols};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgHasArrayType, PgRow, PgTypeInfo, PgValueFormat, PgValueRef,
};
use sqlx::{Decode, Encode, Postgres, Row, Type, ValueRef};

pub(crate) type Db = Postgres;
pub(crate) type Conn = sqlx::PgConnection;
pub(crate) type DbRow = PgRow;

pub(crate) fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    t
}

pub(crate) fn day(d: NaiveDate) -> NaiveDate {
    d
}

pub(crate) fn money(d: Decimal) -> Money {
    Money(d)
}

/// JSON for a JSONB column. The values serialised here (tax rates, discounts, targets,
/// licence operations, audit details) are plain data that always serialise; `null` is only
/// a fallback.
pub(crate) fn json<T: serde::Serialize + ?Sized>(v: &T) -> Jsonb {
    Jsonb(serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
}

/// JSON text already written, for a JSONB column.
pub(crate) fn json_text(text: String) -> Jsonb {
    Jsonb(text)
}

/// Ids as a `text[]`, for [`in_list!`].
pub(crate) fn ids<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    values.into_iter().collect()
}

/// Row ids as a `bigint[]`, for [`in_list!`].
pub(crate) fn row_ids(values: &[i64]) -> Vec<i64> {
    values.to_vec()
}

/// `= ANY` the array of ids bound as parameter `$n` (see [`ids`], [`row_ids`]).
macro_rules! in_list {
    ($n:literal) => {
        concat!("= ANY($", $n, ")")
    };
}
pub(crate) use in_list;

/// Messages another worker is claiming right now are skipped, not waited for.
macro_rules! skip_locked {
    () => {
        " FOR UPDATE SKIP LOCKED"
    };
}
pub(crate) use skip_locked;

/// Money as NUMERIC, keeping its scale both ways. sqlx's `rust_decimal` support writes and
/// reads every zero as a bare `0`, so an invoice with nothing due would print `0` where
/// SQLite prints `0.00`; zero is therefore encoded and decoded here, anything else by sqlx.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Money(pub(crate) Decimal);

impl Type<Postgres> for Money {
    fn type_info() -> PgTypeInfo {
        <Decimal as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <Decimal as Type<Postgres>>::compatible(ty)
    }
}

impl PgHasArrayType for Money {
    fn array_type_info() -> PgTypeInfo {
        <Decimal as PgHasArrayType>::array_type_info()
    }
    fn array_compatible(ty: &PgTypeInfo) -> bool {
        <Decimal as PgHasArrayType>::array_compatible(ty)
    }
}

impl Encode<'_, Postgres> for Money {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        if !self.0.is_zero() {
            return <Decimal as Encode<Postgres>>::encode_by_ref(&self.0, buf);
        }
        // Binary NUMERIC: digit count, weight, sign, display scale (all big-endian i16/u16).
        let scale = i16::try_from(self.0.scale())?;
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&scale.to_be_bytes());
        Ok(IsNull::No)
    }
}

impl Decode<'_, Postgres> for Money {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let bytes = value.as_bytes()?;
                // No digits and a positive sign is zero; its display scale is bytes 6..8.
                if bytes.len() == 8 && bytes[..6] == [0, 0, 0, 0, 0, 0] {
                    let scale = i16::from_be_bytes([bytes[6], bytes[7]]);
                    return Ok(Money(Decimal::new(0, u32::try_from(scale)?)));
                }
                Ok(Money(<Decimal as Decode<Postgres>>::decode(value)?))
            }
            PgValueFormat::Text => Ok(Money(Decimal::from_str_exact(value.as_str()?)?)),
        }
    }
}

/// A JSONB value as JSON text: written as the text is, read as the text PostgreSQL prints
/// for it (the binary form is a version byte, then that text).
#[derive(Debug, Clone)]
pub(crate) struct Jsonb(pub(crate) String);

/// JSONB, as sqlx's own JSON values.
fn jsonb() -> PgTypeInfo {
    <serde_json::Value as Type<Postgres>>::type_info()
}

impl Type<Postgres> for Jsonb {
    fn type_info() -> PgTypeInfo {
        jsonb()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <serde_json::Value as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Jsonb {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // JSONB's binary format, version 1.
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

impl Decode<'_, Postgres> for Jsonb {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        let binary = value.format() == PgValueFormat::Binary && *value.type_info() == jsonb();
        let bytes = value.as_bytes()?;
        let text = match (binary, bytes.split_first()) {
            (true, Some((1, text))) => text,
            (true, _) => return Err("unsupported JSONB format version (expected 1)".into()),
            (false, _) => bytes,
        };
        Ok(Jsonb(std::str::from_utf8(text)?.to_string()))
    }
}

impl Cols for PgRow {
    plain_cols!();
    fn day(&self, col: &str) -> Result<NaiveDate> {
        Ok(self.try_get(col)?)
    }
    fn opt_day(&self, col: &str) -> Result<Option<NaiveDate>> {
        Ok(self.try_get(col)?)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        Ok(self.try_get(col)?)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }
    fn money(&self, col: &str) -> Result<Decimal> {
        Ok(self.try_get::<Money, _>(col)?.0)
    }
    fn json_text(&self, col: &str) -> Result<String> {
        Ok(self.try_get::<Jsonb, _>(col)?.0)
    }
    fn opt_json_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get::<Option<Jsonb>, _>(col)?.map(|j| j.0))
    }
}
