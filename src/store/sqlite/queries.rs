//! Documents, balances and accounts on SQLite ([`QueryStore`], shared).

use super::*;

shared::queries::read_helpers!();
shared::queries::query_store!(SqliteStore);

/// A page of documents finds its lines by the page's own query, as every other filter does.
fn page_lines(_: &mut QueryBuilder<Db>, _: &[DbRow]) -> Result<bool, StoreError> {
    Ok(false)
}
