//! Email: what billrun says to customers and finance, and how it leaves.
//!
//! Rendering is pure (document in, `lettre::Message` out): `facts` decides what a document
//! says, `pdf`, `render` (the customer's email), `finance` (the CSV files) and `batch` (the finance
//! batch, spooled to a file when large)
//! lay it out; delivery goes through the outbox — rows written in the same transaction as the
//! documents they carry — and a [`Transport`]: SMTP (`smtp`) when `smtp_url` is set, else a
//! folder of `.eml` files (the embedded mode). Each message has a stable key (the document
//! number, or `finance-batch-N`) from which its file name and Message-ID derive, so a resend
//! is recognisably the same message.

pub mod batch;
pub mod eml;
pub mod facts;
pub mod finance;
pub mod pdf;
mod render;
pub mod smtp;

pub use batch::{BatchSpool, finance_batch_email, finance_summary};
pub use eml::EmlDir;
pub use finance::finance_files;
pub use pdf::document_pdf;
pub use render::{document_email, document_text};
pub use smtp::{SmtpSettings, SmtpTransport};

pub use crate::core::messages::{document_subject, finance_batch_key, finance_batch_subject};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("cannot build message: {0}")]
    Build(String),
    #[error("cannot deliver message {key}: {reason}")]
    Deliver { key: String, reason: String },
    /// The mail settings cannot work (bad URL, missing or unreadable password).
    #[error("mail configuration: {0}")]
    Config(String),
}

/// A formatted message (`lettre::Message::formatted`): in memory, or written whole in a file
/// (a spooled finance batch, which a transport streams).
#[derive(Debug, Clone, Copy)]
pub enum Formatted<'a> {
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// Where messages go.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Deliver one formatted message to the envelope's recipients. Ok means the other side
    /// accepted it.
    async fn send_raw(
        &self,
        key: &str,
        envelope: &lettre::address::Envelope,
        message: Formatted<'_>,
    ) -> Result<(), MailError>;

    async fn send(&self, key: &str, message: &lettre::Message) -> Result<(), MailError> {
        let bytes = message.formatted();
        self.send_raw(key, message.envelope(), Formatted::Bytes(&bytes))
            .await
    }

    /// How many messages this transport takes at once (SMTP: `smtp_connections`).
    fn parallelism(&self) -> usize {
        1
    }

    /// The `.eml` folder, for a transport that is one: delivery writes its files where it
    /// renders them, off the async threads, instead of calling `send_raw`.
    fn folder(&self) -> Option<&EmlDir> {
        None
    }
}

/// Message-ID from the message key: the same document always carries the same id.
pub fn message_id(key: &str, from: &str) -> String {
    let domain = from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_else(|_| "billrun.invalid".to_string());
    format!("<{key}@{domain}>")
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_id_is_stable_and_uses_the_sender_domain() {
        assert_eq!(
            super::message_id("INV-2026-000001", "Billing <billing@example.com>"),
            "<INV-2026-000001@example.com>"
        );
        assert_eq!(
            super::message_id("INV-2026-000001", "billing@example.com"),
            "<INV-2026-000001@example.com>"
        );
    }
}
