//! billrun's integration tests, one binary: each module is one concern, run against the real
//! `billrun` binary or the library, on a real SQLite file and (when a server answers, always
//! in CI) a real PostgreSQL database. `common` is the sandbox harness; data lives under
//! `tests/fixtures`, `tests/golden` and `tests/scenarios`, so a new case is a new file.
//!
//! `cargo test --test it MODULE::` runs one module; `UPDATE_EXPECT=1 cargo test --test it
//! scenarios::` rewrites the `*.expected.json` files of the golden examples and scenarios
//! when a change of output is intended (review the diff before committing it).

#[macro_use]
mod common;

mod cli;
mod correction_properties;
mod corrections;
mod crash;
mod daemon;
mod deploy;
mod fuzz;
mod hardening;
mod invoices;
mod lifecycle;
mod outages;
mod overflow;
mod parking;
mod progress;
mod properties;
mod recovery;
mod scenarios;
mod security;
mod smtp;
mod smtp_pipeline;
mod statistics;
mod status;
mod takeover;
mod workers;
