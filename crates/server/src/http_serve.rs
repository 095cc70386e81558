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
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most header lines a request may have (hyper's default, set explicitly).
pub const MAX_HEADERS: usize = 100;

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
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully (see the
/// module documentation). Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let local = listener.local_addr().ok();
    let mut shutdown = pin!(shutdown);
    let (stop_tx, stop_rx) = watch::channel(false);
    let per_ip = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_headers(MAX_HEADERS)
        .max_header_size(limits.max_header_bytes)
        // Timed by our watchdog instead (see the module documentation).
        .header_read_timeout(None);
    let builder = Arc::new(builder);
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
            builder.clone(),
            limits.clone(),
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

/// The socket, noting the first bytes of each next request for the watchdog.
struct WatchedStream {
    inner: TcpStream,
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

/// Drives one connection until it ends, its watchdog fires, or shutdown's grace runs out.
async fn connection(
    socket: TcpStream,
    remote: SocketAddr,
    app: Router,
    builder: Arc<hyper::server::conn::http1::Builder>,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
    _slot: IpSlot,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedStream {
        inner: socket,
        activity: activity.clone(),
    });
    let router = TowerToHyperService::new(app);
    let svc_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        svc_activity.request_started();
        let guard = RequestGuard(svc_activity.clone());
        let fut = hyper::service::Service::call(&router, req);
        async move {
            let res: Response<Body> = fut.await?;
            Ok::<_, std::convert::Infallible>(res.map(|inner| GuardedBody { inner, _guard: guard }))
        }
    });
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut sleep = pin!(tokio::time::sleep(limits.header_timeout));
    let mut stopping = pin!(stop.wait_for(|s| *s));
    let mut shutting_down = false;
    let outcome = poll_fn(|cx| {
        if !shutting_down && stopping.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            conn.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(r.map_err(|e| e.to_string()));
        }
        if let Some(deadline) = activity.deadline(&limits) {
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
    .await;
    if let Err(e) = outcome {
        tracing::debug!(%remote, "HTTP connection closed: {e}");
    }
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
        let task = tokio::spawn(serve(listener, app, limits, async {
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
}
