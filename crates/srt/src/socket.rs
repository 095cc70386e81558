//! Safe SRT sockets over libsrt: create, set options, listen with an access callback, accept,
//! connect, send and receive whole messages, and read link statistics.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Once;
use std::time::Duration;

use crate::sys;

/// An SRT error: libsrt's code and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (SRT error {code})")]
pub struct SrtError {
    pub code: i32,
    pub message: String,
}

impl SrtError {
    fn last() -> SrtError {
        // SAFETY: both calls read libsrt's thread-local error state.
        let (code, message) = unsafe {
            let code = sys::srt_getlasterror(std::ptr::null_mut());
            let p = sys::srt_getlasterror_str();
            let m = if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            };
            sys::srt_clearlasterror();
            (code, m)
        };
        SrtError { code, message }
    }

    pub fn is_timeout(&self) -> bool {
        self.code == sys::SRT_EASYNCRCV || self.code == sys::SRT_ETIMEOUT
    }
}

/// Text of an SRT rejection reason code.
pub fn reject_reason_str(code: i32) -> String {
    if code >= 1000 {
        return match code {
            sys::SRT_REJX_BAD_REQUEST => "bad request (streamid)".into(),
            sys::SRT_REJX_UNAUTHORIZED => "unauthorized".into(),
            sys::SRT_REJX_FORBIDDEN => "forbidden".into(),
            sys::SRT_REJX_NOTFOUND => "not found".into(),
            sys::SRT_REJX_CONFLICT => "conflict (path busy)".into(),
            c => format!("rejected by the peer application ({c})"),
        };
    }
    // SAFETY: returns a static string for any code.
    unsafe {
        let p = sys::srt_rejectreason_str(code);
        if p.is_null() {
            return format!("reason {code}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

static INIT: Once = Once::new();

/// Starts libsrt once per process and routes its warnings and errors to our log.
pub fn startup() {
    INIT.call_once(|| {
        // SAFETY: srt_startup may be called once before any socket; the log handler is a plain
        // function that only reads the strings it is given.
        unsafe {
            sys::srt_startup();
            sys::srt_setlogflags(0x0f); // no time, thread name, level or area prefixes
            sys::srt_setloghandler(std::ptr::null_mut(), log_handler);
            sys::srt_setloglevel(4); // LOG_WARNING
        }
    });
}

unsafe extern "C" fn log_handler(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    _area: *const c_char,
    message: *const c_char,
) {
    if message.is_null() {
        return;
    }
    // SAFETY: libsrt passes a NUL-terminated message valid for the call.
    let msg = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    let msg = msg.trim().trim_start_matches(':').trim();
    if msg.contains("rsp(REJECT)") || msg.contains("rejecting per enforced encryption") {
        tracing::warn!(target: "libsrt", "SRT handshake refused: {msg}");
    } else if level <= 3 {
        tracing::warn!(target: "libsrt", "{msg}");
    } else {
        tracing::info!(target: "libsrt", "{msg}");
    }
}

/// Statistics of one SRT connection, from `srt_bistats`.
pub type PerfMon = sys::CBytePerfMon;

/// One SRT socket, closed on drop.
#[derive(Debug)]
pub struct Socket {
    id: sys::SRTSOCKET,
    closed: std::sync::atomic::AtomicBool,
}

fn check(rc: c_int) -> Result<c_int, SrtError> {
    if rc == sys::SRT_ERROR {
        Err(SrtError::last())
    } else {
        Ok(rc)
    }
}

/// Encodes a socket address as a C `sockaddr_in`/`sockaddr_in6`.
fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as c_int)
}

/// Decodes a C socket address.
///
/// # Safety
/// `sa` must be null or point to a valid `sockaddr_in` or `sockaddr_in6`.
unsafe fn from_sockaddr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `sa` points to a sockaddr of the family it names.
    unsafe {
        match (*sa).sa_family as c_int {
            libc::AF_INET => {
                let a = &*(sa as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                let a = &*(sa as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

impl Socket {
    pub fn new() -> Result<Socket, SrtError> {
        startup();
        // SAFETY: creating a socket has no preconditions once libsrt is started.
        let id = unsafe { sys::srt_create_socket() };
        if id == sys::SRT_INVALID_SOCK {
            return Err(SrtError::last());
        }
        Ok(Socket {
            id,
            closed: Default::default(),
        })
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    fn set_raw(id: sys::SRTSOCKET, opt: c_int, val: &[u8]) -> Result<(), SrtError> {
        // SAFETY: `val` is valid for `val.len()` bytes; libsrt copies it.
        check(unsafe { sys::srt_setsockflag(id, opt, val.as_ptr() as *const c_void, val.len() as c_int) })?;
        Ok(())
    }

    pub fn set_i32(&self, opt: c_int, v: i32) -> Result<(), SrtError> {
        Self::set_raw(self.id, opt, &v.to_ne_bytes())
    }

    pub fn set_i64(&self, opt: c_int, v: i64) -> Result<(), SrtError> {
        Self::set_raw(self.id, opt, &v.to_ne_bytes())
    }

    pub fn set_bool(&self, opt: c_int, v: bool) -> Result<(), SrtError> {
        // SRT's boolean options take a C `bool` (one byte) or an int; an int is accepted by all.
        self.set_i32(opt, v as i32)
    }

    pub fn set_str(&self, opt: c_int, v: &str) -> Result<(), SrtError> {
        Self::set_raw(self.id, opt, v.as_bytes())
    }

    pub fn get_i32(&self, opt: c_int) -> Result<i32, SrtError> {
        let mut v: i32 = 0;
        let mut len = size_of::<i32>() as c_int;
        // SAFETY: `v` has room for an int, as `len` says.
        check(unsafe { sys::srt_getsockflag(self.id, opt, &mut v as *mut i32 as *mut c_void, &mut len) })?;
        Ok(v)
    }

    /// The streamid the peer sent (listener side) or that was set (caller side).
    pub fn stream_id(&self) -> String {
        let mut buf = [0u8; 513];
        let mut len = buf.len() as c_int;
        // SAFETY: `buf` has room for `len` bytes.
        let rc = unsafe {
            sys::srt_getsockflag(
                self.id,
                sys::SRTO_STREAMID,
                buf.as_mut_ptr() as *mut c_void,
                &mut len,
            )
        };
        if rc == sys::SRT_ERROR {
            return String::new();
        }
        String::from_utf8_lossy(&buf[..(len.max(0) as usize).min(512)])
            .trim_end_matches('\0')
            .to_owned()
    }

    pub fn set_recv_timeout(&self, t: Duration) -> Result<(), SrtError> {
        self.set_i32(sys::SRTO_RCVTIMEO, t.as_millis().min(i32::MAX as u128) as i32)
    }

    pub fn set_send_timeout(&self, t: Duration) -> Result<(), SrtError> {
        self.set_i32(sys::SRTO_SNDTIMEO, t.as_millis().min(i32::MAX as u128) as i32)
    }

    pub fn bind(&self, addr: SocketAddr) -> Result<(), SrtError> {
        let (ss, len) = to_sockaddr(addr);
        // SAFETY: `ss` holds a valid address of length `len`.
        check(unsafe { sys::srt_bind(self.id, &ss as *const _ as *const libc::sockaddr, len) })?;
        Ok(())
    }

    pub fn listen(&self, backlog: i32) -> Result<(), SrtError> {
        // SAFETY: plain call on our socket.
        check(unsafe { sys::srt_listen(self.id, backlog) })?;
        Ok(())
    }

    /// Installs the access hook run for every incoming handshake (before accept).
    ///
    /// The hook gets the new socket (for options such as the passphrase), the peer address and
    /// the streamid, and returns `Err(reason)` to refuse the connection. It must live as long as
    /// the listener; it is leaked on purpose (one per listener, for the life of the process).
    pub fn set_listen_hook(&self, hook: Box<ListenHook>) -> Result<(), SrtError> {
        let raw = Box::into_raw(Box::new(hook)) as *mut c_void;
        // SAFETY: `raw` stays valid forever (leaked); the trampoline casts it back to the same type.
        check(unsafe { sys::srt_listen_callback(self.id, listen_trampoline, raw) })?;
        Ok(())
    }

    /// Blocks until a connection is accepted.
    pub fn accept(&self) -> Result<(Socket, Option<SocketAddr>), SrtError> {
        // SAFETY: storage and its length are valid for libsrt to fill.
        let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: as above.
        let id = unsafe { sys::srt_accept(self.id, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) };
        if id == sys::SRT_INVALID_SOCK {
            return Err(SrtError::last());
        }
        // SAFETY: libsrt filled `ss` with the peer's address.
        let peer = unsafe { from_sockaddr(&ss as *const _ as *const libc::sockaddr) };
        Ok((
            Socket {
                id,
                closed: Default::default(),
            },
            peer,
        ))
    }

    /// Connects as a caller (blocking, up to SRTO_CONNTIMEO).
    pub fn connect(&self, addr: SocketAddr) -> Result<(), SrtError> {
        let (ss, len) = to_sockaddr(addr);
        // SAFETY: `ss` holds a valid address of length `len`.
        let rc = unsafe { sys::srt_connect(self.id, &ss as *const _ as *const libc::sockaddr, len) };
        if rc == sys::SRT_ERROR {
            let mut e = SrtError::last();
            if e.code == sys::SRT_ECONNREJ {
                // SAFETY: plain call on our socket.
                let reason = unsafe { sys::srt_getrejectreason(self.id) };
                e.message = format!("{}: {}", e.message, reject_reason_str(reason));
            }
            return Err(e);
        }
        Ok(())
    }

    /// Sends one message (up to the payload size, 1316 bytes for MPEG-TS).
    pub fn send(&self, data: &[u8]) -> Result<usize, SrtError> {
        // SAFETY: `data` is valid for its length; ttl -1 (forever), in order.
        let n = check(unsafe {
            sys::srt_sendmsg(
                self.id,
                data.as_ptr() as *const c_char,
                data.len() as c_int,
                -1,
                1,
            )
        })?;
        Ok(n as usize)
    }

    /// Receives one message into `buf`; `Err` with `is_timeout()` when the receive timeout passed.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, SrtError> {
        // SAFETY: `buf` is valid for writes of its length.
        let n =
            check(unsafe { sys::srt_recvmsg(self.id, buf.as_mut_ptr() as *mut c_char, buf.len() as c_int) })?;
        Ok(n as usize)
    }

    /// Link statistics; `clear` resets the interval counters.
    pub fn stats(&self, clear: bool) -> Result<PerfMon, SrtError> {
        // SAFETY: CBytePerfMon is plain data; libsrt fills at most its own struct size, which our
        // struct (with spare room) exceeds.
        let mut perf: PerfMon = unsafe { zeroed() };
        check(unsafe { sys::srt_bistats(self.id, &mut perf, clear as c_int, 1) })?;
        Ok(perf)
    }

    pub fn state(&self) -> &'static str {
        // SAFETY: plain call on our socket.
        match unsafe { sys::srt_getsockstate(self.id) } {
            sys::SRTS_INIT => "init",
            sys::SRTS_OPENED => "opened",
            sys::SRTS_LISTENING => "listening",
            sys::SRTS_CONNECTING => "connecting",
            sys::SRTS_CONNECTED => "connected",
            sys::SRTS_BROKEN => "broken",
            sys::SRTS_CLOSING => "closing",
            sys::SRTS_CLOSED => "closed",
            _ => "nonexistent",
        }
    }
}

impl Socket {
    /// Closes the socket now (a blocked accept or receive on another thread returns).
    pub fn close(&self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            // SAFETY: closing our own socket, once.
            unsafe {
                sys::srt_close(self.id);
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.close();
    }
}

/// A handshake being accepted, as the listen hook sees it.
pub struct Incoming {
    id: sys::SRTSOCKET,
    pub peer: Option<SocketAddr>,
    pub stream_id: String,
}

impl Incoming {
    /// Sets the passphrase the peer must use (AES key length follows the peer's).
    pub fn set_passphrase(&self, pass: &str) -> Result<(), SrtError> {
        Socket::set_raw(self.id, sys::SRTO_PASSPHRASE, pass.as_bytes())
    }

    pub fn set_i32(&self, opt: c_int, v: i32) -> Result<(), SrtError> {
        Socket::set_raw(self.id, opt, &v.to_ne_bytes())
    }

    pub fn set_i64(&self, opt: c_int, v: i64) -> Result<(), SrtError> {
        Socket::set_raw(self.id, opt, &v.to_ne_bytes())
    }
}

/// Why a handshake is refused: one of the `SRT_REJX_*` codes.
pub type RejectCode = i32;
pub type ListenHook = dyn Fn(&Incoming) -> Result<(), RejectCode> + Send + Sync;

unsafe extern "C" fn listen_trampoline(
    opaque: *mut c_void,
    ns: sys::SRTSOCKET,
    _hsversion: c_int,
    peeraddr: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int {
    // SAFETY: `opaque` is the leaked Box<Box<ListenHook>> from set_listen_hook.
    let hook = unsafe { &*(opaque as *const Box<ListenHook>) };
    // SAFETY: libsrt passes the peer address and a NUL-terminated streamid (or null).
    let peer = unsafe { from_sockaddr(peeraddr) };
    let stream_id = if streamid.is_null() {
        String::new()
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(streamid) }.to_string_lossy().into_owned()
    };
    let inc = Incoming {
        id: ns,
        peer,
        stream_id,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&inc)));
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(code)) => {
            // SAFETY: plain call on the socket being accepted.
            unsafe { sys::srt_setrejectreason(ns, code) };
            -1
        }
        Err(_) => {
            // SAFETY: as above.
            unsafe { sys::srt_setrejectreason(ns, sys::SRT_REJX_BAD_REQUEST) };
            -1
        }
    }
}

/// Resolves `host:port` for a caller URL.
pub fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs().ok()?.next()
}

/// A `CString` of `s` without interior NULs.
pub fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("no NUL")
}
