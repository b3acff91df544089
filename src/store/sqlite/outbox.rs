//! The outbox on SQLite ([`OutboxStore`], shared).

use super::*;

shared::outbox::outbox_store!(SqliteStore);
