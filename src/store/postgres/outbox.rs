//! The outbox on PostgreSQL ([`OutboxStore`], shared): several workers drain it at once,
//! each claim skipping the rows another is claiming (`skip_locked!`).

use super::*;

/// The table a claim walks in id order: by its primary key, which the planner picks for an ordered walk with a LIMIT.
macro_rules! outbox_walk {
    () => {
        "outbox"
    };
}

shared::outbox::outbox_store!(PgStore);
