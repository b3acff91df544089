//! The outbox on PostgreSQL ([`OutboxStore`], shared): several workers drain it at once,
//! each claim skipping the rows another is claiming (`skip_locked!`).

use super::*;

/// The table a claim walks in id order: by its primary key, the only plan left once the claim's
/// transaction rules out bitmap scans and sorts (`ordered_walk_tx`).
macro_rules! outbox_walk {
    () => {
        "outbox"
    };
}

shared::outbox::outbox_store!(PgStore);
