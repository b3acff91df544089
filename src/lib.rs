//! billrun — a scheduled batch invoicing worker for subscription businesses.
//!
//! `core` is the pure billing core; everything else is the shell around it: `store`
//! (SQLite and PostgreSQL), `close` (the one period-close run used by the CLI, the daemon
//! and the simulator), `mail` (rendering and the outbox transports), `config`, `input` (import
//! files), `scenario` (the simulator) and `cli`. See ARCHITECTURE.md.

pub mod bench;
pub mod change;
pub mod cli;
pub mod clock;
pub mod close;
pub mod config;
pub mod context;
pub mod core;
pub mod correction;
pub mod daemon;
pub mod delivery;
pub mod input;
pub mod mail;
pub mod output;
mod panics;
pub mod progress;
mod redact;
pub mod scenario;
pub mod schedule;
pub mod store;
pub mod takeover;
pub mod worker;

pub use panics::catch_panic;
pub use redact::{RedactingStderr, display_url, redact, register_secret, register_url_secrets};
