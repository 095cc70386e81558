//! The shared port: one UDP socket per local address on the same port (so every datagram's
//! destination address is known without `IP_PKTINFO`), an ICE-TCP listener (RFC 6544 passive
//! candidates, RFC 4571 framing) as the fallback for networks that block UDP, and the routing of
//! packets to sessions, by ICE username fragment for STUN and by the peer's address after that.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::stun::{self, Kind};

/// One datagram for a session.
pub(crate) struct Datagram {
    pub data: Bytes,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub at: Instant,
    pub proto: Protocol,
}

/// Datagrams queued for one session before the port drops them (the session is not keeping up).
pub(crate) const SESSION_QUEUE: usize = 1024;

/// One packet a session wants sent.
pub(crate) struct Out {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

/// The packets of one round of a session, back to back in one buffer, so that a run of them to
/// one peer is already the contiguous buffer a GSO send takes (no copy to assemble it).
#[derive(Default)]
pub(crate) struct Batch {
    buf: Vec<u8>,
    items: Vec<(Protocol, SocketAddr, SocketAddr, usize, usize)>,
}

impl Batch {
    pub fn push(&mut self, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.items.push((proto, source, destination, start, data.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
        // A GOP burst to a new viewer makes one big round; do not keep that much.
        self.buf.shrink_to(64 * 1024);
        self.items.shrink_to(64);
    }

    /// Runs `f` with this thread's batch, empty: a round fills and sends it without yielding,
    /// so the sessions of one worker thread share one buffer (up to 64 KiB kept) instead of
    /// holding one each. A nested call gets a batch of its own.
    pub fn with<T>(f: impl FnOnce(&mut Batch) -> T) -> T {
        thread_local! {
            static BATCH: std::cell::RefCell<Option<Batch>> = const { std::cell::RefCell::new(None) };
        }
        let mut batch = BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default();
        batch.clear();
        let r = f(&mut batch);
        batch.clear();
        BATCH.with(|b| *b.borrow_mut() = Some(batch));
        r
    }

    fn data(&self, i: usize) -> &[u8] {
        let (_, _, _, start, len) = self.items[i];
        &self.buf[start..start + len]
    }

    /// The packets from `i` on, owned (for the rare send that has to wait).
    fn rest(&self, i: usize) -> Vec<Out> {
        (i..self.items.len())
            .map(|k| {
                let (proto, source, destination, _, _) = self.items[k];
                Out {
                    proto,
                    source,
                    destination,
                    data: self.data(k).to_vec(),
                }
            })
            .collect()
    }
}

/// Largest GSO batch: the kernel takes up to 64 segments and 64 KB per send.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 60_000;

pub(crate) struct Udp {
    sockets: Vec<Arc<UdpSocket>>,
    /// The sockets' local addresses, by index (read once: no getsockname per send).
    addrs: Vec<SocketAddr>,
    /// quinn-udp's per-socket state (GSO support and segment limit), by index of `sockets`.
    gso: Vec<quinn_udp::UdpSocketState>,
    /// Local addresses of the ICE-TCP listener, offered as passive TCP candidates.
    tcp_addrs: Vec<SocketAddr>,
    /// Open ICE-TCP connections by the peer's address: where a session's TCP packets go.
    tcp_conns: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    routes: Mutex<Routes>,
    /// Datagrams dropped because no session owns them (unknown ufrag or address, garbage).
    pub dropped_unknown: AtomicU64,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, mpsc::Sender<Datagram>>,
    by_addr: HashMap<SocketAddr, String>,
}

impl Udp {
    /// Binds `listen`; an unspecified address binds every IPv4 address of this host on its port.
    pub async fn bind(listen: SocketAddr, tcp_listen: Option<SocketAddr>) -> io::Result<Arc<Udp>> {
        let mut ips = Vec::new();
        if listen.ip().is_unspecified() {
            for iface in if_addrs::get_if_addrs()? {
                if let IpAddr::V4(v4) = iface.ip() {
                    if !v4.is_link_local() && !ips.contains(&IpAddr::V4(v4)) {
                        ips.push(IpAddr::V4(v4));
                    }
                }
            }
            if ips.is_empty() {
                ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
        } else {
            ips.push(listen.ip());
        }
        let mut sockets = Vec::new();
        let mut port = listen.port();
        for ip in ips {
            let sock = UdpSocket::bind(SocketAddr::new(ip, port)).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot bind UDP {}: {e}", SocketAddr::new(ip, port)),
                )
            })?;
            // Port 0 in tests: every further address takes the port the first one got.
            port = sock.local_addr()?.port();
            sockets.push(Arc::new(sock));
        }
        let mut tcp_addrs = Vec::new();
        let mut tcp_listener = None;
        if let Some(tl) = tcp_listen {
            let l = TcpListener::bind(tl)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for ICE-TCP on {tl}: {e}")))?;
            let port = l.local_addr()?.port();
            if tl.ip().is_unspecified() {
                for s in &sockets {
                    tcp_addrs.push(SocketAddr::new(s.local_addr()?.ip(), port));
                }
            } else {
                tcp_addrs.push(l.local_addr()?);
            }
            tcp_listener = Some(l);
        }
        let mut gso = Vec::new();
        let mut addrs = Vec::new();
        for s in &sockets {
            gso.push(quinn_udp::UdpSocketState::new((&**s).into())?);
            addrs.push(s.local_addr()?);
        }
        let udp = Arc::new(Udp {
            sockets,
            addrs,
            gso,
            tcp_addrs,
            tcp_conns: Mutex::new(HashMap::new()),
            routes: Mutex::new(Routes::default()),
            dropped_unknown: AtomicU64::new(0),
        });
        for s in &udp.sockets {
            tokio::spawn(recv_loop(udp.clone(), s.clone()));
        }
        if let Some(l) = tcp_listener {
            tokio::spawn(tcp_accept(udp.clone(), l));
        }
        Ok(udp)
    }

    /// The addresses of the bound sockets: the server's host candidates.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The ICE-TCP listener's addresses (passive TCP candidates).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    pub fn port(&self) -> u16 {
        self.local_addrs().first().map_or(0, |a| a.port())
    }

    pub fn register(&self, ufrag: &str, tx: mpsc::Sender<Datagram>) {
        self.routes.lock().by_ufrag.insert(ufrag.to_owned(), tx);
    }

    pub fn unregister(&self, ufrag: &str) {
        let mut r = self.routes.lock();
        r.by_ufrag.remove(ufrag);
        r.by_addr.retain(|_, u| u != ufrag);
    }

    fn socket_for(&self, source: SocketAddr) -> &Arc<UdpSocket> {
        &self.sockets[self.socket_index(source)]
    }

    fn socket_index(&self, source: SocketAddr) -> usize {
        if self.sockets.len() == 1 {
            return 0;
        }
        self.addrs.iter().position(|a| *a == source).unwrap_or(0)
    }

    /// Sends a session's packets now, batching runs of equal-size datagrams to one peer into one
    /// GSO send. Returns what could not be sent because the socket buffer is full, in order.
    pub fn send_all(&self, batch: &Batch) -> Vec<Out> {
        let n = batch.items.len();
        let mut i = 0;
        while i < n {
            let (proto, source, destination, start, seg) = batch.items[i];
            if proto != Protocol::Udp {
                self.send_tcp(destination, batch.data(i));
                i += 1;
                continue;
            }
            let idx = self.socket_index(source);
            let state = &self.gso[idx];
            let max = state.max_gso_segments().min(GSO_MAX_SEGMENTS);
            let mut j = i + 1;
            let mut total = seg;
            while j < n && j - i < max && total + seg <= GSO_MAX_BYTES {
                let (p, s, d, _, len) = batch.items[j];
                if p != Protocol::Udp || s != source || d != destination || len > seg {
                    break;
                }
                total += len;
                j += 1;
                if len < seg {
                    break; // a shorter datagram can only end a GSO batch
                }
            }
            let sock = &self.sockets[idx];
            let res = if j - i == 1 {
                sock.try_send_to(batch.data(i), destination).map(|_| ())
            } else {
                let t = quinn_udp::Transmit {
                    destination,
                    ecn: None,
                    contents: &batch.buf[start..start + total],
                    segment_size: Some(seg),
                    src_ip: None,
                };
                sock.try_io(tokio::io::Interest::WRITABLE, || {
                    state.try_send((&**sock).into(), &t)
                })
            };
            match res {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return batch.rest(i),
                Err(e) => tracing::debug!(%destination, "WebRTC UDP send failed: {e}"),
                Ok(()) => {}
            }
            i = j;
        }
        Vec::new()
    }

    /// Queues a packet on the peer's ICE-TCP connection; dropped if it is gone or full (as UDP).
    fn send_tcp(&self, destination: SocketAddr, data: &[u8]) {
        if let Some(tx) = self.tcp_conns.lock().get(&destination) {
            let _ = tx.try_send(Bytes::copy_from_slice(data));
        }
    }

    /// Sends from the socket bound to `source` (or the first one).
    pub async fn send(&self, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if proto != Protocol::Udp {
            self.send_tcp(destination, data);
            return;
        }
        let sock = self.socket_for(source);
        let res = match sock.try_send_to(data, destination) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.send_to(data, destination).await,
            r => r,
        };
        if let Err(e) = res {
            tracing::debug!(%destination, "WebRTC UDP send failed: {e}");
        }
    }

    fn route(&self, data: &[u8], source: SocketAddr) -> Option<mpsc::Sender<Datagram>> {
        let mut r = self.routes.lock();
        match stun::classify(data) {
            Kind::Stun {
                local_ufrag: Some(ufrag),
            } => {
                let tx = r.by_ufrag.get(ufrag)?.clone();
                if r.by_addr.get(&source).is_none_or(|u| u != ufrag) {
                    r.by_addr.insert(source, ufrag.to_owned());
                }
                Some(tx)
            }
            // Responses (no USERNAME) and media go to whoever owns the address.
            Kind::Stun { local_ufrag: None } | Kind::Other => {
                let ufrag = r.by_addr.get(&source)?;
                r.by_ufrag.get(ufrag).cloned()
            }
            Kind::Garbage => None,
        }
    }
}

async fn recv_loop(udp: Arc<Udp>, sock: Arc<UdpSocket>) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut last_log = Instant::now() - std::time::Duration::from_secs(60);
    loop {
        buf.clear();
        buf.reserve(2048);
        let (n, source) = match sock.recv_buf_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from a peer that left shows up here; it is not fatal.
                tracing::trace!("WebRTC UDP receive error: {e}");
                continue;
            }
        };
        let data = buf.split_to(n).freeze();
        match udp.route(&data, source) {
            Some(tx) => {
                let d = Datagram {
                    data,
                    source,
                    destination: local,
                    at: Instant::now(),
                    proto: Protocol::Udp,
                };
                if tx.try_send(d).is_err() {
                    udp.dropped_unknown.fetch_add(1, Relaxed);
                }
            }
            None => {
                let dropped = udp.dropped_unknown.fetch_add(1, Relaxed) + 1;
                if last_log.elapsed().as_secs() >= 10 {
                    last_log = Instant::now();
                    tracing::info!(
                        %source,
                        dropped,
                        "WebRTC: dropping datagrams that belong to no session (unknown ICE ufrag or address)"
                    );
                }
            }
        }
    }
}

/// A peer has this long to send its first valid ICE check over a new TCP connection.
const TCP_FIRST_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

async fn tcp_accept(udp: Arc<Udp>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(tcp_conn(udp.clone(), stream, remote));
            }
            Err(e) => {
                tracing::warn!("ICE-TCP accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One ICE-TCP connection: RFC 4571 frames (a 16-bit length, then the packet) both ways.
async fn tcp_conn(udp: Arc<Udp>, stream: TcpStream, remote: SocketAddr) {
    let Ok(local) = stream.local_addr() else { return };
    let (mut rd, wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    udp.tcp_conns.lock().insert(remote, tx);
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::new(wr);
        while let Some(p) = rx.recv().await {
            let mut next = Some(p);
            // Write everything queued, then flush once.
            while let Some(p) = next {
                if w.write_u16(p.len() as u16).await.is_err() || w.write_all(&p).await.is_err() {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    let mut routed = false;
    let started = Instant::now();
    let reason = loop {
        let len = if routed {
            rd.read_u16().await
        } else {
            match tokio::time::timeout(TCP_FIRST_CHECK.saturating_sub(started.elapsed()), rd.read_u16()).await
            {
                Ok(r) => r,
                Err(_) => break "no valid ICE check in time".to_owned(),
            }
        };
        let len = match len {
            Ok(l) => l as usize,
            Err(_) => break "closed".to_owned(),
        };
        let mut buf = vec![0u8; len];
        if let Err(e) = rd.read_exact(&mut buf).await {
            break format!("read: {e}");
        }
        let data = Bytes::from(buf);
        let Some(tx) = udp.route(&data, remote) else {
            udp.dropped_unknown.fetch_add(1, Relaxed);
            if !routed {
                break "the first packet is not an ICE check for a known session".to_owned();
            }
            continue;
        };
        routed = true;
        let d = Datagram {
            data,
            source: remote,
            destination: local,
            at: Instant::now(),
            proto: Protocol::Tcp,
        };
        let _ = tx.try_send(d);
    };
    tracing::debug!(%remote, "ICE-TCP connection ends: {reason}");
    writer.abort();
    udp.tcp_conns.lock().remove(&remote);
    udp.routes.lock().by_addr.remove(&remote);
}
