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
