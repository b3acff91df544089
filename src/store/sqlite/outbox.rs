//! The outbox on SQLite ([`OutboxStore`], shared).

use super::*;

/// The table a claim walks in id order: by its rowid: without statistics SQLite would rather take `outbox_pending` and sort
/// every pending message for each claim.
macro_rules! outbox_walk {
    () => {
        "outbox NOT INDEXED"
    };
}

shared::outbox::outbox_store!(SqliteStore);
