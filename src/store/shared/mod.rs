//! What both backends do alike, written once. Each file is one concern: its statements and
//! method bodies as a macro that a backend expands into `impl <Concern>Store for ItsStore`
//! (`writes.rs`: into the write helpers several concerns share; `import.rs` is plain code).
//!
//! The bodies name the backend's parts unqualified, and they resolve where the macro is
//! expanded, in `store/sqlite/` or `store/postgres/`: its column encoders (`ts`, `day`,
//! `money`, `json`, `ids`, `in_list!`, `skip_locked!`, from its `cols.rs`), its types (`Db`,
//! `Conn`, `DbRow`), its store's `pool` and `write_tx()`, and the few functions whose body
//! differs (how bulk rows travel, how work is claimed). Statements use `$N` placeholders,
//! which both drivers take.

pub(crate) mod changes;
pub(crate) mod deletion;
pub(crate) mod finance;
pub(crate) mod import;
pub(crate) mod outbox;
pub(crate) mod parking;
pub(crate) mod queries;
pub(crate) mod runs;
pub(crate) mod schema;
pub(crate) mod writes;
