//! The outbox on PostgreSQL ([`OutboxStore`], shared): several workers drain it at once,
//! each claim skipping the rows another is claiming (`skip_locked!`).

use super::*;

shared::outbox::outbox_store!(PgStore);
