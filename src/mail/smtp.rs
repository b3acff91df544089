//! The SMTP transport: lettre's pooled async client, configured from `smtp_url` with lettre's
//! URL rules (`smtp://host:port` plain, `smtp://host:port?tls=required` STARTTLS,
//! `smtps://host:port` implicit TLS) and credentials from `smtp_user` with `smtp_password`
//! (environment) or `smtp_password_file`. TLS checks the server's certificate against the
//! built-in Mozilla roots (webpki-roots) plus the CA certificates of `smtp_ca_file`, if set
//! (a relay with a private CA); there is no way to turn the check off.
//!
//! Owns three promises: the password never leaves in an error or a log line (lettre's error
//! text includes the server's replies, and a server may echo what it was sent); a send never
//! takes longer than the timeout; and an unreachable server costs one timeout per pass, not
//! one per queued message.

use super::{MailError, Transport};
use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, AsyncSmtpTransportBuilder};
use lettre::{AsyncTransport, Tokio1Executor};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a single message may take, connection included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// After the server could not be reached, how long later messages fail at once instead of
/// each waiting for their own timeout. They stay queued and are retried with backoff.
const COOLDOWN: Duration = Duration::from_secs(15);

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
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &crate::redact(&self.url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SmtpSettings {
    /// The settings of the configuration, or None when `smtp_url` is not set. Reads
    /// `smtp_password_file` if given.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, MailError> {
        let Some(url) = &config.smtp_url else {
            return Ok(None);
        };
        let password = match (&config.smtp_password, &config.smtp_password_file) {
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
            user: config.smtp_user.clone(),
            password,
            ca_file: config.smtp_ca_file.clone(),
            timeout: SEND_TIMEOUT,
        }))
    }
}

fn read_password_file(path: &str) -> Result<Secret, MailError> {
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
    builder: AsyncSmtpTransportBuilder,
    /// Built on first use: lettre's pool starts a task, which needs the runtime. Dropped
    /// after a timeout, so a connection abandoned mid-message is never reused.
    client: Mutex<Option<AsyncSmtpTransport<Tokio1Executor>>>,
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

        let scrub = |text: String| scrub(&secrets, &text);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url)
            .map_err(|e| MailError::Config(scrub(format!("smtp_url {endpoint:?}: {e}"))))?
            .timeout(Some(settings.timeout));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        if let Some(path) = &settings.ca_file {
            // The same TLS mode lettre read from the URL, with the extra roots.
            let certificate = ca_certificates(path)
                .map_err(|e| MailError::Config(format!("smtp_ca_file: {e}")))?;
            let parameters = TlsParameters::builder(url.host.clone())
                .add_root_certificate(certificate)
                .build()
                .map_err(|e| MailError::Config(format!("smtp_ca_file {path}: {e}")))?;
            builder = builder.tls(match url.tls {
                UrlTls::Wrapper => Tls::Wrapper(parameters),
                UrlTls::Required => Tls::Required(parameters),
                UrlTls::Opportunistic => Tls::Opportunistic(parameters),
                UrlTls::None => {
                    return Err(MailError::Config(format!(
                        "smtp_ca_file is set but smtp_url {endpoint:?} uses no TLS: \
                         use smtps:// or smtp://…?tls=required"
                    )));
                }
            });
        }
        Ok(SmtpTransport {
            builder,
            client: Mutex::new(None),
            endpoint,
            secrets,
            timeout: settings.timeout,
            down: Mutex::new(None),
        })
    }

    fn client(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        client
            .get_or_insert_with(|| self.builder.clone().build())
            .clone()
    }

    fn reset(&self) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
}

#[async_trait]
impl Transport for SmtpTransport {
    async fn send(&self, key: &str, message: &lettre::Message) -> Result<(), MailError> {
        let fail = |reason: String| MailError::Deliver {
            key: key.to_string(),
            reason,
        };
        if let Some(why) = self.still_down() {
            return Err(fail(format!(
                "not tried, the server was unreachable: {why}"
            )));
        }
        let client = self.client();
        let sent = tokio::time::timeout(
            self.timeout,
            client.send_raw(message.envelope(), &message.formatted()),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                self.set_down(None);
                Ok(())
            }
            Ok(Err(e)) => {
                let why = scrub(&self.secrets, &format!("{}: {e}", self.endpoint));
                // A reply code means the server is there and refused this message (or these
                // credentials); anything else means it could not be reached or spoken to.
                if !(e.is_transient() || e.is_permanent()) {
                    self.set_down(Some(why.clone()));
                }
                Err(fail(why))
            }
            Err(_) => {
                self.reset();
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
    user: Option<String>,
    password: Option<String>,
    raw_password: Option<String>,
}

impl UrlParts {
    fn parse(url: &str) -> Option<UrlParts> {
        let (scheme, rest) = url.split_once("://")?;
        let (authority, query) = {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let query = rest
                .split_once('?')
                .map(|(_, q)| q.split('#').next().unwrap_or(""))
                .unwrap_or("");
            (&rest[..end], query)
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
        let host = match hostport.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => hostport.split(':').next().unwrap_or(""),
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
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    fn message() -> lettre::Message {
        lettre::Message::builder()
            .from("billing@billrun.test".parse().unwrap())
            .to("customer@example.com".parse().unwrap())
            .subject("Invoice")
            .body(String::from("hello"))
            .unwrap()
    }

    fn settings(url: &str, user: Option<&str>, password: Option<&str>) -> SmtpSettings {
        SmtpSettings {
            url: url.into(),
            user: user.map(Into::into),
            password: password.map(Secret::new),
            ca_file: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn reads_the_url_like_lettre() {
        let p = UrlParts::parse("smtps://Mail.Example.com:465").unwrap();
        assert!(p.encrypted && !p.loopback);
        assert_eq!(
            (p.tls, p.host.as_str()),
            (UrlTls::Wrapper, "mail.example.com")
        );
        let p = UrlParts::parse("smtp://mail.example.com:587?tls=required").unwrap();
        assert!(p.encrypted);
        let p = UrlParts::parse("smtp://mail.example.com:587?tls=opportunistic").unwrap();
        assert!(!p.encrypted);
        assert_eq!(p.tls, UrlTls::Opportunistic);
        let p = UrlParts::parse("smtp://u%40x:p%2Fw@127.0.0.1:25").unwrap();
        assert!(!p.encrypted && p.loopback);
        assert_eq!(p.user.as_deref(), Some("u@x"));
        assert_eq!(p.password.as_deref(), Some("p/w"));
        assert_eq!(p.raw_password.as_deref(), Some("p%2Fw"));
        assert!(UrlParts::parse("[::1]:25").is_none());
        assert!(UrlParts::parse("http://mail.example.com").is_none());
        assert!(UrlParts::parse("smtp://").is_none());
        let p = UrlParts::parse("smtp://[::1]:25").unwrap();
        assert!(p.loopback);
        assert_eq!((p.tls, p.host.as_str()), (UrlTls::None, "::1"));
    }

    #[test]
    fn credentials_are_not_sent_in_clear_to_another_machine() {
        let e = SmtpTransport::new(&settings(
            "smtp://mail.example.com:25",
            Some("billing"),
            Some("hunter2-secret"),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not encrypted") && !e.contains("hunter2"), "{e}");
        for url in [
            "smtps://mail.example.com:465",
            "smtp://mail.example.com:587?tls=required",
            "smtp://127.0.0.1:25",
        ] {
            SmtpTransport::new(&settings(url, Some("billing"), Some("hunter2-secret"))).unwrap();
        }
        let e = SmtpTransport::new(&settings("smtps://mail.example.com", Some("u"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp_password"), "{e}");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = settings(
            "smtps://u:urlpass@mail.example.com",
            Some("u"),
            Some("pw-123"),
        );
        let t = SmtpTransport::new(&s).unwrap();
        for text in [format!("{s:?}"), format!("{t:?}")] {
            assert!(
                !text.contains("pw-123") && !text.contains("urlpass"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_password_file_is_read_and_its_newline_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smtp-password");
        std::fs::write(&file, "s3cret pass \n").unwrap();
        let mut config = crate::config::Config {
            smtp_url: Some("smtps://mail.example.com".into()),
            smtp_user: Some("billing".into()),
            smtp_password_file: Some(file.display().to_string()),
            ..Default::default()
        };
        let s = SmtpSettings::from_config(&config).unwrap().unwrap();
        assert_eq!(s.password, Some(Secret::new("s3cret pass ")));
        config.smtp_password = Some("other".into());
        assert!(SmtpSettings::from_config(&config).is_err());
        config.smtp_password = None;
        std::fs::write(&file, "\n").unwrap();
        assert!(SmtpSettings::from_config(&config).is_err());
        config.smtp_url = None;
        assert!(SmtpSettings::from_config(&config).unwrap().is_none());
    }

    #[test]
    fn the_url_must_be_smtp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("billrun.toml");
        std::fs::write(
            &path,
            format!(
                "smtp_url = \"http://u:pw-9@mail.example.com\"\n{}",
                crate::config::EXAMPLE_SELLER
            ),
        )
        .unwrap();
        let e = crate::config::Config::load(Some(&path), |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp_url") && !e.contains("pw-9"), "{e}");
        std::fs::write(&path, crate::config::EXAMPLE_SELLER).unwrap();
        let c = crate::config::Config::load(Some(&path), |k| {
            (k == "BILLRUN_SMTP_PASSWORD_FILE").then(|| "/run/secrets/smtp".to_string())
        })
        .unwrap();
        assert_eq!(c.smtp_password_file.as_deref(), Some("/run/secrets/smtp"));
    }

    /// A self-signed CA (P-256, valid until 2126), only ever parsed here.
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBpDCCAUugAwIBAgIUamnCxyPgiXjxQtAF67CR0uTIJi8wCgYIKoZIzj0EAwIw\n\
HzEdMBsGA1UEAwwUYmlsbHJ1biB1bml0LXRlc3QgQ0EwIBcNMjYxMjAyMDUzOTUy\n\
WhgPMjEyNjExMDgwNTM5NTJaMB8xHTAbBgNVBAMMFGJpbGxydW4gdW5pdC10ZXN0\n\
IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMcUx9BskyMPkk0jq1XpYRLr6\n\
quHuNmePvZFJvo84ODisv2KU6nTrRzchEzgyTxWdkuvmjjSsXZ0Z43tsLwX78KNj\n\
MGEwHQYDVR0OBBYEFEcSj6dVhZp1gLIlpiclFGqC6v9JMB8GA1UdIwQYMBaAFEcS\n\
j6dVhZp1gLIlpiclFGqC6v9JMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQD\n\
AgEGMAoGCCqGSM49BAMCA0cAMEQCIGSHcQmOKDFcsD3DeDmyYzkm9UshwNYZTcK1\n\
8P7p1DgoAiBq7+7gC5FPLO4M4DCbusNKiyKeU4quRM+PItroOlWJmA==\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn smtp_ca_file_must_hold_a_usable_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let load = |ca: &std::path::Path| {
            crate::config::Config::load(Some(&dir.path().join("billrun.toml")), |k| {
                (k == "BILLRUN_SMTP_CA_FILE").then(|| ca.display().to_string())
            })
            .map_err(|e| e.to_string())
        };
        std::fs::write(
            dir.path().join("billrun.toml"),
            crate::config::EXAMPLE_SELLER,
        )
        .unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, format!("# the relay's CA\n{TEST_CA}")).unwrap();
        let c = load(&good).unwrap();
        assert_eq!(c.smtp_ca_file, Some(good.display().to_string()));

        for (name, content, why) in [
            ("missing.pem", None, "cannot read"),
            ("empty.pem", Some(""), "holds no PEM certificate"),
            (
                "key.pem",
                Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                "holds no PEM certificate",
            ),
            (
                "garbled.pem",
                Some("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
                "not a valid PEM",
            ),
            (
                "not-der.pem",
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                "cannot be used as a CA",
            ),
        ] {
            let path = dir.path().join(name);
            if let Some(content) = content {
                std::fs::write(&path, content).unwrap();
            }
            let e = load(&path).unwrap_err();
            assert!(
                e.contains("smtp_ca_file") && e.contains(name) && e.contains(why),
                "{name}: {e}"
            );
        }

        // Used for both TLS modes; refused where there is no TLS to use it for.
        let with_ca = |url: &str| {
            let mut s = settings(url, Some("billing"), Some("pw-ca-1"));
            s.ca_file = Some(good.display().to_string());
            SmtpTransport::new(&s)
        };
        with_ca("smtps://mail.example.com:465").unwrap();
        with_ca("smtp://mail.example.com:587?tls=required").unwrap();
        let e = with_ca("smtp://127.0.0.1:25").unwrap_err().to_string();
        assert!(
            e.contains("smtp_ca_file") && e.contains("no TLS") && !e.contains("pw-ca-1"),
            "{e}"
        );
    }

    /// A server that offers AUTH, then answers every AUTH line by echoing it in a refusal, as
    /// some servers do with commands they dislike.
    fn echoing_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                std::thread::spawn(move || {
                    let mut write = stream.try_clone().unwrap();
                    let _ = write.write_all(b"220 echo ESMTP\r\n");
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        let reply = if line.starts_with("EHLO") {
                            "250-echo\r\n250 AUTH PLAIN LOGIN\r\n".to_string()
                        } else if line.starts_with("QUIT") {
                            "221 bye\r\n".to_string()
                        } else {
                            format!("535 5.7.8 refused: {line}\r\n")
                        };
                        if write.write_all(reply.as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_password_never_appears_in_an_error() {
        let port = echoing_server();
        let password = "Tr0ub4dor&3-horse";
        let t = SmtpTransport::new(&settings(
            &format!("smtp://127.0.0.1:{port}"),
            Some("billing"),
            Some(password),
        ))
        .unwrap();
        let e = t.send("INV-1", &message()).await.unwrap_err().to_string();
        // The server did echo the AUTH line; only the mask is left of it.
        assert!(e.contains("535") && e.contains("***"), "{e}");
        for leak in [
            password.to_string(),
            base64(password.as_bytes()),
            base64(format!("\0billing\0{password}").as_bytes()),
        ] {
            assert!(!e.contains(&leak), "{e}");
        }

        // A password in the URL, and a server that is not there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let t = SmtpTransport::new(&settings(
            &format!("smtp://billing:url-secret-77@127.0.0.1:{port}"),
            None,
            None,
        ))
        .unwrap();
        let e = t.send("INV-2", &message()).await.unwrap_err().to_string();
        assert!(!e.contains("url-secret-77"), "{e}");
        assert!(e.contains("smtp://billing@127.0.0.1"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_fast_and_a_silent_one_times_out() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let t =
            SmtpTransport::new(&settings(&format!("smtp://127.0.0.1:{port}"), None, None)).unwrap();
        let first = t.send("A", &message()).await.unwrap_err().to_string();
        let second = t.send("B", &message()).await.unwrap_err().to_string();
        assert!(first.contains("cannot deliver message A"), "{first}");
        assert!(second.contains("not tried"), "{second}");

        // Accepts the connection and never says a word.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let held: Vec<_> = silent.incoming().collect();
            drop(held);
        });
        let mut s = settings(&format!("smtp://127.0.0.1:{port}"), None, None);
        s.timeout = Duration::from_millis(300);
        let t = SmtpTransport::new(&s).unwrap();
        let started = Instant::now();
        let e = t.send("C", &message()).await.unwrap_err().to_string();
        assert!(e.contains("no answer within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
