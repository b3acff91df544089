//! Imports: each backend writes an [`ImportBatch`] its own way (multi-row `VALUES` on
//! SQLite, `UNNEST` arrays on PostgreSQL); the rows it is flattened into, and the refusal of
//! an id already stored, are the same.

use crate::core::domain::Item;
use crate::input::ImportBatch;
use crate::store::Result;
use crate::store::StoreError;
use std::collections::BTreeSet;

/// (subscription, item) of every imported subscription's items.
pub(crate) fn items(batch: &ImportBatch) -> Vec<(&str, &Item)> {
    batch
        .subscriptions
        .iter()
        .flat_map(|n| {
            n.subscription
                .items
                .iter()
                .map(|i| (n.subscription.id.as_str(), i))
        })
        .collect()
}

/// (subscription, plan, holder if assigned) of every imported licence.
pub(crate) fn licences(batch: &ImportBatch) -> Vec<(&str, &str, Option<&str>)> {
    batch
        .subscriptions
        .iter()
        .flat_map(|n| {
            n.licences.iter().map(|(plan, holder)| {
                (n.subscription.id.as_str(), plan.as_str(), holder.as_deref())
            })
        })
        .collect()
}

/// Rows are inserted `ON CONFLICT DO NOTHING` rather than failing, so that the first id
/// already stored, in file order, is the one named: `what {id:?} already exists`.
pub(crate) fn refuse_existing<'a>(
    what: &str,
    ids: impl IntoIterator<Item = &'a str>,
    inserted: Vec<String>,
) -> Result<()> {
    let inserted: BTreeSet<String> = inserted.into_iter().collect();
    match ids.into_iter().find(|id| !inserted.contains(*id)) {
        Some(id) => Err(StoreError::Rejected(format!(
            "{what} {id:?} already exists"
        ))),
        None => Ok(()),
    }
}
