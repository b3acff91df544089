//! `billrun audit [--account A] [--json]`: the audit log — every void, credit, change,
//! cancellation, licence operation, deletion and unpark, with when, who and why.

use super::{Exit, open_store, print_either};
use crate::config::Config;
use crate::store::AuditEntry;
use anyhow::Result;
use std::fmt;

pub(super) async fn audit(config: &Config, account: Option<&str>, json: bool) -> Result<Exit> {
    let store = open_store(config).await?;
    let entries = store.audit_log(account).await?;
    print_either(json, &entries, AuditText(&entries))
}

/// One line an entry: time, who, what, on which account, and the details.
struct AuditText<'a>(&'a [AuditEntry]);

impl fmt::Display for AuditText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "The audit log is empty.");
        }
        for e in self.0 {
            writeln!(
                f,
                "{}  {:<12} {:<18} {:<16} {}",
                e.at.format("%Y-%m-%d %H:%M:%S"),
                e.actor,
                e.action,
                e.account.as_deref().unwrap_or("-"),
                e.details
            )?;
        }
        Ok(())
    }
}
