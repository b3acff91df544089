//! Module data tables named in the configuration (`[modules]`): purged when an account is
//! deleted or a module is downgraded away. Identifiers are checked here, before any SQL is
//! built from them, and billrun's own tables are never module data.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleTable {
    pub table: String,
    pub account_column: String,
}

/// billrun's own tables: never module data, whatever the configuration says.
pub const OWN_TABLES: &[&str] = &[
    "accounts",
    "subscriptions",
    "subscription_items",
    "licences",
    "scheduled_changes",
    "pending_items",
    "runs",
    "number_series",
    "finance_batches",
    "documents",
    "document_lines",
    "balance_ledger",
    "outbox",
    "audit_log",
    "close_claims",
    "parked_accounts",
    "parked_events",
    "_sqlx_migrations",
];

/// A plain SQL identifier: letters, digits and `_`, not starting with a digit, at most 63.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}
