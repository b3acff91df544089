//! billrun — a scheduled batch invoicing worker for subscription businesses.
//!
//! `core` is the pure billing core; everything else is the shell around it: `store`
//! (SQLite, later PostgreSQL), `close` (the one period-close run used by the CLI, the daemon
//! and the simulator), `mail` (rendering and the outbox transports), `config`, `input` (import
//! and scenario files) and `cli`. See ARCHITECTURE.md.

pub mod core;
