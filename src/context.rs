//! The billing context: what every close, change, licence operation and delivery works
//! with — the store, the catalog, the settings, the clock and (when mail leaves) the
//! transport — built once by the CLI, the daemon, the simulator or the bench, and passed as
//! one value. Its methods live beside what they do: `close` in `close`, delivery in
//! `delivery`, changes in `change`.

use crate::clock::Clock;
use crate::config::Config;
use crate::core::billing::Terms;
use crate::core::catalog::Catalog;
use crate::core::party::Seller;
use crate::core::sanity::SanityBounds;
use crate::mail::Transport;
use crate::store::prelude::*;
use crate::store::{ModuleMap, Numbering};

#[derive(Clone, Copy)]
pub struct Billing<'a> {
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
    pub settings: &'a CloseSettings,
    pub clock: &'a dyn Clock,
    /// Where messages go; `None` leaves them queued in the outbox (the simulator, tests).
    pub transport: Option<&'a dyn Transport>,
}

/// What runs and changes need from the configuration.
#[derive(Debug, Clone)]
pub struct CloseSettings {
    pub terms: Terms,
    pub numbering: Numbering,
    pub chunk_size: u32,
    pub finance_to: String,
    pub mail_from: String,
    /// Days after an account is canceled before its data is deleted.
    pub retention_days: u32,
    /// Module data tables, purged when an account is deleted or a module is downgraded away.
    pub modules: ModuleMap,
    /// This process's name in work claims (host:pid).
    pub worker: String,
    /// How long a claim on a chunk of accounts lasts; a worker that dies holding one is
    /// replaced after this.
    pub lease_seconds: u32,
    /// Hours a run's customer emails wait for review (0: none).
    pub review_hours: u32,
    /// Bounds a close must stay within to be issued unattended; an account whose close
    /// exceeds one is parked (see `core::sanity`).
    pub sanity: SanityBounds,
    /// Who the documents name as their issuer.
    pub seller: Seller,
    /// Who the audit log names for what this process does on its own (cancellations,
    /// deletions): the OS user, `daemon`, or `scenario`.
    pub actor: String,
}

impl CloseSettings {
    /// The one place settings are built from the configuration.
    pub fn from_config(config: &Config) -> CloseSettings {
        CloseSettings {
            terms: Terms {
                payment_terms_days: config.payment_terms_days,
            },
            numbering: Numbering {
                invoice_prefix: config.invoice_prefix.clone(),
                credit_note_prefix: config.credit_note_prefix.clone(),
            },
            chunk_size: config.chunk_size,
            finance_to: config.finance_to.clone(),
            mail_from: config.mail_from.clone(),
            retention_days: config.retention_days,
            modules: config.modules.clone(),
            worker: worker_name(),
            lease_seconds: config.lease_seconds,
            review_hours: config.review_hours,
            sanity: config.sanity_bounds(),
            // Required by every command that renders documents (cli::run checks it); the
            // simulator and the bench render nothing.
            seller: config.seller.clone().unwrap_or_default(),
            actor: operator(),
        }
    }
}

/// Who asks, for the audit log: the OS user running the command.
pub fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

/// This process in work claims: see [`crate::worker::name`].
pub fn worker_name() -> String {
    crate::worker::name()
}
