//! Keeping secrets out of everything billrun prints: stdout, stderr, both log formats,
//! `--json` and the errors it stores.
//!
//! Two layers, because neither is enough alone:
//! - **Known secrets.** Every password the configuration holds (in a URL, in a `password=`
//!   query parameter, in `smtp_password` or its file) is registered when it is read, in each
//!   form it could come back in (as written, percent-decoded, percent-encoded, JSON-escaped),
//!   and [`redact`] replaces each occurrence anywhere in a text. This catches a password with
//!   a space, a quote or a `/` that no URL parser would find, inside a library's error text.
//! - **Shapes.** Whatever was not registered (a URL typed on the command line of `bench`, a
//!   URL inside a library's error), [`redact`] masks the password of anything that looks like
//!   `scheme://user:password@host` and the value of `password=` parameters. When unsure it
//!   masks too much rather than too little.
//!
//! Better than redacting is not printing: [`display_url`] gives scheme, user, host, port and
//! path of a URL — never its password, never its query — for messages that name a server.

use std::sync::RwLock;

const MASK: &str = "***";

/// Passwords this process knows, in every form they could be printed in; longest first, so
/// that a form containing another is masked whole.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remember a secret so that [`redact`] masks it wherever it appears. Empty strings are
/// ignored; so are one- and two-character ones, which would mask ordinary text (they are
/// still masked where a URL's shape shows them).
pub fn register_secret(secret: &str) {
    let mut forms = vec![secret.to_string()];
    if let Some(decoded) = percent_decode(secret) {
        forms.push(decoded);
    }
    let forms: Vec<String> = forms
        .iter()
        .flat_map(|s| [s.clone(), percent_encode(s), json_escape(s)])
        .filter(|s| s.chars().count() >= 3)
        .collect();
    let mut known = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for f in forms {
        if !known.contains(&f) {
            known.push(f);
        }
    }
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Register the password of a URL (its userinfo and any `password=` parameter).
pub fn register_url_secrets(url: &str) {
    let parts = UrlParts::parse(url);
    if let Some(p) = parts.password {
        register_secret(p);
    }
    for value in password_params(url) {
        register_secret(value);
    }
}

/// `text` with every known secret, every URL password and every `password=` value masked.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    {
        let known = SECRETS.read().unwrap_or_else(|p| p.into_inner());
        for s in known.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
    }
    mask_param_values(&mask_userinfo(&out))
}

/// A URL for messages: `scheme://user@host:port/path`, without password or query.
pub fn display_url(url: &str) -> String {
    let p = UrlParts::parse(url);
    let mut out = String::new();
    if let Some(s) = p.scheme {
        out.push_str(s);
        out.push_str("://");
    }
    if let Some(u) = p.user.filter(|u| !u.is_empty()) {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(p.rest);
    // A password that is not a URL's own (a space in it, say) still cannot survive.
    redact(&out)
}

/// The pieces of `scheme://user:password@rest?query`, found without a full URL parser: the
/// userinfo ends at the *last* `@`, so a password may hold `/`, `@`, spaces or quotes.
struct UrlParts<'a> {
    scheme: Option<&'a str>,
    user: Option<&'a str>,
    password: Option<&'a str>,
    /// Host, port and path, without the query.
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn parse(url: &'a str) -> UrlParts<'a> {
        let (scheme, after) = match url.split_once("://") {
            Some((s, a)) => (Some(s), a),
            None => (None, url),
        };
        let (userinfo, hostpart) = match after.rfind('@') {
            Some(at) => (Some(&after[..at]), &after[at + 1..]),
            None => (None, after),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (Some(user), Some(pw)),
                None => (Some(u), None),
            },
            None => (None, None),
        };
        let rest = hostpart.split('?').next().unwrap_or(hostpart);
        UrlParts {
            scheme,
            user,
            password,
            rest,
        }
    }
}

/// The values of `password=`-like parameters in a URL's query.
fn password_params(url: &str) -> Vec<&str> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| is_password_key(k))
        .map(|(_, v)| v)
        .collect()
}

fn is_password_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with("password") || k == "pass" || k == "pwd" || k.ends_with("secret")
}

/// Mask `user:password@` after every `://`: the userinfo runs to the first `@` on the same
/// line, and is masked when it holds a `:` and no other URL.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let line_end = tail.find(['\n', '\r']).unwrap_or(tail.len());
        let line = &tail[..line_end];
        match line.find('@') {
            Some(at) if !line[..at].contains("://") => {
                let userinfo = &line[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push('@');
                rest = &tail[at + 1..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Mask the value of every `password=` (or `pass=`, `pwd=`, `…secret=`) parameter, to the
/// next `&`, whitespace or quote.
fn mask_param_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq);
        let key_start = head
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        out.push_str(head);
        out.push('=');
        let tail = &tail[1..];
        if is_password_key(&head[key_start..]) {
            let end = tail
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(tail.len());
            if end > 0 {
                out.push_str(MASK);
            }
            rest = &tail[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) if bytes[i] == b'%' => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// A writer for log lines that redacts each write: tracing's formatter writes one event per
/// call, so a secret is never split across two writes.
#[derive(Clone, Copy, Default)]
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingStderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_in_urls() {
        assert_eq!(
            redact("connect postgres://billrun:s3cret@db:5432/billing failed"),
            "connect postgres://billrun:***@db:5432/billing failed"
        );
        assert_eq!(
            redact("smtps://mail.example:465"),
            "smtps://mail.example:465"
        );
        assert_eq!(redact("no url here"), "no url here");
        // A multi-byte character just before `=` (a fuzz case that panicked).
        assert_eq!(redact("ab\u{1B167}=y"), "ab\u{1B167}=y");
        // A `/` in the password, a query parameter.
        assert!(!redact("smtps://billing:Kx7/Qm4@127.0.0.1:2603 down").contains("Qm4"));
        assert_eq!(
            redact("postgres://h/db?sslmode=require&password=Zq9w&x=1"),
            "postgres://h/db?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redact("url \"postgres://u:Zq9w@h/db\" refused"),
            "url \"postgres://u:***@h/db\" refused"
        );
    }

    #[test]
    fn registered_secrets_are_masked_in_every_form() {
        register_url_secrets("smtps://billing:Rt5 Yy8@127.0.0.1:2603");
        register_url_secrets("postgres://u:Pq%2F7Lm@h/db?sslpassword=Vw3Ab");
        register_secret("Ab\"c'd");
        for leak in [
            "sent via smtps://billing:Rt5 Yy8@127.0.0.1:2603",
            "lettre says: Rt5 Yy8",
            "Pq%2F7Lm and Pq/7Lm",
            "{\"error\":\"Ab\\\"c'd\"}",
            "Vw3Ab",
        ] {
            let shown = redact(leak);
            for s in ["Rt5", "Yy8", "Pq%2F7Lm", "Pq/7Lm", "Ab\\\"c'd", "Vw3Ab"] {
                assert!(!shown.contains(s), "{leak:?} shown as {shown:?}");
            }
        }
    }

    #[test]
    fn display_url_has_no_password_and_no_query() {
        assert_eq!(
            display_url("smtps://billing:Kx7 Qm4@127.0.0.1:2603"),
            "smtps://billing@127.0.0.1:2603"
        );
        assert_eq!(
            display_url("postgres://u:a/b@c@db:5432/billing?password=x&sslmode=require"),
            "postgres://u@db:5432/billing"
        );
        assert_eq!(
            display_url("sqlite://var/billrun.db"),
            "sqlite://var/billrun.db"
        );
    }
}
