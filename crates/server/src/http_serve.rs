//! The accept loop and connection driver of every HTTP listener (delivery on 8888, WebRTC on
//! 8889, the API), in place of `axum::serve`.
//!
//! Why our own loop: `axum::serve` sets no timer and no limit, so a client that sends half a
//! request holds its connection (and a file descriptor) forever, and one address may open as
//! many connections as it likes. Here each connection is a hyper HTTP/1.1 connection with:
//!
//! - a **header timeout**: a request's head must arrive within `header_timeout`, counted from
//!   the accept for the first request and from the first byte of each next one; otherwise the
//!   connection is closed. It covers reading request heads only: once a request has reached
//!   its handler, nothing is timed until its response body has ended, so HTTP-FLV, blocking
//!   playlist reloads, SSE and downloads run as long as they like;
//! - an **idle timeout**: a keep-alive connection between requests is closed after
//!   `idle_timeout`. (hyper's own `header_read_timeout` restarts as soon as a connection goes
//!   idle, which would make the idle timeout the header timeout; so both are kept here, by a
//!   per-connection watchdog polled in the connection's own task);
//! - **header limits**: a request head larger than `max_header_bytes` or with more than
//!   [`MAX_HEADERS`] lines is answered `431 Request Header Fields Too Large` by hyper, and the
//!   connection closed;
//! - a **per-IP cap**: an address holding `max_connections_per_ip` connections has its next ones
//!   closed at accept;
//! - accept errors (out of file descriptors) back off instead of spinning;
//! - `ConnectInfo<SocketAddr>` in every request's extensions, as
//!   `into_make_service_with_connect_info` gives;
//! - graceful shutdown: when the shutdown future resolves, the listener closes, idle connections
//!   close, requests in flight get [`HttpLimits::shutdown_grace`] to finish, then the rest are
//!   cut. Dropping the [`serve`] future cuts every connection at once.
//!
//! **HTTPS.** Given a TLS acceptor (a listener with `tls_cert`/`tls_key`, `tls.rs`), the port
//! speaks TLS only. The handshake runs in the connection's own task, within the header timeout
//! counted from the accept (a client that never sends its ClientHello is closed like one that
//! never sends a request head; the first request head must arrive within the same time). A
//! plain-HTTP request on the port is answered `400` in clear text, as Go's `net/http` does, and
//! closed. Then HTTP/1.1 as above, or HTTP/2 when ALPN chose `h2`: at most
//! [`MAX_CONCURRENT_STREAMS`] streams, a header list bounded by `max_header_bytes`, the same
//! idle timeout (counted when the last stream ends) and graceful shutdown (GOAWAY).
//! `ConnectInfo` stays the TCP peer.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

/// Most header lines a request may have (hyper's default, set explicitly).
pub const MAX_HEADERS: usize = 100;

/// Most requests one HTTP/2 connection may have in flight (RFC 9113 §6.5.2 advises at least 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// The limits of one HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time allowed to send a request head (from the accept, or from a next request's first byte).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// Largest request head (request line and header lines), in bytes.
    pub max_header_bytes: usize,
    /// Most connections one IP address may hold; 0 means no cap.
    pub max_connections_per_ip: usize,
    /// HTTP/2 with prior knowledge on plain connections (h2c), besides HTTP/1.1.
    pub h2c: bool,
    /// How long requests in flight may go on after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from(&crate::config::HttpConfig::default())
    }
}

impl From<&crate::config::HttpConfig> for HttpLimits {
    fn from(c: &crate::config::HttpConfig) -> Self {
        HttpLimits {
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            max_header_bytes: c.max_header_bytes,
            max_connections_per_ip: c.max_connections_per_ip,
            h2c: c.h2c,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// The connection builders of one listener.
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &HttpLimits) -> Builders {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .max_headers(MAX_HEADERS)
            .max_header_size(limits.max_header_bytes)
            // Timed by our watchdog instead (see the module documentation).
            .header_read_timeout(None);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Builders { http1, http2 }
    }
}

/// What answers the requests of one listener: an axum [`Router`] (the API, WebRTC), or a service
/// hyper calls directly, without a router's per-request work, where one handler answers every
/// URL (delivery, `http.rs`).
pub trait App: Send + 'static {
    /// The service each connection calls.
    type Service: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static;
    /// That service.
    fn into_service(self) -> Self::Service;
}

impl App for Router {
    type Service = TowerToHyperService<Router>;
    fn into_service(self) -> Self::Service {
        TowerToHyperService::new(self)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully (see the
/// module documentation). With `tls`, the port serves HTTPS only (HTTP/2 or HTTP/1.1 by ALPN).
/// Requests carry `ConnectInfo<SocketAddr>` in their extensions (handlers can extract it).
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let local = listener.local_addr().ok();
    let mut shutdown = pin!(shutdown);
    let (stop_tx, stop_rx) = watch::channel(false);
    let per_ip = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    let builders = Arc::new(Builders::new(&limits));
    let app = app.into_service();
    let mut conns = JoinSet::new();
    let mut last_cap_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (socket, remote) = match accepted {
            Ok(a) => a,
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listen = ?local, "HTTP accept failed: {e}");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Some(slot) = IpSlot::take(&per_ip, remote.ip(), limits.max_connections_per_ip) else {
            let now = Instant::now();
            if last_cap_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                last_cap_warning = Some(now);
                tracing::warn!(
                    %remote,
                    "HTTP connection refused: this address holds {} connections (http.max_connections_per_ip)",
                    limits.max_connections_per_ip
                );
            }
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        conns.spawn(connection(
            socket,
            remote,
            app.clone(),
            builders.clone(),
            limits.clone(),
            tls.clone(),
            stop_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(listen = ?local, "HTTP shutdown: cutting {} connections still busy", conns.len());
    }
    conns.shutdown().await;
}

/// Errors of one incoming connection (it went away before we took it), not of the listener.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}

/// One connection counted against its address; released on drop.
struct IpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut m = map.lock();
        let n = m.entry(ip).or_insert(0);
        if cap != 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot { map: map.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What the watchdog of one connection needs to know. Every change happens while the
/// connection's task polls hyper (reading the socket, calling the service, dropping a finished
/// response body), so the watchdog, polled right after in the same task, always sees it.
struct Activity {
    start: Instant,
    /// Requests handed to the service whose response body has not ended yet.
    active: AtomicU32,
    /// Waiting for a request head (true) or idle between requests (false).
    reading_head: AtomicBool,
    /// When that wait began, in milliseconds since `start`.
    since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            active: AtomicU32::new(0),
            reading_head: AtomicBool::new(true),
            since_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn request_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        if self.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.reading_head.store(false, Ordering::Relaxed);
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    fn bytes_read(&self) {
        if self.active.load(Ordering::Relaxed) == 0 && !self.reading_head.load(Ordering::Relaxed) {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.reading_head.store(true, Ordering::Relaxed);
        }
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is served.
    fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let timeout = if self.reading_head.load(Ordering::Relaxed) {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        Some(self.start + Duration::from_millis(self.since_ms.load(Ordering::Relaxed)) + timeout)
    }
}

/// Ends a request's activity when dropped: with its response body, or with the handler's
/// future if the connection goes before the handler answers.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that marks the end of its request when hyper drops it (finished or not).
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A plain or a TLS connection.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// The HTTP/1.1 connection, noting the first bytes of each next request for the watchdog.
struct WatchedStream {
    inner: Stream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The HTTP/2 connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client starts with the HTTP/2 preface, read without consuming it: `Some(false)`
/// as soon as the first bytes differ, `None` when the connection ends or the header time runs out
/// first.
async fn h2c_preface(socket: &TcpStream, deadline: Instant, stop: &watch::Receiver<bool>) -> Option<bool> {
    let mut buf = [0u8; 24];
    let mut pause = Duration::from_millis(2);
    loop {
        let n = tokio::time::timeout_at(deadline, socket.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A partial preface: wait for the rest (peek returns what is there at once, so the
        // deadline is checked here too).
        if Instant::now() >= deadline || *stop.borrow() {
            return None;
        }
        // A client that sends the preface in pieces is rare: poll ever more slowly.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Drives one connection until it ends, its watchdog fires, or shutdown's grace runs out.
#[allow(clippy::too_many_arguments)]
async fn connection<S>(
    socket: TcpStream,
    remote: SocketAddr,
    app: S,
    builders: Arc<Builders>,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
    _slot: IpSlot,
) where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
        > + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let svc_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        svc_activity.request_started();
        let guard = RequestGuard(svc_activity.clone());
        let fut = hyper::service::Service::call(&app, req);
        async move {
            let res: Response<Body> = fut.await?;
            Ok::<_, std::convert::Infallible>(res.map(|inner| GuardedBody { inner, _guard: guard }))
        }
    });
    let stream: Stream = match tls {
        None if limits.h2c => {
            // HTTP/2 with prior knowledge starts with its preface; anything else is HTTP/1.1.
            match h2c_preface(&socket, activity.start + limits.header_timeout, &stop).await {
                Some(true) => {
                    let conn = builders.http2.serve_connection(TokioIo::new(socket), service);
                    if let Err(e) = drive(conn, |c| c.graceful_shutdown(), &activity, &limits, stop).await {
                        tracing::debug!(%remote, "HTTP/2 (h2c) connection closed: {e}");
                    }
                    return;
                }
                Some(false) => Either::Left(socket),
                None => return,
            }
        }
        None => Either::Left(socket),
        Some(acceptor) => {
            // The handshake and the first request head share the header timeout.
            match handshake(socket, &acceptor, activity.start + limits.header_timeout).await {
                Ok(s) => Either::Right(s),
                Err(e) => {
                    tracing::debug!(%remote, "HTTPS connection closed: {e}");
                    return;
                }
            }
        }
    };
    let outcome = match stream {
        Either::Right(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
            // No WatchedStream: HTTP/2 reads control frames (PING, WINDOW_UPDATE) at any time,
            // so a read is no sign of a next request; a new stream is (`request_started`).
            let conn = builders.http2.serve_connection(TokioIo::new(tls), service);
            drive(conn, |c| c.graceful_shutdown(), &activity, &limits, stop).await
        }
        stream => {
            let io = TokioIo::new(WatchedStream {
                inner: stream,
                activity: activity.clone(),
            });
            let conn = builders.http1.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &activity, &limits, stop).await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(%remote, "HTTP connection closed: {e}");
    }
}

/// Polls a hyper connection under the watchdog and the shutdown signal.
async fn drive<C>(
    conn: C,
    mut graceful_shutdown: impl FnMut(Pin<&mut C>),
    activity: &Activity,
    limits: &HttpLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String>
where
    C: Future<Output = hyper::Result<()>>,
{
    let mut conn = pin!(conn);
    let mut sleep = pin!(tokio::time::sleep(limits.header_timeout));
    let mut stopping = pin!(stop.wait_for(|s| *s));
    let mut shutting_down = false;
    poll_fn(|cx| {
        if !shutting_down && stopping.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            graceful_shutdown(conn.as_mut());
        }
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(r.map_err(|e| e.to_string()));
        }
        if let Some(deadline) = activity.deadline(limits) {
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(if activity.reading_head.load(Ordering::Relaxed) {
                    "request head not received within http.header_timeout".to_owned()
                } else {
                    "idle for http.idle_timeout".to_owned()
                }));
            }
        }
        Poll::Pending
    })
    .await
}

/// The TLS handshake, finished by `deadline`. A plain-HTTP request is answered 400 in clear
/// text first (curl and browsers then show why, instead of an empty reply).
async fn handshake(
    socket: TcpStream,
    acceptor: &TlsAcceptor,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, String> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, socket.peek(&mut first)).await {
        Err(_) => return Err("no TLS handshake within http.header_timeout".into()),
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Ok(Ok(0)) => return Err("closed before the TLS handshake".into()),
        Ok(Ok(_)) => {}
    }
    // A TLS record starts with its content type, 22 for a handshake (RFC 8446 §5.1); an
    // uppercase letter starts an HTTP method.
    if first[0].is_ascii_uppercase() {
        refuse_plain_http(socket, deadline).await;
        return Err("plain HTTP on the HTTPS port (answered 400)".into());
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
        Err(_) => Err("TLS handshake not finished within http.header_timeout".into()),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Answers a plain-HTTP request on an HTTPS port and closes the connection.
async fn refuse_plain_http(mut socket: TcpStream, deadline: Instant) {
    const BODY: &str = "This port serves HTTPS: use an https:// URL.\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let until = deadline.min(Instant::now() + Duration::from_secs(1));
    let _ = tokio::time::timeout_at(until, async {
        socket.write_all(response.as_bytes()).await?;
        socket.shutdown().await?;
        // Closing with unread bytes resets the connection, which can destroy the answer before
        // the client reads it: read what it sent (bounded) until it closes.
        let mut buf = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(
        limits: HttpLimits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        start_tls(limits, None).await
    }

    async fn start_tls(
        limits: HttpLimits,
        tls: Option<TlsAcceptor>,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let app = Router::new()
            .route(
                "/ip",
                get(|ConnectInfo(remote): ConnectInfo<SocketAddr>| async move { remote.to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, tls, async {
            let _ = rx.await;
        }));
        (addr, tx, task)
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(900),
            max_header_bytes: 16384,
            max_connections_per_ip: 4,
            h2c: false,
            shutdown_grace: Duration::from_secs(1),
        }
    }

    /// Reads until EOF or error; the bytes and the time it took.
    async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
        let t = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(t + limit, s.read(&mut buf)).await {
                Err(_) => return (out, None),
                Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(t.elapsed())),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn connect_info_and_keep_alive_idle_timeout() {
        let (addr, _stop, _task) = start(limits()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ip HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(&s.local_addr().unwrap().to_string()), "{text}");
        // Idle between requests: closed after idle_timeout (900 ms), not header_timeout (300 ms).
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        let closed = closed.expect("idle connection closed");
        assert!(closed >= Duration::from_millis(800), "closed after {closed:?}");
    }

    /// With h2c on, a client that sends half the HTTP/2 preface and stops is cut at the header
    /// timeout like a half-sent HTTP/1.1 head; HTTP/1.1 still works on the same port.
    #[tokio::test]
    async fn h2c_half_preface_is_cut_and_http1_goes_on() {
        let (addr, _stop, _task) = start(HttpLimits {
            h2c: true,
            ..limits()
        })
        .await;
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(&H2_PREFACE[..10]).await.unwrap();
        let (out, closed) = read_until_closed(&mut half, Duration::from_secs(3)).await;
        let closed = closed.expect("half preface closed");
        assert!(out.is_empty());
        assert!(closed < Duration::from_millis(800), "closed after {closed:?}");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ip HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (out, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn half_sent_head_is_cut_but_a_slow_handler_is_not() {
        let (addr, _stop, _task) = start(limits()).await;
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /ip HTTP/1.1\r\nHost: a\r\n").await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (out, closed) = read_until_closed(&mut half, Duration::from_secs(3)).await;
        let closed = closed.expect("half-sent request closed");
        assert!(out.is_empty());
        assert!(closed < Duration::from_millis(800), "closed after {closed:?}");
        // The handler takes 600 ms, twice the header timeout: it still answers.
        let (out, _) = read_until_closed(&mut slow, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("done"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn header_limits_answer_431() {
        let (addr, _stop, _task) = start(limits()).await;
        for req in [
            format!(
                "GET /ip HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20_000)
            ),
            format!(
                "GET /ip HTTP/1.1\r\nHost: a\r\n{}\r\n",
                "X-H: 1\r\n".repeat(MAX_HEADERS + 1)
            ),
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let (out, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
            assert!(closed.is_some());
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        }
    }

    #[tokio::test]
    async fn per_ip_cap_closes_extra_connections() {
        let (addr, _stop, _task) = start(limits()).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"G").await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let (_, closed) = read_until_closed(&mut extra, Duration::from_millis(250)).await;
        assert!(closed.is_some(), "fifth connection closed at once");
        // Once one is released, a new one is served.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ip HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (out, _) = read_until_closed(&mut s, Duration::from_secs(2)).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn graceful_shutdown_lets_a_request_finish() {
        let (addr, stop, task) = start(limits()).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let (_, closed) = read_until_closed(&mut idle, Duration::from_millis(300)).await;
        assert!(closed.is_some(), "idle connection closed at shutdown");
        let (out, _) = read_until_closed(&mut slow, Duration::from_secs(2)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("done"),
            "{text}"
        );
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    /// An HTTP/2 frame: 24-bit length, type, flags, stream id (RFC 9113 §4.1).
    fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Reads one frame: (type, flags, stream, payload); None when the connection ends.
    async fn h2_read<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((head[3], head[4], stream, payload))
    }

    #[tokio::test]
    async fn https_h2_answers_then_closes_on_the_idle_timeout_despite_pings() {
        let pki = crate::tls::tests::Pki::new("http-serve-h2");
        let tls = crate::tls::TlsServer::new(
            &pki.path("server.pem"),
            &pki.path("server.key"),
            crate::tls::ALPN_HTTP,
        )
        .unwrap();
        let (addr, _stop, _task) = start_tls(limits(), Some(tls.acceptor())).await;

        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(pki.path("ca.pem")).unwrap();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

        // The preface, empty SETTINGS, and GET /ip on stream 1 (HPACK, RFC 7541 appendix A:
        // :method GET, :scheme https, literal :path "/ip", literal :authority "a").
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(0x4, 0, 0, &[]));
        let block = [0x82, 0x87, 0x44, 3, b'/', b'i', b'p', 0x41, 1, b'a'];
        out.extend(h2_frame(0x1, 0x5, 1, &block));
        s.write_all(&out).await.unwrap();
        let mut body = Vec::new();
        let mut status_200 = false;
        loop {
            let (kind, flags, stream, payload) =
                tokio::time::timeout(Duration::from_secs(3), h2_read(&mut s))
                    .await
                    .unwrap()
                    .expect("the response");
            match (kind, stream) {
                (0x4, 0) if flags & 1 == 0 => s.write_all(&h2_frame(0x4, 1, 0, &[])).await.unwrap(),
                // :status 200 is index 8 of the static table.
                (0x1, 1) => status_200 = payload.first() == Some(&0x88),
                (0x0, 1) => body.extend_from_slice(&payload),
                _ => {}
            }
            if stream == 1 && flags & 1 != 0 {
                break;
            }
        }
        assert!(status_200, "no 200");
        assert_eq!(String::from_utf8_lossy(&body), local.to_string(), "ConnectInfo");

        // Idle: a PING (a control frame, no request) does not turn the idle timeout (900 ms)
        // into the header timeout (300 ms).
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(&h2_frame(0x6, 0, 0, &[0u8; 8])).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            while h2_read(&mut s).await.is_some() {}
            t.elapsed()
        })
        .await
        .expect("idle HTTP/2 connection closed");
        assert!(closed >= Duration::from_millis(800), "closed after {closed:?}");
    }
}
