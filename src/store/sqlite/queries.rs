//! Documents, balances and accounts on SQLite ([`QueryStore`], shared).

use super::*;

shared::queries::read_helpers!();
shared::queries::query_store!(SqliteStore);

/// A page of documents finds its lines by the page's own query, as every other filter does.
fn page_lines(_: &mut QueryBuilder<Db>, _: &[DbRow]) -> Result<bool> {
    Ok(false)
}

/// `IN` a list of document ids, bound as one JSON array.
fn id_in(q: &mut QueryBuilder<Db>, ids: &[i64]) {
    q.push("IN (SELECT value FROM json_each(")
        .push_bind(row_ids(ids))
        .push("))");
}
