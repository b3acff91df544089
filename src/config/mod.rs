//! Configuration: `config/billrun.toml` (or `--config FILE`), then `BILLRUN_*` environment
//! variables over any key. Validated at load; an error names the key (and the line, for the
//! file) and nothing runs with a half-valid configuration.

use crate::core::catalog::toml_error;
use crate::core::money::Currency;
use crate::core::party::Seller;
use crate::core::sanity::{MaxInvoice, SanityBounds};
use crate::mail::smtp::{SEND_TIMEOUT, Secret, read_password_file};
use crate::mail::{EmlDir, MailError, SmtpSettings, SmtpTransport, Transport};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "config/billrun.toml";

/// Every key, with its environment variable `BILLRUN_<KEY>`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://PATH` (embedded) or `postgres://…` (production).
    pub database_url: String,
    /// Path of the catalog file.
    pub catalog: String,
    /// Default billing timezone of accounts that name none.
    pub timezone: String,
    /// Folder for `.eml` files (embedded transport).
    pub mail_dir: String,
    pub smtp_url: Option<String>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    /// A file holding the SMTP password (its trailing newline ignored): for secrets mounted
    /// as files. Not together with `smtp_password`.
    pub smtp_password_file: Option<String>,
    /// A PEM file of CA certificates trusted for SMTP's TLS besides the built-in roots.
    pub smtp_ca_file: Option<String>,
    /// Connections to the SMTP server at once, each carrying one message at a time (1–64).
    pub smtp_connections: u32,
    pub mail_from: String,
    pub finance_to: String,
    pub invoice_prefix: String,
    pub credit_note_prefix: String,
    /// Days from issue to due date.
    pub payment_terms_days: u32,
    /// Days after cancellation before an account's data is deleted.
    pub retention_days: u32,
    /// Accounts closed per transaction.
    pub chunk_size: u32,
    /// Seconds a worker's claim on a chunk lasts before another worker may take it over.
    pub lease_seconds: u32,
    /// Hours a run's customer emails wait before they go, so finance can look first
    /// (`billrun hold RUN` / `release RUN`); the finance batch goes at once. 0: no wait.
    pub review_hours: u32,
    /// When the daemon closes: cron with seconds, in the billing timezone.
    pub schedule: String,
    /// Where the daemon serves /healthz and /metrics.
    pub http_addr: String,
    /// Per module, the tables holding its data and their account-id column: purged when an
    /// account is deleted, and when a `deferred` downgrade drops the module.
    pub modules: BTreeMap<String, Vec<ModuleTable>>,
    /// Sanity bound: an account whose close would give one subscription more documents than
    /// this in one run is parked instead of billed (0: no limit).
    pub sanity_max_documents_per_subscription: u32,
    /// Sanity bound: an account whose close would invoice a subscription more than this many
    /// times its previous invoice is parked instead of billed (0: no limit). A whole number,
    /// or a decimal as a quoted string ("2.5"); never a float.
    #[serde(deserialize_with = "factor")]
    pub sanity_max_increase: Decimal,
    /// Sanity bound: an invoice above this total is parked, in its currency's units; keys are
    /// currency codes and `default` (the others). 0 disables; absent, `default` is ten
    /// million.
    #[serde(deserialize_with = "amounts")]
    pub sanity_max_invoice: BTreeMap<String, Decimal>,
    /// Who issues the documents (SPEC §11): required by the commands that issue, send or
    /// show documents ([`Config::seller`]).
    pub seller: Option<Seller>,
}

/// The sanity bounds the configuration sets.
impl Config {
    pub fn sanity_bounds(&self) -> SanityBounds {
        let mut max_invoice = MaxInvoice::default();
        for (key, value) in &self.sanity_max_invoice {
            match Currency::new(key) {
                Ok(c) => {
                    max_invoice.per_currency.insert(c, *value);
                }
                // Validated at load: the only other key is `default`.
                Err(_) => max_invoice.default = *value,
            }
        }
        SanityBounds {
            max_documents_per_subscription: self.sanity_max_documents_per_subscription,
            max_increase: self.sanity_max_increase,
            max_invoice,
        }
    }
}

/// `sanity_max_invoice = { default = 1000000, JPY = "100000000" }`: whole numbers or quoted
/// decimals, never floats.
fn amounts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Decimal>, D::Error> {
    #[derive(Deserialize)]
    struct Amount(#[serde(deserialize_with = "factor")] Decimal);
    let map = BTreeMap::<String, Amount>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// `BILLRUN_SANITY_MAX_INVOICE`: `AMOUNT` (the default) or `CUR=AMOUNT,…,default=AMOUNT`.
fn parse_amounts(v: &str) -> Result<BTreeMap<String, Decimal>, String> {
    let mut map = BTreeMap::new();
    for part in v.split(',') {
        match part.split_once('=') {
            Some((k, a)) => map.insert(k.trim().to_string(), parse_factor(a)?),
            None => map.insert("default".to_string(), parse_factor(part)?),
        };
    }
    Ok(map)
}

/// A factor as a decimal, from text ("2.5") or an integer.
fn parse_factor(v: &str) -> Result<Decimal, String> {
    Decimal::from_str_exact(v.trim()).map_err(|_| format!("{v:?} is not a decimal number"))
}

/// `sanity_max_increase = 10` or `= "2.5"`; a TOML float is refused (it would be rounded).
fn factor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Decimal;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number or a decimal in quotes, e.g. 10 or \"2.5\"")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
            parse_factor(v).map_err(E::custom)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Decimal, E> {
            Err(E::custom(format!(
                "write a decimal in quotes (\"{v}\"), not as a float"
            )))
        }
    }
    d.deserialize_any(Visitor)
}

use crate::store::modules::OWN_TABLES;
pub use crate::store::modules::{ModuleTable, is_identifier};

/// Written by hand so that `{config:?}` can never print a password.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &crate::redact(&self.database_url))
            .field("catalog", &self.catalog)
            .field("timezone", &self.timezone)
            .field("mail_dir", &self.mail_dir)
            .field("smtp_url", &self.smtp_url.as_deref().map(crate::redact))
            .field("smtp_user", &self.smtp_user)
            .field("smtp_password", &self.smtp_password.as_ref().map(|_| "***"))
            .field("smtp_password_file", &self.smtp_password_file)
            .field("smtp_ca_file", &self.smtp_ca_file)
            .field("smtp_connections", &self.smtp_connections)
            .field("mail_from", &self.mail_from)
            .field("finance_to", &self.finance_to)
            .field("schedule", &self.schedule)
            .field("http_addr", &self.http_addr)
            .field(
                "sanity_max_documents_per_subscription",
                &self.sanity_max_documents_per_subscription,
            )
            .field("sanity_max_increase", &self.sanity_max_increase)
            .field("sanity_max_invoice", &self.sanity_max_invoice)
            .field("seller", &self.seller.as_ref().map(|s| &s.legal_name))
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://var/billrun.db".into(),
            catalog: "config/catalog.toml".into(),
            timezone: "UTC".into(),
            mail_dir: "var/mail".into(),
            smtp_url: None,
            smtp_user: None,
            smtp_password: None,
            smtp_password_file: None,
            smtp_ca_file: None,
            smtp_connections: crate::mail::smtp::DEFAULT_CONNECTIONS,
            mail_from: "billing@billrun.invalid".into(),
            finance_to: "finance@billrun.invalid".into(),
            invoice_prefix: "INV".into(),
            credit_note_prefix: "CN".into(),
            payment_terms_days: 0,
            retention_days: 0,
            chunk_size: 2000,
            lease_seconds: 300,
            review_hours: 0,
            schedule: "0 0 0 * * *".into(),
            http_addr: "127.0.0.1:9464".into(),
            modules: BTreeMap::new(),
            sanity_max_documents_per_subscription: SanityBounds::DEFAULT_MAX_DOCUMENTS,
            sanity_max_increase: SanityBounds::DEFAULT_MAX_INCREASE,
            sanity_max_invoice: BTreeMap::new(),
            seller: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

const KEYS: &[&str] = &[
    "database_url",
    "catalog",
    "timezone",
    "mail_dir",
    "smtp_url",
    "smtp_user",
    "smtp_password",
    "smtp_password_file",
    "smtp_ca_file",
    "smtp_connections",
    "mail_from",
    "finance_to",
    "invoice_prefix",
    "credit_note_prefix",
    "payment_terms_days",
    "retention_days",
    "chunk_size",
    "lease_seconds",
    "review_hours",
    "schedule",
    "http_addr",
    "sanity_max_documents_per_subscription",
    "sanity_max_increase",
    "sanity_max_invoice",
];

/// `BILLRUN_*` variables that are not configuration keys: logging, read by the binary, and
/// the test suite's own switches (README, Development).
const OTHER_VARIABLES: &[&str] = &[
    "BILLRUN_LOG",
    "BILLRUN_LOG_FORMAT",
    "BILLRUN_TEST_POSTGRES_URL",
    "BILLRUN_REQUIRE_POSTGRES",
    "BILLRUN_REQUIRE_SMTP",
    "BILLRUN_CRASH_SEED",
    "BILLRUN_CRASH_SUBSCRIPTIONS",
    "BILLRUN_CRASH_KILLS",
    "BILLRUN_CRASH_CHUNK",
];

/// The known variable nearest to a misspelt one, if any is close (at most two edits).
fn closest_variable(name: &str) -> Option<String> {
    KEYS.iter()
        .map(|k| format!("BILLRUN_{}", k.to_uppercase()))
        .chain(OTHER_VARIABLES.iter().map(|v| v.to_string()))
        .map(|v| (edit_distance(name, &v), v))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Largest configuration file read: a configuration is a few kilobytes; `--config
/// /dev/zero` must fail at once, not fill memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Read a text file of at most `limit` bytes; a larger one (or an endless one, such as a
/// device) is refused after reading `limit + 1` bytes.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                std::io::Error::new(e.kind(), "it is not UTF-8 text")
            } else {
                e
            }
        })?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {} bytes", limit),
        ));
    }
    Ok(text)
}

impl Config {
    /// Load `path` (or the default file if it exists), then the environment over it.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let mut config = match read_limited(&file, MAX_CONFIG_BYTES) {
            Ok(src) => toml::from_str::<Config>(&src).map_err(|e| {
                ConfigError(format!("{}: {}", file.display(), toml_error(&e, &src)))
            })?,
            Err(e) if required || e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ConfigError(format!("cannot read {}: {e}", file.display())));
            }
            Err(_) => Config::default(),
        };
        for key in KEYS {
            let var = format!("BILLRUN_{}", key.to_uppercase());
            if let Some(value) = env(&var) {
                if *key == "smtp_password" {
                    crate::register_secret(&value);
                }
                config
                    .set(key, &value)
                    .map_err(|e| ConfigError(format!("{var}: {}", crate::redact(&e))))?;
            }
        }
        config.register_secrets();
        config.validate()?;
        Ok(config)
    }

    /// Every password the configuration holds, so that nothing printed can show it.
    fn register_secrets(&self) {
        crate::register_url_secrets(&self.database_url);
        if let Some(url) = &self.smtp_url {
            crate::register_url_secrets(url);
        }
        if let Some(p) = &self.smtp_password {
            crate::register_secret(p);
        }
    }

    /// Refuse `BILLRUN_*` variables that are not settings: a typo such as
    /// `BILLRUN_SMTP_URI` would otherwise leave mail going quietly to files.
    pub fn check_environment(names: impl IntoIterator<Item = String>) -> Result<(), ConfigError> {
        let mut unknown: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with("BILLRUN_"))
            .filter(|n| {
                let key = n["BILLRUN_".len()..].to_ascii_lowercase();
                !KEYS.contains(&key.as_str()) && !OTHER_VARIABLES.contains(&n.as_str())
            })
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(first) => {
                let hint = closest_variable(first)
                    .map(|v| format!(" (did you mean {v}?)"))
                    .unwrap_or_default();
                Err(ConfigError(format!(
                    "environment variable {first} is not a billrun setting{hint}; unset it{}",
                    if unknown.len() > 1 {
                        format!(" (also unknown: {})", unknown[1..].join(", "))
                    } else {
                        String::new()
                    }
                )))
            }
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let number = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{v:?} is not a whole number"))
        };
        match key {
            "database_url" => self.database_url = value.into(),
            "catalog" => self.catalog = value.into(),
            "timezone" => self.timezone = value.into(),
            "mail_dir" => self.mail_dir = value.into(),
            "smtp_url" => self.smtp_url = Some(value.into()),
            "smtp_user" => self.smtp_user = Some(value.into()),
            "smtp_password" => self.smtp_password = Some(value.into()),
            "smtp_password_file" => self.smtp_password_file = Some(value.into()),
            "smtp_ca_file" => self.smtp_ca_file = Some(value.into()),
            "smtp_connections" => self.smtp_connections = number(value)?,
            "mail_from" => self.mail_from = value.into(),
            "finance_to" => self.finance_to = value.into(),
            "invoice_prefix" => self.invoice_prefix = value.into(),
            "credit_note_prefix" => self.credit_note_prefix = value.into(),
            "payment_terms_days" => self.payment_terms_days = number(value)?,
            "retention_days" => self.retention_days = number(value)?,
            "chunk_size" => self.chunk_size = number(value)?,
            "lease_seconds" => self.lease_seconds = number(value)?,
            "review_hours" => self.review_hours = number(value)?,
            "schedule" => self.schedule = value.into(),
            "http_addr" => self.http_addr = value.into(),
            "sanity_max_documents_per_subscription" => {
                self.sanity_max_documents_per_subscription = number(value)?
            }
            "sanity_max_increase" => self.sanity_max_increase = parse_factor(value)?,
            "sanity_max_invoice" => self.sanity_max_invoice = parse_amounts(value)?,
            _ => return Err(format!("unknown key {key}")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: String| Err(ConfigError(format!("{key}: {msg}")));
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return bad(
                "database_url",
                format!(
                    "{:?} must start with sqlite:// or postgres://",
                    crate::display_url(&self.database_url)
                ),
            );
        }
        if let Some(rest) = self.database_url.strip_prefix("sqlite:") {
            check_sqlite_url(rest).map_err(|e| ConfigError(format!("database_url: {e}")))?;
        }
        if let Some(url) = &self.smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return bad(
                "smtp_url",
                format!(
                    "{:?} must start with smtp:// or smtps://",
                    crate::display_url(url)
                ),
            );
        }
        if let Some(path) = &self.smtp_ca_file
            && let Err(e) = crate::mail::smtp::ca_certificates(path)
        {
            return bad("smtp_ca_file", e);
        }
        if !(1..=64).contains(&self.smtp_connections) {
            return bad(
                "smtp_connections",
                format!(
                    "{} must be between 1 and 64 (connections to the SMTP server at once)",
                    self.smtp_connections
                ),
            );
        }
        if let Err(e) = crate::input::check_timezone(&self.timezone) {
            return bad("timezone", e);
        }
        for (key, value) in [
            ("mail_from", &self.mail_from),
            ("finance_to", &self.finance_to),
        ] {
            if value.parse::<lettre::message::Mailbox>().is_err() {
                return bad(key, format!("{value:?} is not an email address"));
            }
        }
        for (key, value) in [
            ("invoice_prefix", &self.invoice_prefix),
            ("credit_note_prefix", &self.credit_note_prefix),
        ] {
            if value.is_empty()
                || value.len() > 10
                || !value.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return bad(key, format!("{value:?} must be 1-10 letters or digits"));
            }
        }
        if self.invoice_prefix == self.credit_note_prefix {
            return bad(
                "credit_note_prefix",
                "must differ from invoice_prefix".into(),
            );
        }
        if !(1..=100_000).contains(&self.chunk_size) {
            return bad(
                "chunk_size",
                format!("{} must be between 1 and 100000", self.chunk_size),
            );
        }
        for (module, tables) in &self.modules {
            for t in tables {
                for (what, ident) in [("table", &t.table), ("account_column", &t.account_column)] {
                    if !is_identifier(ident) {
                        return bad(
                            &format!("modules.{module}"),
                            format!(
                                "{what} {ident:?} is not a plain SQL identifier (letters, digits, _)"
                            ),
                        );
                    }
                }
                if OWN_TABLES.contains(&t.table.to_ascii_lowercase().as_str()) {
                    return bad(
                        &format!("modules.{module}"),
                        format!("{:?} is one of billrun's own tables", t.table),
                    );
                }
            }
        }
        match crate::schedule::Schedule::parse(&self.schedule, &self.timezone) {
            Err(e) => return bad("schedule", e),
            // Loading the configuration is the shell, not the billing core: it may read the
            // wall clock. Leap days fire every four years; eight covers every real schedule.
            Ok(s) => {
                let now = chrono::Utc::now();
                if s.next_after(now)
                    .is_none_or(|t| t > now + chrono::Duration::days(8 * 366))
                {
                    return bad(
                        "schedule",
                        format!(
                            "{:?} never fires (no such date in the next eight years)",
                            self.schedule
                        ),
                    );
                }
            }
        }
        if self.http_addr.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "http_addr",
                format!(
                    "{:?} is not an address:port (e.g. 127.0.0.1:9464)",
                    self.http_addr
                ),
            );
        }
        if self.review_hours > 24 * 31 {
            return bad(
                "review_hours",
                format!("{} must be at most 744 (a month)", self.review_hours),
            );
        }
        if !(10..=86_400).contains(&self.lease_seconds) {
            return bad(
                "lease_seconds",
                format!("{} must be between 10 and 86400", self.lease_seconds),
            );
        }
        if self.sanity_max_increase < Decimal::ZERO
            || (self.sanity_max_increase > Decimal::ZERO && self.sanity_max_increase < Decimal::ONE)
        {
            return bad(
                "sanity_max_increase",
                format!(
                    "{} must be 0 (no limit) or at least 1 (a factor of the previous invoice)",
                    self.sanity_max_increase
                ),
            );
        }
        if self.sanity_max_increase > Decimal::from(1_000_000) {
            return bad(
                "sanity_max_increase",
                format!(
                    "{} is not a plausible factor; use 0 for no limit",
                    self.sanity_max_increase
                ),
            );
        }
        for (key, value) in &self.sanity_max_invoice {
            if key != "default" && Currency::new(key).is_err() {
                return bad(
                    "sanity_max_invoice",
                    format!("{key:?} is neither a currency code (e.g. USD) nor `default`"),
                );
            }
            if value.is_sign_negative() {
                return bad(
                    "sanity_max_invoice",
                    format!("{key} = {value} must be 0 (no limit) or a positive amount"),
                );
            }
        }
        if self.sanity_max_documents_per_subscription > 10_000 {
            return bad(
                "sanity_max_documents_per_subscription",
                format!(
                    "{} is not a plausible limit; use 0 for no limit",
                    self.sanity_max_documents_per_subscription
                ),
            );
        }
        if self.payment_terms_days > 365 {
            return bad(
                "payment_terms_days",
                format!("{} must be at most 365", self.payment_terms_days),
            );
        }
        match &self.seller {
            Some(seller) => seller.check().map_err(ConfigError),
            None => Ok(()),
        }
    }

    /// The seller, for commands that issue, send or show documents: an invoice that does not
    /// name its seller is not one a company can send, so they refuse to run without it.
    pub fn seller(&self) -> Result<&Seller, ConfigError> {
        self.seller.as_ref().ok_or_else(|| {
            ConfigError(
                "[seller] is missing: every invoice names its seller (legal_name, address, \
                 country; tax_id, email and payment_instructions as they apply), see \
                 config/billrun.toml"
                    .into(),
            )
        })
    }
}

/// A `[seller]` table for tests' configuration files.
#[doc(hidden)]
pub const EXAMPLE_SELLER: &str = "\n[seller]\nlegal_name = \"Example Software Ltd\"\n\
    address = [\"1 Example Street\", \"London EC1A 1AA\"]\ncountry = \"GB\"\n\
    tax_id = \"GB123456789\"\n";

/// What follows `sqlite:` in a database URL: a file path, `:memory:`, and no parameters —
/// billrun opens its database read-write and creates no folders, so `?mode=ro` and friends
/// would be silently wrong.
fn check_sqlite_url(rest: &str) -> Result<(), String> {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if let Some((_, query)) = path.split_once('?') {
        return Err(format!(
            "SQLite URL parameters are not supported (?{query}): billrun always opens its \
             database read-write; protect the file with its permissions instead"
        ));
    }
    if path.is_empty() {
        return Err("the SQLite URL names no file (sqlite://PATH)".into());
    }
    Ok(())
}

/// What the mail settings build: the SMTP settings and the transport. Here, not in `mail`:
/// the configuration is read above the mail code, which knows nothing of it.
impl Config {
    /// The SMTP settings, or None when `smtp_url` is not set. Reads `smtp_password_file` if
    /// given.
    pub fn smtp_settings(&self) -> Result<Option<SmtpSettings>, MailError> {
        let Some(url) = &self.smtp_url else {
            return Ok(None);
        };
        let password = match (&self.smtp_password, &self.smtp_password_file) {
            (Some(_), Some(_)) => {
                return Err(MailError::Config(
                    "set smtp_password or smtp_password_file, not both".into(),
                ));
            }
            (Some(p), None) => Some(Secret::new(p.clone())),
            (None, Some(path)) => Some(read_password_file(path)?),
            (None, None) => None,
        };
        Ok(Some(SmtpSettings {
            url: url.clone(),
            user: self.smtp_user.clone(),
            password,
            ca_file: self.smtp_ca_file.clone(),
            timeout: SEND_TIMEOUT,
            connections: self.smtp_connections as usize,
        }))
    }

    /// The transport the configuration names: SMTP when `smtp_url` is set, else the `.eml`
    /// folder of the embedded mode. Nothing connects yet; a bad URL or an unreadable password
    /// file is an error here, before any run starts.
    pub fn transport(&self) -> Result<Box<dyn Transport>, MailError> {
        match self.smtp_settings()? {
            Some(settings) => Ok(Box::new(SmtpTransport::new(&settings)?)),
            None => Ok(Box::new(EmlDir::new(&self.mail_dir))),
        }
    }
}

#[cfg(test)]
mod tests;
