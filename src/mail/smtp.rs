//! The SMTP transport, configured from `smtp_url` with lettre's URL rules
//! (`smtp://host:port` plain, `smtp://host:port?tls=required` STARTTLS,
//! `smtp://…?tls=opportunistic` STARTTLS when offered, `smtps://host:port` implicit TLS) and
//! credentials from `smtp_user` with `smtp_password` (environment) or `smtp_password_file`.
//! TLS checks the server's certificate against the built-in Mozilla roots (webpki-roots) plus
//! the CA certificates of `smtp_ca_file`, if set (a relay with a private CA); there is no way
//! to turn the check off. Connections are billrun's own (`conn`: `TCP_NODELAY`, TLS, AUTH
//! through lettre's `AsyncSmtpConnection`): up to `smtp_connections` at once, each carrying
//! one message at a time, idle ones kept and reused, any that failed or timed out dropped.
//!
//! Owns four promises: the password never leaves in an error or a log line (lettre's error
//! text includes the server's replies, and a server may echo what it was sent); credentials
//! never go in clear to another machine; a send never takes longer than the timeout,
//! connecting included; and an unreachable server costs one timeout per connection and pass,
//! not one per queued message (a cooldown in which later messages fail at once).

mod conn;

use super::{Formatted, MailError, Transport};
use async_trait::async_trait;
use conn::{ConnError, Connector, Pool};
use lettre::Tokio1Executor;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a single message may take, connection included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// After the server could not be reached, how long later messages fail at once instead of
/// each waiting for their own timeout. They stay queued and are retried with backoff.
const COOLDOWN: Duration = Duration::from_secs(15);

/// Connections to the server at once, unless `smtp_connections` says otherwise.
pub const DEFAULT_CONNECTIONS: u32 = 4;

/// A password. Its `Debug` shows nothing, so it cannot slip into a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the SMTP transport is built from.
#[derive(Clone)]
pub struct SmtpSettings {
    /// May hold a password (`smtp://user:password@host`), like lettre allows.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// PEM file of CA certificates trusted besides the built-in roots (`smtp_ca_file`).
    pub ca_file: Option<String>,
    pub timeout: Duration,
    /// Connections to the server at once (`smtp_connections`, 1–64).
    pub connections: usize,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &crate::redact(&self.url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("connections", &self.connections)
            .finish()
    }
}

/// The password in the file at `path` (`smtp_password_file`), its final newline trimmed.
pub fn read_password_file(path: &str) -> Result<Secret, MailError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MailError::Config(format!("smtp_password_file {path}: {e}")))?;
    // Only the line ending an editor or `echo` adds: a password may end in a space.
    let password = text.trim_end_matches(['\n', '\r']);
    crate::register_secret(password);
    if password.is_empty() {
        return Err(MailError::Config(format!(
            "smtp_password_file {path} is empty"
        )));
    }
    Ok(Secret::new(password))
}

/// The CA certificates of `path` (`smtp_ca_file`): readable, at least one PEM certificate,
/// each usable as a trust anchor. The error names the file and what is wrong with it.
pub fn ca_certificates(path: &str) -> Result<Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let certificate = Certificate::from_pem(&pem)
        .map_err(|e| format!("{path} is not a valid PEM certificate file: {e}"))?;
    // Adding them to a root store is where each one is parsed.
    TlsParameters::builder("localhost".into())
        .add_root_certificate(certificate.clone())
        .build()
        .map_err(|e| format!("{path}: a certificate cannot be used as a CA: {e}"))?;
    Ok(certificate)
}

pub struct SmtpTransport {
    connector: Connector,
    /// Idle connections, at most `connections`.
    pool: Pool,
    /// One permit per connection: at most `connections` messages in flight.
    slots: tokio::sync::Semaphore,
    connections: usize,
    /// The URL without its password, for messages.
    endpoint: String,
    /// Every form in which a secret could come back inside an error, longest first.
    secrets: Vec<String>,
    timeout: Duration,
    /// When and why the server last could not be reached.
    down: Mutex<Option<(Instant, String)>>,
}

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("endpoint", &self.endpoint)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl SmtpTransport {
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailError> {
        let endpoint = crate::display_url(&settings.url);
        let url = UrlParts::parse(&settings.url).ok_or_else(|| {
            MailError::Config(format!(
                "smtp_url {endpoint:?} must look like smtp://host:port, smtp://host:port?tls=required or smtps://host:port"
            ))
        })?;
        if !(1..=64).contains(&settings.connections) {
            return Err(MailError::Config(format!(
                "smtp_connections {} must be between 1 and 64",
                settings.connections
            )));
        }
        let credentials = match (&settings.user, &settings.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.0.clone())),
            (Some(_), None) => {
                return Err(MailError::Config(
                    "smtp_user is set but neither smtp_password nor smtp_password_file".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(MailError::Config(
                    "a password is set for SMTP but smtp_user is not".into(),
                ));
            }
            (None, None) => url.user.clone().zip(url.password.clone()),
        };

        // The URL's password is masked even when smtp_user's credentials replace it.
        let mut secrets: Vec<String> = url
            .raw_password
            .iter()
            .chain(url.password.iter())
            .cloned()
            .collect();
        if let Some((user, password)) = &credentials {
            if !url.encrypted && !url.loopback {
                return Err(MailError::Config(format!(
                    "smtp_url {endpoint:?} is not encrypted: credentials go only over smtps:// or \
                     smtp://…?tls=required (or to this machine)"
                )));
            }
            // As written on the wire by PLAIN, LOGIN and XOAUTH2, in case a server echoes it.
            secrets.push(password.clone());
            secrets.push(base64(password.as_bytes()));
            secrets.push(base64(format!("\0{user}\0{password}").as_bytes()));
            secrets.push(base64(
                format!("user={user}\x01auth=Bearer {password}\x01\x01").as_bytes(),
            ));
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));

        // lettre's own reading of the URL decides what is accepted, as before.
        AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url).map_err(|e| {
            MailError::Config(scrub(&secrets, &format!("smtp_url {endpoint:?}: {e}")))
        })?;
        let tls_parameters = match (&settings.ca_file, url.tls) {
            (Some(_), UrlTls::None) => {
                return Err(MailError::Config(format!(
                    "smtp_ca_file is set but smtp_url {endpoint:?} uses no TLS: \
                     use smtps:// or smtp://…?tls=required"
                )));
            }
            (_, UrlTls::None) => None,
            (None, _) => Some(
                TlsParameters::new(url.host.clone())
                    .map_err(|e| MailError::Config(format!("smtp_url {endpoint:?}: {e}")))?,
            ),
            (Some(path), _) => {
                // The built-in roots and the extra ones.
                let certificate = ca_certificates(path)
                    .map_err(|e| MailError::Config(format!("smtp_ca_file: {e}")))?;
                Some(
                    TlsParameters::builder(url.host.clone())
                        .add_root_certificate(certificate)
                        .build()
                        .map_err(|e| MailError::Config(format!("smtp_ca_file {path}: {e}")))?,
                )
            }
        };
        let port = url.port.unwrap_or(match url.tls {
            UrlTls::None => SMTP_PORT,
            UrlTls::Opportunistic | UrlTls::Required => SUBMISSION_PORT,
            UrlTls::Wrapper => SUBMISSIONS_PORT,
        });
        Ok(SmtpTransport {
            connector: Connector {
                host: url.host.clone(),
                port,
                tls: url.tls,
                tls_parameters,
                hello: url
                    .hello
                    .clone()
                    .map_or_else(ClientId::default, ClientId::Domain),
                credentials: credentials.map(|(u, p)| Credentials::new(u, p)),
            },
            pool: Pool::default(),
            slots: tokio::sync::Semaphore::new(settings.connections),
            connections: settings.connections,
            endpoint,
            secrets,
            timeout: settings.timeout,
            down: Mutex::new(None),
        })
    }

    fn still_down(&self) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        down.as_ref()
            .filter(|(since, _)| since.elapsed() < COOLDOWN)
            .map(|(_, why)| why.clone())
    }

    fn set_down(&self, why: Option<String>) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = why.map(|w| (Instant::now(), w));
    }

    /// One message over an idle connection or a new one; the connection back if it went well.
    async fn over_a_connection(
        &self,
        envelope: &lettre::address::Envelope,
        payload: Formatted<'_>,
    ) -> Result<lettre::transport::smtp::client::AsyncSmtpConnection, ConnError> {
        let mut conn = match self.pool.take().await {
            Some(conn) => conn,
            None => self.connector.connect().await?,
        };
        // On an error the connection is dropped here, never reused.
        match payload {
            Formatted::Bytes(bytes) => {
                conn.send(envelope, bytes).await?;
            }
            Formatted::File(path) => conn::send_file(&mut conn, envelope, path).await?,
        }
        Ok(conn)
    }

    /// QUIT the idle connections (the server's log then shows a clean end).
    pub async fn close(&self) {
        for mut conn in self.pool.drain() {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.quit()).await;
        }
    }
}

#[async_trait]
impl Transport for SmtpTransport {
    async fn send_raw(
        &self,
        key: &str,
        envelope: &lettre::address::Envelope,
        message: Formatted<'_>,
    ) -> Result<(), MailError> {
        self.deliver(key, envelope, message).await
    }

    fn parallelism(&self) -> usize {
        self.connections
    }
}

impl SmtpTransport {
    async fn deliver(
        &self,
        key: &str,
        envelope: &lettre::address::Envelope,
        payload: Formatted<'_>,
    ) -> Result<(), MailError> {
        let fail = |reason: String| MailError::Deliver {
            key: key.to_string(),
            reason,
        };
        let not_tried = |why: String| fail(format!("not tried, the server was unreachable: {why}"));
        if let Some(why) = self.still_down() {
            return Err(not_tried(why));
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Found down by another message while this one waited for a connection.
        if let Some(why) = self.still_down() {
            return Err(not_tried(why));
        }
        // A timeout drops the connection with the future: one abandoned mid-message is never
        // reused.
        let sent =
            tokio::time::timeout(self.timeout, self.over_a_connection(envelope, payload)).await;
        match sent {
            Ok(Ok(conn)) => {
                self.set_down(None);
                self.pool.put(conn, self.connections);
                Ok(())
            }
            Ok(Err(e)) => {
                let why = scrub(&self.secrets, &format!("{}: {e}", self.endpoint));
                // A reply code means the server is there and refused this message (or these
                // credentials); anything else means it could not be reached or spoken to.
                if !e.is_reply() {
                    self.set_down(Some(why.clone()));
                }
                Err(fail(why))
            }
            Err(_) => {
                let why = format!(
                    "{}: no answer within {} s",
                    self.endpoint,
                    self.timeout.as_secs_f32()
                );
                self.set_down(Some(why.clone()));
                Err(fail(why))
            }
        }
    }
}

/// `text` with every secret masked, and passwords in URLs too.
fn scrub(secrets: &[String], text: &str) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    crate::redact(&out)
}

/// The TLS mode of an SMTP URL, as lettre reads it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum UrlTls {
    /// `smtp://` without `tls=`.
    #[default]
    None,
    /// `smtp://…?tls=opportunistic`: STARTTLS if offered.
    Opportunistic,
    /// `smtp://…?tls=required`: STARTTLS or nothing.
    Required,
    /// `smtps://`: TLS from the first byte.
    Wrapper,
}

/// What billrun needs to know of an SMTP URL before lettre reads it.
#[derive(Debug, Default)]
struct UrlParts {
    encrypted: bool,
    tls: UrlTls,
    /// The host name or address (an IPv6 one without brackets): what the certificate names.
    host: String,
    loopback: bool,
    /// The port, when the URL names one.
    port: Option<u16>,
    /// The name sent in EHLO, when the URL's path gives one (`smtp://host/NAME`).
    hello: Option<String>,
    user: Option<String>,
    password: Option<String>,
    raw_password: Option<String>,
}

impl UrlParts {
    fn parse(url: &str) -> Option<UrlParts> {
        let (scheme, rest) = url.split_once("://")?;
        let (authority, path, query) = {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let query = rest
                .split_once('?')
                .map(|(_, q)| q.split('#').next().unwrap_or(""))
                .unwrap_or("");
            let path = rest[end..].split(['?', '#']).next().unwrap_or("");
            (&rest[..end], path, query)
        };
        // lettre reads the first `tls` parameter.
        let tls = query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == "tls")
            .map(|(_, v)| v);
        let tls = match (scheme, tls) {
            ("smtps", _) => UrlTls::Wrapper,
            ("smtp", Some("required")) => UrlTls::Required,
            ("smtp", Some("opportunistic")) => UrlTls::Opportunistic,
            ("smtp", _) => UrlTls::None,
            _ => return None,
        };
        let encrypted = matches!(tls, UrlTls::Wrapper | UrlTls::Required);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => v6.split_once(']').unwrap_or((v6, "")),
            None => hostport
                .split_once(':')
                .map_or((hostport, ""), |(h, p)| (h, p)),
        };
        let port = port.strip_prefix(':').unwrap_or(port);
        let port = match port {
            "" => None,
            p => Some(p.parse::<u16>().ok()?),
        };
        if host.is_empty() {
            return None;
        }
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let (user, raw_password) = match userinfo {
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(u), Some(p)),
                None => (Some(ui), None),
            },
            None => (None, None),
        };
        Some(UrlParts {
            encrypted,
            tls,
            host: host.to_ascii_lowercase(),
            port,
            hello: Some(path.trim_matches('/').to_string()).filter(|h| !h.is_empty()),
            loopback,
            user: user.map(percent_decode),
            password: raw_password.map(percent_decode),
            raw_password: raw_password.map(str::to_string),
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests;
