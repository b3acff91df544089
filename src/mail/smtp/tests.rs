//! The SMTP transport's own tests: URL rules, credentials, secrets, timeouts, against
//! throwaway servers on threads.

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
        connections: 4,
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
    let t = SmtpTransport::new(&settings(&format!("smtp://127.0.0.1:{port}"), None, None)).unwrap();
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
