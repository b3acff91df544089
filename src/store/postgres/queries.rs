//! Documents, balances and accounts on PostgreSQL ([`QueryStore`], shared).

use super::*;

shared::queries::read_helpers!();
shared::queries::query_store!(PgStore);

/// A page of documents, or documents read by id, finds its lines by their own ids: index
/// probes whatever the statistics say (a subquery, misjudged, became a scan of every line).
fn page_lines(q: &mut QueryBuilder<Db>, page: &[DbRow]) -> Result<bool> {
    let ids: Vec<i64> = page.iter().map(|r| r.int("id")).collect::<Result<_, _>>()?;
    q.push(" = ANY(").push_bind(ids).push(")");
    Ok(true)
}

/// `= ANY` a list of document ids, bound as one array.
fn id_in(q: &mut QueryBuilder<Db>, ids: &[i64]) {
    q.push("= ANY(").push_bind(row_ids(ids)).push(")");
}
