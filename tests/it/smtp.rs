//! The SMTP transport against a real SMTP server: Python's aiosmtpd, run as a separate
//! process that writes every message it accepts to a Maildir. Self-contained: its own
//! sandbox, configuration and the real `billrun` binary.
//!
//! Without aiosmtpd the tests skip with one line on stderr, unless `BILLRUN_REQUIRE_SMTP=1`
//! (CI), where that is a failure. The TLS tests also need the `openssl` command, which makes
//! a throwaway CA and server certificate for each test, under the same rule.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const FROM: &str = "Billing <billing@billrun.test>";
pub(crate) const FINANCE: &str = "finance@billrun.test";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Whether aiosmtpd can run here; says why not, once, when it cannot.
pub(crate) fn aiosmtpd_available(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("BILLRUN_REQUIRE_SMTP").as_deref() == Ok("1") {
        panic!(
            "BILLRUN_REQUIRE_SMTP=1 but `python3 -c 'import aiosmtpd'` fails: \
             install it (pip install aiosmtpd, or apt install python3-aiosmtpd)"
        );
    }
    // libtest captures print!, not a direct write to the process's stderr.
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: Python module aiosmtpd not installed (pip install aiosmtpd)"
    );
    false
}

/// A port nothing listens on (at the moment of asking).
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// aiosmtpd writing to a Maildir; killed when dropped.
pub(crate) struct Smtpd {
    child: Child,
    maildir: PathBuf,
}

impl Smtpd {
    pub(crate) fn start(port: u16, maildir: &Path) -> Smtpd {
        // Mailbox refuses every message if the Maildir's folders are missing.
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let log = maildir.with_extension("log");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start python3 -m aiosmtpd");
        let mut server = Smtpd {
            child,
            maildir: maildir.to_path_buf(),
        };
        server.wait_until_listening(port, &log);
        server
    }

    /// aiosmtpd speaking TLS with `pki`'s server certificate, from the first byte
    /// (`Implicit`) or after a STARTTLS it insists on (`StartTls`), and accepting AUTH only as
    /// `TLS_USER` / `TLS_PASSWORD` (after STARTTLS, in that mode). Each AUTH attempt is a
    /// line in `auth_log()`.
    fn start_tls(mode: TlsMode, port: u16, maildir: &Path, pki: &TestPki) -> Smtpd {
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let script = maildir.with_extension("py");
        std::fs::write(&script, TLS_SMTPD).unwrap();
        let log = maildir.with_extension("log");
        let child = Command::new("python3")
            .arg(&script)
            .arg(match mode {
                TlsMode::Implicit => "implicit",
                TlsMode::StartTls => "starttls",
            })
            .arg(port.to_string())
            .arg(&pki.server_cert)
            .arg(&pki.server_key)
            .arg(maildir)
            .arg(maildir.with_extension("auth"))
            .args([TLS_USER, TLS_PASSWORD])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start python3 tls_smtpd.py");
        let mut server = Smtpd {
            child,
            maildir: maildir.to_path_buf(),
        };
        server.wait_until_listening(port, &log);
        server
    }

    fn wait_until_listening(&mut self, port: u16, log: &Path) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "aiosmtpd exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {addr} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The AUTH attempts a TLS server saw (`AUTH ok PLAIN`, `AUTH refused LOGIN`, …).
    fn auth_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.maildir.with_extension("auth"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many messages the Maildir holds (without reading them).
    pub(crate) fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|sub| std::fs::read_dir(self.maildir.join(sub)).map_or(0, |d| d.count()))
            .sum()
    }

    /// Every message in the Maildir, as received.
    pub(crate) fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            for entry in std::fs::read_dir(self.maildir.join(sub)).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                out.push(String::from_utf8(bytes).expect("messages are 7-bit"));
            }
        }
        out
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with its own database, configuration and mail folder.
pub(crate) struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "database_url = \"sqlite://{db}\"\ncatalog = \"{catalog}\"\nmail_dir = \"{mail}\"\n\
             mail_from = \"{FROM}\"\nfinance_to = \"{FINANCE}\"\n{seller}",
            db = dir.path().join("billrun.db").display(),
            catalog = fixtures().join("catalog.toml").display(),
            mail = dir.path().join("eml").display(),
            seller = billrun::config::EXAMPLE_SELLER,
        );
        std::fs::write(dir.path().join("billrun.toml"), config).unwrap();
        Sandbox { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str], smtp_port: u16) -> Output {
        self.run_with(args, &format!("smtp://127.0.0.1:{smtp_port}"), &[])
    }

    /// With `smtp_url` and more `BILLRUN_*` variables of the caller's choosing.
    pub(crate) fn run_with(&self, args: &[&str], smtp_url: &str, env: &[(&str, String)]) -> Output {
        self.command(args, smtp_url, env).output().unwrap()
    }

    /// The command `run_with` runs, to start it in the background.
    pub(crate) fn command(&self, args: &[&str], smtp_url: &str, env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_billrun"));
        cmd.arg("--config")
            .arg(self.path("billrun.toml"))
            .args(args)
            .current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("BILLRUN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("BILLRUN_SMTP_URL", smtp_url);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn ok(&self, args: &[&str], smtp_port: u16) -> String {
        let out = self.run(args, smtp_port);
        assert!(
            out.status.success(),
            "billrun {args:?} exited {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A command whose mail could not all be sent: exit 4 (README, Commands).
    fn mail_failed(&self, args: &[&str], smtp_port: u16) -> String {
        let out = self.run(args, smtp_port);
        assert_eq!(
            out.status.code(),
            Some(4),
            "billrun {args:?} exited {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn import(&self, port: u16) {
        let data = fixtures().join("three_monthly.json");
        self.ok(&["import", data.to_str().unwrap()], port);
    }

    /// number → document, from `billrun invoices --json`.
    fn documents(&self, port: u16) -> BTreeMap<String, Value> {
        let v: Value = serde_json::from_str(&self.ok(&["invoices", "--json"], port)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| (d["number"].as_str().unwrap().to_string(), d.clone()))
            .collect()
    }

    /// (status, attempts, last_error) of every outbox row.
    pub(crate) fn outbox(&self) -> Vec<(String, i64, Option<String>)> {
        use sqlx::Row;
        let url = format!("sqlite://{}?mode=ro", self.path("billrun.db").display());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let rows =
                    sqlx::query("SELECT status, attempts, last_error FROM outbox ORDER BY id")
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                pool.close().await;
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            })
    }
}

/// Just enough MIME to check billrun's messages: headers, multipart nesting, base64 and
/// quoted-printable bodies.
pub(crate) struct Part {
    headers: Vec<(String, String)>,
    body: String,
    parts: Vec<Part>,
}

impl Part {
    pub(crate) fn parse(raw: &str) -> Part {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = headers.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut part = Part {
            headers,
            body: body.to_string(),
            parts: Vec::new(),
        };
        if part.content_type().starts_with("multipart/") {
            let boundary = part.param("content-type", "boundary").expect("boundary");
            let delimiter = format!("--{boundary}");
            for chunk in body.split(&delimiter).skip(1) {
                if chunk.starts_with("--") {
                    break;
                }
                let chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
                part.parts
                    .push(Part::parse(chunk.strip_suffix('\n').unwrap_or(chunk)));
            }
        }
        part
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_ascii_lowercase()
    }

    pub(crate) fn param(&self, header: &str, name: &str) -> Option<String> {
        let value = self.header(header)?;
        value.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
        })
    }

    pub(crate) fn leaves(&self) -> Vec<&Part> {
        if self.parts.is_empty() {
            vec![self]
        } else {
            self.parts.iter().flat_map(|p| p.leaves()).collect()
        }
    }

    pub(crate) fn decoded(&self) -> Vec<u8> {
        match self
            .header("content-transfer-encoding")
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("base64") => base64_decode(&self.body),
            Some("quoted-printable") => quoted_printable_decode(&self.body),
            _ => self.body.clone().into_bytes(),
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn quoted_printable_decode(s: &str) -> Vec<u8> {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn pdftotext_available() -> bool {
    Command::new("pdftotext")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn pdf_text(pdf: &[u8], dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.pdf"));
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output()
        .unwrap();
    assert!(out.status.success(), "pdftotext {}", path.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn finance_message(messages: &[Part]) -> &Part {
    let finance: Vec<&Part> = messages
        .iter()
        .filter(|m| m.header("to") == Some(FINANCE))
        .collect();
    assert_eq!(finance.len(), 1, "one finance batch message");
    finance[0]
}

#[test]
fn close_sends_documents_with_pdfs_and_the_finance_batch() {
    if !aiosmtpd_available("close_sends_documents_with_pdfs_and_the_finance_batch") {
        return;
    }
    let sandbox = Sandbox::new();
    let port = free_port();
    let smtpd = Smtpd::start(port, &sandbox.path("maildir"));
    sandbox.import(port);
    let out = sandbox.ok(&["close", "--as-of", "2026-02-15", "--json"], port);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            report["emails_sent"].as_u64(),
            report["emails_failed"].as_u64()
        ),
        (Some(7), Some(0)),
        "{out}"
    );
    assert!(
        !sandbox.path("eml").exists(),
        "SMTP replaces the .eml folder"
    );

    let documents = sandbox.documents(port);
    assert_eq!(documents.len(), 6);
    let messages: Vec<Part> = smtpd.messages().iter().map(|m| Part::parse(m)).collect();
    assert_eq!(messages.len(), 7, "6 documents and 1 finance batch");
    let pdftotext = pdftotext_available();
    if !pdftotext {
        let _ = writeln!(
            std::io::stderr(),
            "pdftotext not installed: the PDFs' text is not checked (apt install poppler-utils)"
        );
    }

    let mut seen = Vec::new();
    for m in messages.iter().filter(|m| m.header("to") != Some(FINANCE)) {
        let subject = m.header("subject").unwrap();
        let number = subject.rsplit(' ').next().unwrap().to_string();
        let doc = documents
            .get(&number)
            .unwrap_or_else(|| panic!("{subject}"));
        assert_eq!(
            m.header("message-id"),
            Some(format!("<{number}@billrun.test>").as_str())
        );
        assert!(number.starts_with("INV-2026-00000"), "{number}");
        if let Some(rcpt) = m.header("x-rcptto") {
            assert_eq!(Some(rcpt), m.header("to"), "envelope recipient");
        }
        assert_eq!(m.content_type(), "multipart/mixed");
        assert_eq!(m.parts.len(), 2);
        assert_eq!(m.parts[0].content_type(), "multipart/alternative");
        let types: Vec<String> = m.leaves().iter().map(|p| p.content_type()).collect();
        assert_eq!(types, ["text/plain", "text/html", "application/pdf"]);
        let text = String::from_utf8(m.leaves()[0].decoded()).unwrap();
        assert!(text.contains(&number), "{text}");

        let pdf_part = m.leaves()[2];
        assert_eq!(
            pdf_part.param("content-disposition", "filename"),
            Some(format!("{number}.pdf"))
        );
        assert!(
            pdf_part
                .header("content-disposition")
                .unwrap()
                .starts_with("attachment")
        );
        let pdf = pdf_part.decoded();
        assert!(pdf.starts_with(b"%PDF-"), "{number}: not a PDF");
        if pdftotext {
            let text = pdf_text(&pdf, sandbox.dir.path(), &number);
            let total = doc["total"].as_str().unwrap();
            assert!(
                text.contains(&number)
                    && text.contains(&format!("{total} USD"))
                    && text.contains("Example Software Ltd")
                    && text.contains("GB123456789")
                    && text.contains("Page 1 of 1"),
                "{number}, total {total}:\n{text}"
            );
        }
        seen.push(number);
    }
    seen.sort();
    let expected: Vec<String> = (1..=6).map(|n| format!("INV-2026-{n:06}")).collect();
    assert_eq!(seen, expected);

    let finance = finance_message(&messages);
    assert_eq!(
        finance.header("message-id"),
        Some("<finance-batch-000001@billrun.test>")
    );
    let csvs: Vec<(String, String)> = finance
        .leaves()
        .into_iter()
        .filter(|p| p.content_type().starts_with("text/csv"))
        .map(|p| {
            (
                p.param("content-disposition", "filename")
                    .unwrap_or_default(),
                String::from_utf8(p.decoded()).unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = csvs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["documents.csv", "lines.csv"]);
    let rows = |csv: &str| -> Vec<String> {
        csv.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let documents = rows(&csvs[0].1);
    assert!(
        documents[0].starts_with("number,kind,corrects,account,customer_name"),
        "{documents:?}"
    );
    assert_eq!(documents.len() - 1, 6, "{documents:?}");
    let lines = rows(&csvs[1].1);
    assert!(lines[0].starts_with("number,position,kind,description"));
    assert!(lines.len() > documents.len(), "{lines:?}");
}

#[test]
fn an_outage_queues_messages_and_send_retry_now_delivers_each_once() {
    if !aiosmtpd_available("an_outage_queues_messages_and_send_retry_now_delivers_each_once") {
        return;
    }
    let sandbox = Sandbox::new();
    // Nothing listens here until the server is started below.
    let port = free_port();
    sandbox.import(port);
    let out = sandbox.mail_failed(&["close", "--as-of", "2026-02-15", "--json"], port);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["invoices"].as_u64(), Some(6), "{out}");
    assert_eq!(
        (
            report["emails_sent"].as_u64(),
            report["emails_failed"].as_u64()
        ),
        (Some(0), Some(7)),
        "{out}"
    );
    // The human report says so too.
    let sandbox2 = Sandbox::new();
    sandbox2.import(port);
    let text = sandbox2.mail_failed(&["close", "--as-of", "2026-02-15"], port);
    assert!(
        text.contains("Issued 6 invoice(s)") && text.contains("7 failed (queued for retry)"),
        "{text}"
    );

    assert_eq!(sandbox.documents(port).len(), 6, "documents are issued");
    let outbox = sandbox.outbox();
    assert_eq!(outbox.len(), 7);
    for (status, attempts, last_error) in &outbox {
        assert_eq!((status.as_str(), *attempts), ("pending", 1), "{outbox:?}");
        let e = last_error.as_deref().expect("last_error is set");
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    let smtpd = Smtpd::start(port, &sandbox.path("maildir"));
    let out = sandbox.ok(&["send", "--retry-now"], port);
    assert!(out.contains("Sent 7 message(s); 0 failed"), "{out}");
    assert_eq!(smtpd.messages().len(), 7);
    assert!(
        sandbox.outbox().iter().all(|(s, _, _)| s == "sent"),
        "{:?}",
        sandbox.outbox()
    );

    let out = sandbox.ok(&["send", "--retry-now"], port);
    assert!(out.contains("Sent 0 message(s)"), "{out}");
    let messages: Vec<Part> = smtpd.messages().iter().map(|m| Part::parse(m)).collect();
    assert_eq!(messages.len(), 7, "nothing is sent twice");
    let mut ids: Vec<&str> = messages
        .iter()
        .map(|m| m.header("message-id").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);
    finance_message(&messages);
}

/// (status, attempts, last_error, next_attempt_at) of every outbox row.
fn outbox_with_next_attempt(
    sandbox: &Sandbox,
) -> Vec<(String, i64, Option<String>, chrono::DateTime<chrono::Utc>)> {
    use sqlx::Row;
    let url = format!("sqlite://{}?mode=ro", sandbox.path("billrun.db").display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let rows = sqlx::query(
                "SELECT status, attempts, last_error, next_attempt_at FROM outbox ORDER BY id",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            pool.close().await;
            rows.iter()
                .map(|r| {
                    let next: String = r.get(3);
                    let next = chrono::DateTime::parse_from_rfc3339(&next)
                        .unwrap_or_else(|e| panic!("next_attempt_at {next:?}: {e}"))
                        .to_utc();
                    (r.get(0), r.get(1), r.get(2), next)
                })
                .collect()
        })
}

/// An SMTP server (aiosmtpd with a handler of its own) that refuses every message with
/// `reply`, at RCPT or at DATA, and logs each refusal to a file; killed when dropped.
struct RefusingSmtpd {
    child: Child,
    log: PathBuf,
}

const REFUSING_HANDLER: &str = r#"
import sys, time
from aiosmtpd.controller import Controller

where, reply, log, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def note(what):
    with open(log, "a") as f:
        f.write(what + "\n")

class Refuse:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if where == "rcpt":
            note("RCPT " + address)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        note("DATA " + ",".join(envelope.rcpt_tos))
        return reply

controller = Controller(Refuse(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

impl RefusingSmtpd {
    fn start(port: u16, dir: &Path, at: &str, reply: &str) -> RefusingSmtpd {
        let script = dir.join("refusing_smtpd.py");
        std::fs::write(&script, REFUSING_HANDLER).unwrap();
        let log = dir.join(format!("refusals-{at}.log"));
        std::fs::write(&log, "").unwrap();
        let err = dir.join(format!("refusing-{at}.err"));
        let child = Command::new("python3")
            .arg(&script)
            .args([at, reply])
            .arg(&log)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start python3 refusing_smtpd.py");
        let mut server = RefusingSmtpd { child, log };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "refusing_smtpd.py exited ({status}): {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "refusing server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The refusals so far, one line each.
    fn refusals(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RefusingSmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every queued message failed once and waits for its backoff (30 s after the failure, so
/// at least 30 s after `before`), with the server's reason.
fn assert_queued_with_backoff(
    sandbox: &Sandbox,
    before: chrono::DateTime<chrono::Utc>,
    reason: &str,
) {
    let outbox = outbox_with_next_attempt(sandbox);
    assert_eq!(outbox.len(), 7, "6 documents and 1 finance batch queued");
    for (status, attempts, last_error, next) in &outbox {
        assert_eq!((status.as_str(), *attempts), ("pending", 1), "{outbox:?}");
        let e = last_error.as_deref().expect("last_error is set");
        assert!(e.contains(reason), "{reason:?} not in {e:?}");
        assert!(
            *next >= before + chrono::Duration::seconds(30),
            "next attempt {next} is not backed off from {before}"
        );
    }
}

/// After the server accepts again: `send` leaves backed-off messages alone, `send
/// --retry-now` delivers each once, a second one sends nothing.
fn assert_retry_now_delivers_each_once(sandbox: &Sandbox, port: u16, smtpd: &Smtpd) {
    let out = sandbox.mail_failed(&["send"], port);
    assert!(
        out.contains("Sent 0 message(s); 0 failed")
            && out.contains("7 message(s) wait for their next attempt after a failure"),
        "backoff ignored: {out}"
    );
    assert_eq!(smtpd.messages().len(), 0);
    let out = sandbox.ok(&["send", "--retry-now"], port);
    assert!(out.contains("Sent 7 message(s); 0 failed"), "{out}");
    let out = sandbox.ok(&["send", "--retry-now"], port);
    assert!(out.contains("Sent 0 message(s)"), "{out}");
    let messages: Vec<Part> = smtpd.messages().iter().map(|m| Part::parse(m)).collect();
    assert_eq!(messages.len(), 7, "each message exactly once");
    let mut ids: Vec<&str> = messages
        .iter()
        .map(|m| m.header("message-id").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "no message twice");
    finance_message(&messages);
    let outbox = outbox_with_next_attempt(sandbox);
    assert!(
        outbox
            .iter()
            .all(|(s, attempts, e, _)| s == "sent" && *attempts == 2 && e.is_none()),
        "sent on the second attempt: {outbox:?}"
    );
    assert_eq!(sandbox.documents(port).len(), 6, "nothing issued twice");
}

#[test]
fn a_server_refusing_with_451_or_550_keeps_every_message_queued_until_retried() {
    if !aiosmtpd_available(
        "a_server_refusing_with_451_or_550_keeps_every_message_queued_until_retried",
    ) {
        return;
    }
    for (at, reply) in [
        ("data", "451 4.3.0 Try again later"),
        ("rcpt", "550 5.1.1 Mailbox unavailable"),
    ] {
        let sandbox = Sandbox::new();
        let port = free_port();
        let refuser = RefusingSmtpd::start(port, sandbox.dir.path(), at, reply);
        sandbox.import(port);
        let before = chrono::Utc::now();
        let out = sandbox.mail_failed(&["close", "--as-of", "2026-02-15", "--json"], port);
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["invoices"].as_u64(), Some(6), "{out}");
        assert_eq!(
            (
                report["emails_sent"].as_u64(),
                report["emails_failed"].as_u64()
            ),
            (Some(0), Some(7)),
            "{at} {reply}: {out}"
        );
        // A reply code is about the message, not the server: each one was tried.
        let refusals = refuser.refusals();
        assert_eq!(refusals.len(), 7, "{at} {reply}: {refusals:?}");
        let code = &reply[..3];
        assert_queued_with_backoff(&sandbox, before, code);

        drop(refuser);
        let smtpd = Smtpd::start(port, &sandbox.path("maildir"));
        assert_retry_now_delivers_each_once(&sandbox, port, &smtpd);
    }
}

/// Accepts TCP connections and never says a word; counts them.
struct BlackHole {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start() -> BlackHole {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        held.push(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        BlackHole {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_server_that_never_answers_times_out_and_nothing_is_lost() {
    if !aiosmtpd_available("a_server_that_never_answers_times_out_and_nothing_is_lost") {
        return;
    }
    let sandbox = Sandbox::new();
    let hole = BlackHole::start();
    let port = hole.port;
    sandbox.import(port);
    let before = chrono::Utc::now();
    let out = sandbox.mail_failed(&["close", "--as-of", "2026-02-15", "--json"], port);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["invoices"].as_u64(), Some(6), "{out}");
    assert_eq!(
        (
            report["emails_sent"].as_u64(),
            report["emails_failed"].as_u64()
        ),
        (Some(0), Some(7)),
        "{out}"
    );
    assert!(hole.accepted() >= 1, "billrun never connected");
    let _ = writeln!(
        std::io::stderr(),
        "silent server: {} connection(s) for 7 messages",
        hole.accepted()
    );
    assert_queued_with_backoff(&sandbox, before, &format!("127.0.0.1:{port}"));
    let errors: Vec<String> = outbox_with_next_attempt(&sandbox)
        .into_iter()
        .filter_map(|(_, _, e, _)| e)
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("no answer within")),
        "a timeout is reported as one: {errors:?}"
    );

    drop(hole);
    let smtpd = Smtpd::start(port, &sandbox.path("maildir"));
    assert_retry_now_delivers_each_once(&sandbox, port, &smtpd);
}

// ---------------------------------------------------------------------------------------
// TLS: implicit (smtps://) and STARTTLS (?tls=required) against a server with a certificate
// from a throwaway CA, trusted through smtp_ca_file.

const TLS_USER: &str = "billing";
const TLS_PASSWORD: &str = "Tls-S3cret-pw";

#[derive(Debug, Clone, Copy)]
enum TlsMode {
    Implicit,
    StartTls,
}

/// aiosmtpd with an SSL context: argv = mode port cert key maildir auth-log user password.
const TLS_SMTPD: &str = r#"
import ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, port, cert, key, maildir, log, user, password = sys.argv[1:9]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    with open(log, "a") as f:
        f.write(("AUTH ok " if ok else "AUTH refused ") + mechanism + "\n")
    return AuthResult(success=ok)

common = dict(hostname="127.0.0.1", port=int(port), authenticator=authenticate)
if mode == "implicit":
    # TLS from the first byte; aiosmtpd only knows STARTTLS as "TLS" for AUTH.
    controller = Controller(Mailbox(maildir), ssl_context=context, auth_require_tls=False, **common)
else:
    controller = Controller(Mailbox(maildir), tls_context=context, require_starttls=True, **common)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// Whether the `openssl` command is there to make certificates; says why not, once.
fn openssl_available(test: &str) -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("BILLRUN_REQUIRE_SMTP").as_deref() == Ok("1") {
        panic!(
            "BILLRUN_REQUIRE_SMTP=1 but `openssl version` fails: the TLS tests need it to make \
             their certificates (apt install openssl)"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: the openssl command is not installed (apt install openssl)"
    );
    false
}

/// Extensions for the test certificates; the system's openssl.cnf plays no part.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
";

/// A throwaway PKI made with the openssl command, valid for two days: a CA, a server
/// certificate it signed for 127.0.0.1 and localhost, and another CA that signed nothing.
struct TestPki {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TestPki {
    fn new(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let p256 = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=billrun test {ca}"),
            );
            let mut args = vec![
                "req",
                "-x509",
                "-config",
                "openssl.cnf",
                "-extensions",
                "ca",
            ];
            args.extend(p256);
            args.extend([
                "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
            ]);
            openssl(&args);
        }
        let mut args = vec!["req", "-new", "-config", "openssl.cnf"];
        args.extend(p256);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&args);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server",
            "-out",
            "server.pem",
        ]);
        TestPki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// SMTP credentials, and `smtp_ca_file` when given.
fn tls_env(ca: Option<&Path>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("BILLRUN_SMTP_USER", TLS_USER.to_string()),
        ("BILLRUN_SMTP_PASSWORD", TLS_PASSWORD.to_string()),
    ];
    if let Some(ca) = ca {
        env.push(("BILLRUN_SMTP_CA_FILE", ca.display().to_string()));
    }
    env
}

/// Import and close over `url`; the report and everything the binary printed, which must
/// not hold the password. With `all_sent`, `close` must succeed; without, mail is left
/// waiting, which `close` may also report with exit status 4.
fn close_over(
    sandbox: &Sandbox,
    url: &str,
    env: &[(&str, String)],
    all_sent: bool,
) -> (Value, String) {
    let data = fixtures().join("three_monthly.json");
    let mut printed = String::new();
    let mut report = Value::Null;
    for args in [
        &["import", data.to_str().unwrap()][..],
        &["close", "--as-of", "2026-02-15", "--json"],
    ] {
        let out = sandbox.run_with(args, url, env);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let mail_waits = args[0] == "close" && !all_sent;
        assert!(
            out.status.success() || (mail_waits && out.status.code() == Some(4)),
            "billrun {args:?} exited {}\n{stdout}\n{stderr}",
            out.status
        );
        if args[0] == "close" {
            report = serde_json::from_str(&stdout).unwrap();
        }
        printed.push_str(&format!("{stdout}\n{stderr}\n"));
    }
    assert!(!printed.contains(TLS_PASSWORD), "{printed}");
    (report, printed)
}

fn assert_delivered_over_tls(mode: TlsMode, url: impl Fn(u16) -> String) {
    let sandbox = Sandbox::new();
    let pki = TestPki::new(&sandbox.path("pki"));
    let port = free_port();
    let smtpd = Smtpd::start_tls(mode, port, &sandbox.path("maildir"), &pki);
    let (report, printed) = close_over(&sandbox, &url(port), &tls_env(Some(&pki.ca)), true);
    assert_eq!(
        (
            report["emails_sent"].as_u64(),
            report["emails_failed"].as_u64()
        ),
        (Some(7), Some(0)),
        "{mode:?}: {printed}"
    );
    let messages: Vec<Part> = smtpd.messages().iter().map(|m| Part::parse(m)).collect();
    assert_eq!(
        messages.len(),
        7,
        "{mode:?}: 6 invoices and the finance batch"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.header("subject") == Some("Invoice INV-2026-000001")),
        "{mode:?}: the first invoice arrived"
    );
    finance_message(&messages);
    let auth = smtpd.auth_log();
    assert!(
        !auth.is_empty() && auth.iter().all(|a| a.starts_with("AUTH ok")),
        "{mode:?}: logged in over TLS: {auth:?}"
    );
    assert!(
        sandbox.outbox().iter().all(|(s, _, _)| s == "sent"),
        "{:?}",
        sandbox.outbox()
    );
}

#[test]
fn implicit_tls_with_the_configured_ca_delivers() {
    if !aiosmtpd_available("implicit_tls_with_the_configured_ca_delivers")
        || !openssl_available("implicit_tls_with_the_configured_ca_delivers")
    {
        return;
    }
    assert_delivered_over_tls(TlsMode::Implicit, |port| {
        format!("smtps://127.0.0.1:{port}")
    });
}

#[test]
fn starttls_with_the_configured_ca_delivers() {
    if !aiosmtpd_available("starttls_with_the_configured_ca_delivers")
        || !openssl_available("starttls_with_the_configured_ca_delivers")
    {
        return;
    }
    // By name this time: the certificate's DNS name is checked, not only its IP address.
    assert_delivered_over_tls(TlsMode::StartTls, |port| {
        format!("smtp://localhost:{port}?tls=required")
    });
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_nothing_is_sent() {
    if !aiosmtpd_available("a_certificate_from_another_ca_is_refused_and_nothing_is_sent")
        || !openssl_available("a_certificate_from_another_ca_is_refused_and_nothing_is_sent")
    {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(pki_dir.path());
    // The server's CA unknown: another CA configured, or none (the built-in roots only).
    for (mode, ca) in [
        (TlsMode::Implicit, Some(&pki.other_ca)),
        (TlsMode::StartTls, Some(&pki.other_ca)),
        (TlsMode::Implicit, None),
    ] {
        let sandbox = Sandbox::new();
        let port = free_port();
        let smtpd = Smtpd::start_tls(mode, port, &sandbox.path("maildir"), &pki);
        let url = match mode {
            TlsMode::Implicit => format!("smtps://127.0.0.1:{port}"),
            TlsMode::StartTls => format!("smtp://127.0.0.1:{port}?tls=required"),
        };
        let (report, printed) =
            close_over(&sandbox, &url, &tls_env(ca.map(|p| p.as_path())), false);
        let case = format!("{mode:?}, CA {ca:?}");
        assert_eq!(report["invoices"].as_u64(), Some(6), "{case}: {printed}");
        assert_eq!(
            (
                report["emails_sent"].as_u64(),
                report["emails_failed"].as_u64()
            ),
            (Some(0), Some(7)),
            "{case}: {printed}"
        );
        assert!(smtpd.messages().is_empty(), "{case}: a message got through");
        assert!(
            smtpd.auth_log().is_empty(),
            "{case}: credentials were offered to an unverified server: {:?}",
            smtpd.auth_log()
        );
        let outbox = sandbox.outbox();
        assert_eq!(outbox.len(), 7, "{case}");
        for (status, attempts, last_error) in &outbox {
            assert_eq!((status.as_str(), *attempts), ("pending", 1), "{case}");
            let e = last_error.as_deref().unwrap_or_default();
            assert!(
                e.contains("certificate") && !e.contains(TLS_PASSWORD),
                "{case}: {e}"
            );
        }
    }

    // A CA file that is not there stops the run before anything is issued.
    let sandbox = Sandbox::new();
    let missing = sandbox.path("no-such-ca.pem");
    let out = sandbox.run_with(
        &["close", "--as-of", "2026-02-15"],
        "smtps://127.0.0.1:465",
        &tls_env(Some(&missing)),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("smtp_ca_file") && stderr.contains("no-such-ca.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains(TLS_PASSWORD), "{stderr}");
}
