//! SMTP connections billrun opens itself: the TCP stream with `TCP_NODELAY` (lettre's own
//! connector leaves Nagle on, and every message then waits ~40 ms for a delayed ACK), TLS
//! from the first byte (`smtps://`) or after STARTTLS, then AUTH, all through lettre's
//! `AsyncSmtpConnection`; and the pool of idle ones, reused across messages.
//!
//! Implicit TLS: lettre's network stream is wrapped in TLS by its own `upgrade_tls` (the same
//! certificate checks as STARTTLS: webpki roots plus `smtp_ca_file`), then handed back to
//! `AsyncSmtpConnection::connect_with_transport` as a plain stream ([`TlsStream`]), since
//! lettre offers no constructor from a stream already encrypted.

#![allow(deprecated)] // AsyncNetworkStream: public but deprecated, the one way to reuse lettre's TLS.

use super::UrlTls;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncNetworkStream, AsyncSmtpConnection, AsyncTokioStream, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// An idle connection unused for longer than this is checked with NOOP before it carries a
/// message (the server may have closed it); after [`IDLE_LIMIT`] it is dropped unused.
const IDLE_CHECK: Duration = Duration::from_secs(2);
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Why a connection or a message failed.
#[derive(Debug)]
pub(super) enum ConnError {
    /// Said by lettre: a reply code (the server refused), or a protocol, TLS or IO failure.
    Smtp(lettre::transport::smtp::Error),
    /// The TCP connection could not be opened.
    Connect(io::Error),
    /// The server does not offer what the URL requires.
    Refused(&'static str),
    /// This message's spool file could not be read: nothing to do with the server.
    Spool(io::Error),
}

impl ConnError {
    /// A reply code: the server is there and refused this message (or these credentials);
    /// or the message itself failed here. Either way the server is not down.
    pub(super) fn is_reply(&self) -> bool {
        matches!(self, ConnError::Smtp(e) if e.is_transient() || e.is_permanent())
            || matches!(self, ConnError::Spool(_))
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Smtp(e) => write!(f, "{e}"),
            ConnError::Connect(e) => write!(f, "Connection error: {e}"),
            ConnError::Refused(why) => f.write_str(why),
            ConnError::Spool(e) => write!(f, "reading the message's spool file: {e}"),
        }
    }
}

impl From<lettre::transport::smtp::Error> for ConnError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        ConnError::Smtp(e)
    }
}

/// Send the message in the file at `path` as lettre's `send` sends one in memory (MAIL,
/// RCPT, DATA, the content dot-stuffed), reading it a block at a time. The file is a spooled
/// finance batch, 7-bit by construction (headers and text part as lettre encodes them,
/// attachments in base64), so it needs no 8BITMIME. A read error midway would leave a
/// truncated message the server may accept; it is reported, and the message, not marked
/// sent, goes again whole (with the same Message-ID) on a later pass.
pub(super) async fn send_file(
    conn: &mut AsyncSmtpConnection,
    envelope: &lettre::address::Envelope,
    path: &std::path::Path,
) -> Result<(), ConnError> {
    use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
    use lettre::transport::smtp::extension::{Extension, MailParameter};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(ConnError::Spool)?;
    let mut options = Vec::new();
    let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(ConnError::Refused(
                "the finance address is not ASCII and the server does not offer SMTPUTF8",
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), vec![])).await?;
    }
    conn.command(Data).await?;
    let mut failed: Option<io::Error> = None;
    let blocks = std::iter::from_fn(|| {
        if failed.is_some() {
            return None;
        }
        let mut block = vec![0u8; 256 * 1024];
        match file.read(&mut block) {
            Ok(0) => None,
            Ok(n) => {
                block.truncate(n);
                Some(block)
            }
            Err(e) => {
                failed = Some(e);
                None
            }
        }
    });
    conn.message_iter(blocks).await?;
    match failed {
        Some(e) => Err(ConnError::Spool(e)),
        None => Ok(()),
    }
}

/// How to reach the server and log in.
pub(super) struct Connector {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: UrlTls,
    /// For every TLS mode; `None` with [`UrlTls::None`].
    pub(super) tls_parameters: Option<TlsParameters>,
    pub(super) hello: ClientId,
    pub(super) credentials: Option<Credentials>,
}

impl Connector {
    /// A new connection, greeted, encrypted as the URL asks and logged in.
    pub(super) async fn connect(&self) -> Result<AsyncSmtpConnection, ConnError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(ConnError::Connect)?;
        tcp.set_nodelay(true).map_err(ConnError::Connect)?;
        let mut conn = match (&self.tls, &self.tls_parameters) {
            (UrlTls::Wrapper, Some(parameters)) => {
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream.upgrade_tls(parameters.clone()).await?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(TlsStream(stream)),
                    &self.hello,
                )
                .await?
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?,
        };
        match (&self.tls, &self.tls_parameters) {
            (UrlTls::Required | UrlTls::Opportunistic, Some(parameters)) if conn.can_starttls() => {
                conn.starttls(parameters.clone(), &self.hello).await?;
            }
            (UrlTls::Required, _) => {
                conn.abort().await;
                return Err(ConnError::Refused(
                    "the server does not offer STARTTLS, which smtp_url requires (tls=required)",
                ));
            }
            _ => {}
        }
        if let Some(credentials) = &self.credentials
            && let Err(e) = conn.auth(DEFAULT_MECHANISMS, credentials).await
        {
            conn.abort().await;
            return Err(e.into());
        }
        Ok(conn)
    }
}

/// Idle connections, most recently used last.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Pool {
    /// An idle connection that still answers, if there is one.
    pub(super) async fn take(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let idle = since.elapsed();
            if idle > IDLE_LIMIT || conn.has_broken() {
                continue;
            }
            if idle <= IDLE_CHECK || conn.test_connected().await {
                return Some(conn);
            }
        }
    }

    /// Keep a connection that just carried a message, up to `max` of them.
    pub(super) fn put(&self, conn: AsyncSmtpConnection, max: usize) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max {
            idle.push((conn, Instant::now()));
        }
    }

    /// Every idle connection, for QUIT.
    pub(super) fn drain(&self) -> Vec<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.drain(..).map(|(c, _)| c).collect()
    }
}

/// lettre's network stream after its TLS upgrade, seen as a tokio stream again.
struct TlsStream(AsyncNetworkStream);

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsStream")
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match futures_io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, unfilled) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}
