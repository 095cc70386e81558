//! The shared UDP port: one socket per local address on the same port (so every datagram's
//! destination address is known without `IP_PKTINFO`), and the routing of datagrams to sessions,
//! by ICE username fragment for STUN and by the peer's address for DTLS/SRTP.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::stun::{self, Kind};

/// One datagram for a session.
pub(crate) struct Datagram {
    pub data: Bytes,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub at: Instant,
}

/// Datagrams queued for one session before the port drops them (the session is not keeping up).
pub(crate) const SESSION_QUEUE: usize = 1024;

pub(crate) struct Udp {
    sockets: Vec<Arc<UdpSocket>>,
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
    pub async fn bind(listen: SocketAddr) -> io::Result<Arc<Udp>> {
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
        let udp = Arc::new(Udp {
            sockets,
            routes: Mutex::new(Routes::default()),
            dropped_unknown: AtomicU64::new(0),
        });
        for s in &udp.sockets {
            tokio::spawn(recv_loop(udp.clone(), s.clone()));
        }
        Ok(udp)
    }

    /// The addresses of the bound sockets: the server's host candidates.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().filter_map(|s| s.local_addr().ok()).collect()
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

    /// Sends from the socket bound to `source` (or the first one).
    pub async fn send(&self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let sock = self
            .sockets
            .iter()
            .find(|s| s.local_addr().is_ok_and(|a| a == source))
            .unwrap_or(&self.sockets[0]);
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
