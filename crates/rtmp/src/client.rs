//! The RTMP client: publishes to (push) or plays from (pull) another server over any
//! AsyncRead + AsyncWrite (TCP, or TLS for `rtmps://`). The command phase is a sans-IO state
//! machine, [`ClientSession`]: bytes in, messages to send and events out, with the protocol
//! control the server uses too (`session.rs`); [`connect`] is the thin async driver that runs
//! it up to publishing or playing.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_container::amf0::{decode_all, Amf0Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::chunk::{types, ChunkDecoder, ChunkEncoder, Limits, Message};
use crate::control::{self, CSID_COMMAND, CSID_STREAM};
use crate::session::{Control, WINDOW};
use crate::{handshake, Error};

/// An `rtmp://` or `rtmps://` URL: `rtmp[s]://HOST[:PORT]/APP/STREAM`, the stream name being
/// everything after the application (a platform's stream key, with its query if any).
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub app: String,
    pub stream: String,
}

impl std::fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl RtmpUrl {
    pub fn parse(url: &str) -> Result<RtmpUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("rtmps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("rtmp://") {
            (false, r)
        } else {
            return Err(format!("{:?} is not an rtmp:// or rtmps:// URL", mask(url)));
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{:?} has no application and stream name", mask(url)))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port: u16 = p.parse().map_err(|_| format!("bad port in {:?}", mask(url)))?;
                (h.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
            }
            _ => (authority.to_owned(), if tls { 443 } else { 1935 }),
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!("bad host in {:?}", mask(url)));
        }
        let (app, stream) = path
            .split_once('/')
            .ok_or_else(|| format!("{:?} needs rtmp://HOST/APP/STREAM", mask(url)))?;
        if app.is_empty() || stream.is_empty() {
            return Err(format!("{:?} needs rtmp://HOST/APP/STREAM", mask(url)));
        }
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("{:?} contains spaces or control characters", mask(url)));
        }
        Ok(RtmpUrl {
            tls,
            host,
            port,
            app: app.to_owned(),
            stream: stream.to_owned(),
        })
    }

    /// `rtmp://HOST:PORT/APP`, what `connect` announces as `tcUrl`.
    pub fn tc_url(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.app)
    }

    /// The URL with its stream name (the key) masked, for logs, the API and events.
    pub fn masked(&self) -> String {
        format!("{}/{}", self.tc_url(), mask_key(&self.stream))
    }
}

/// Masks a stream key: its first 4 characters are kept when it is long enough to stay secret.
pub fn mask_key(key: &str) -> String {
    let n = key.chars().count();
    if n >= 12 {
        format!("{}****", key.chars().take(4).collect::<String>())
    } else {
        "****".to_owned()
    }
}

/// The stream-key part of any `rtmp(s)://` URL masked (used before a URL is known to parse).
pub fn mask(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let after = &url[scheme_end..];
    let Some(a) = after.find('/') else {
        return url.to_owned();
    };
    match after[a + 1..].find('/').map(|b| a + 1 + b) {
        Some(i) => format!(
            "{}{}/{}",
            &url[..scheme_end],
            &after[..i],
            mask_key(&after[i + 1..])
        ),
        // No application/key split: everything after the host may be the key.
        None if a + 1 < after.len() => format!("{}{}/****", &url[..scheme_end], &after[..a]),
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Publish,
    Play,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    CreatingStream,
    Starting,
    Active,
}

/// What the session has to tell its driver.
#[derive(Debug)]
pub enum ClientEvent {
    /// The server accepted our publish (or play): media may flow.
    Started,
    /// Play: a media or data message from the server.
    Media(Message),
}

const TXN_CONNECT: f64 = 1.0;
const TXN_CREATE: f64 = 4.0;

/// The client side of one RTMP connection, after the handshake.
pub struct ClientSession {
    mode: Mode,
    url: RtmpUrl,
    enc: ChunkEncoder,
    dec: ChunkDecoder,
    state: State,
    stream_id: u32,
    /// Protocol control (chunk size, acknowledgements, pings), shared with the server.
    ctl: Control,
    /// Bytes left in the caller's buffer by the last [`receive`](Self::receive), already
    /// counted for acknowledgements.
    counted: usize,
}

impl ClientSession {
    pub fn new(url: RtmpUrl, mode: Mode, chunk_size: u32, limits: Limits) -> Self {
        ClientSession {
            mode,
            url,
            enc: ChunkEncoder::new(chunk_size as usize),
            dec: ChunkDecoder::new(limits),
            state: State::Connecting,
            stream_id: 0,
            ctl: Control::default(),
            counted: 0,
        }
    }

    /// The encoder of our outgoing chunks (media messages are encoded with it).
    pub fn encoder(&self) -> ChunkEncoder {
        self.enc
    }

    /// The message stream id `createStream` gave us.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    pub fn is_started(&self) -> bool {
        self.state == State::Active
    }

    /// The first messages after the handshake: our chunk size, window, and `connect`.
    pub fn start(&mut self) -> Vec<Bytes> {
        let small = ChunkEncoder::new(128);
        let mut out = vec![control::set_chunk_size(&small, self.enc.chunk_size as u32)];
        out.push(control::window_ack_size(&self.enc, WINDOW));
        let mut props = vec![
            ("app", Amf0Value::string(self.url.app.clone())),
            ("type", Amf0Value::string("nonprivate")),
            ("flashVer", Amf0Value::string("FMLE/3.0 (compatible; Sluice)")),
            ("tcUrl", Amf0Value::string(self.url.tc_url())),
        ];
        if self.mode == Mode::Play {
            props.push(("fpad", Amf0Value::Boolean(false)));
            props.push(("capabilities", Amf0Value::Number(15.0)));
            props.push(("audioCodecs", Amf0Value::Number(3191.0)));
            props.push(("videoCodecs", Amf0Value::Number(252.0)));
            props.push(("videoFunction", Amf0Value::Number(1.0)));
        }
        out.push(control::command(
            &self.enc,
            CSID_COMMAND,
            0,
            &[
                Amf0Value::string("connect"),
                Amf0Value::Number(TXN_CONNECT),
                Amf0Value::object(props),
            ],
        ));
        out
    }

    /// Takes what arrived in `buf` (the caller only appends to it between calls); appends what
    /// to send to `out` and returns what happened. Decoding stops right after
    /// [`ClientEvent::Started`]: what follows it (the first media of a play, often in the same
    /// read) stays in `buf` for the next call, so a caller that returns on `Started` loses
    /// nothing.
    pub fn receive(&mut self, buf: &mut BytesMut, out: &mut Vec<Bytes>) -> Result<Vec<ClientEvent>, Error> {
        let new = buf.len().saturating_sub(self.counted);
        if let Some(ack) = self.ctl.count_in(new, &self.enc) {
            out.push(ack);
        }
        let mut events = Vec::new();
        let result = self.decode(buf, out, &mut events);
        self.counted = buf.len();
        result.map(|()| events)
    }

    fn decode(
        &mut self,
        buf: &mut BytesMut,
        out: &mut Vec<Bytes>,
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), Error> {
        while let Some(m) = self.dec.decode(buf)? {
            if self.ctl.handle(&m, &mut self.dec, &self.enc, out)? {
                continue;
            }
            match m.type_id {
                types::COMMAND_AMF0 => {
                    self.command(&m.payload, out, events)?;
                    if matches!(events.last(), Some(ClientEvent::Started)) {
                        return Ok(());
                    }
                }
                types::AUDIO | types::VIDEO | types::DATA_AMF0 | types::AGGREGATE
                    if self.mode == Mode::Play =>
                {
                    events.push(ClientEvent::Media(m));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn command(
        &mut self,
        payload: &[u8],
        out: &mut Vec<Bytes>,
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), Error> {
        let vals = decode_all(payload)?;
        let name = vals.first().and_then(Amf0Value::as_str).unwrap_or("");
        let txn = vals.get(1).and_then(Amf0Value::as_f64).unwrap_or(0.0);
        match (name, self.state) {
            ("_result", State::Connecting) if txn == TXN_CONNECT => {
                let key = Amf0Value::string(self.url.stream.clone());
                if self.mode == Mode::Publish {
                    for (cmd, t) in [("releaseStream", 2.0), ("FCPublish", 3.0)] {
                        out.push(control::command(
                            &self.enc,
                            CSID_COMMAND,
                            0,
                            &[
                                Amf0Value::string(cmd),
                                Amf0Value::Number(t),
                                Amf0Value::Null,
                                key.clone(),
                            ],
                        ));
                    }
                }
                out.push(control::command(
                    &self.enc,
                    CSID_COMMAND,
                    0,
                    &[
                        Amf0Value::string("createStream"),
                        Amf0Value::Number(TXN_CREATE),
                        Amf0Value::Null,
                    ],
                ));
                self.state = State::CreatingStream;
            }
            ("_result", State::CreatingStream) if txn == TXN_CREATE => {
                self.stream_id = vals.get(3).and_then(Amf0Value::as_f64).unwrap_or(1.0) as u32;
                let key = Amf0Value::string(self.url.stream.clone());
                let cmd = match self.mode {
                    Mode::Publish => vec![
                        Amf0Value::string("publish"),
                        Amf0Value::Number(5.0),
                        Amf0Value::Null,
                        key,
                        Amf0Value::string("live"),
                    ],
                    Mode::Play => vec![
                        Amf0Value::string("play"),
                        Amf0Value::Number(5.0),
                        Amf0Value::Null,
                        key,
                        Amf0Value::Number(-1000.0),
                    ],
                };
                if self.mode == Mode::Play {
                    // Buffer length, as players send it: some servers wait for it.
                    let mut p = 3u16.to_be_bytes().to_vec();
                    p.extend_from_slice(&self.stream_id.to_be_bytes());
                    p.extend_from_slice(&3000u32.to_be_bytes());
                    out.push(self.enc.encode_to_bytes(2, 0, types::USER_CONTROL, 0, &p));
                }
                out.push(control::command(&self.enc, CSID_STREAM, self.stream_id, &cmd));
                self.state = State::Starting;
            }
            ("_error", _) => {
                return Err(Error::Protocol(format!(
                    "the server refused: {}",
                    describe(&vals)
                )));
            }
            ("onStatus", _) => {
                let info = vals.get(3);
                let code = info
                    .and_then(|i| i.get("code"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("");
                let level = info
                    .and_then(|i| i.get("level"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("");
                if level == "error"
                    || code.ends_with(".BadName")
                    || code.ends_with(".Failed")
                    || code.ends_with(".StreamNotFound")
                {
                    return Err(Error::Protocol(format!(
                        "the server refused: {}",
                        describe(&vals)
                    )));
                }
                let started = match self.mode {
                    Mode::Publish => code == "NetStream.Publish.Start",
                    Mode::Play => code == "NetStream.Play.Start" || code == "NetStream.Play.Reset",
                };
                if started && self.state != State::Active {
                    self.state = State::Active;
                    events.push(ClientEvent::Started);
                }
                if code == "NetStream.Play.UnpublishNotify" || code == "NetStream.Play.Stop" {
                    return Err(Error::Protocol(format!("the server ended the stream: {code}")));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// `code: description` of a refusal, as the server worded it.
fn describe(vals: &[Amf0Value]) -> String {
    let info = vals.get(3);
    let code = info.and_then(|i| i.get("code")).and_then(Amf0Value::as_str);
    let desc = info
        .and_then(|i| i.get("description"))
        .and_then(Amf0Value::as_str);
    match (code, desc) {
        (Some(c), Some(d)) if !d.is_empty() => format!("{c}: {d}"),
        (Some(c), _) => c.to_owned(),
        _ => format!("{vals:?}"),
    }
    .chars()
    .filter(|c| !c.is_control())
    .take(300)
    .collect()
}

/// Runs the handshake and the command phase on `io` until the server accepts our publish or
/// play, within `timeout`. Bytes that arrived after that point stay in `buf` for the caller.
pub async fn connect<S>(
    io: &mut S,
    session: &mut ClientSession,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, async {
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.subsec_nanos())
            | 1;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        };
        io.write_all(&handshake::client_c0c1(&mut random)).await?;
        let mut s = vec![0u8; 1 + 2 * handshake::PACKET];
        io.read_exact(&mut s).await?;
        io.write_all(&handshake::client_c2(&s)?).await?;
        for m in session.start() {
            io.write_all(&m).await?;
        }
        loop {
            let mut out = Vec::new();
            let events = session.receive(buf, &mut out)?;
            for m in &out {
                io.write_all(m).await?;
            }
            if events.iter().any(|e| matches!(e, ClientEvent::Started)) {
                return Ok(());
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            if io.read_buf(buf).await? == 0 {
                return Err(Error::Protocol("the server closed the connection".into()));
            }
        }
    })
    .await
    .map_err(|_| Error::Timeout("the server did not accept the stream in time".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RtmpUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.app.as_str()),
            ("a.rtmp.youtube.com", 1935, "live2")
        );
        assert_eq!(u.stream, "abcd-efgh-ijkl-mnop");
        assert_eq!(u.masked(), "rtmp://a.rtmp.youtube.com:1935/live2/abcd****");
        assert!(!format!("{u:?}").contains("mnop"));
        let t = RtmpUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-AbCdEf?s_bl=1").unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert_eq!(t.stream, "FB-123-0-AbCdEf?s_bl=1");
        let tw = RtmpUrl::parse("rtmp://live.twitch.tv/app/live_1234_secret").unwrap();
        assert_eq!(tw.tc_url(), "rtmp://live.twitch.tv:1935/app");
        assert_eq!(RtmpUrl::parse("rtmps://h/app/k").unwrap().port, 443);
        assert_eq!(RtmpUrl::parse("rtmp://[::1]:1936/app/k").unwrap().host, "::1");
        for bad in [
            "http://h/a/k",
            "rtmp://h",
            "rtmp://h/app",
            "rtmp://h/app/",
            "rtmp://:1/a/k",
            "rtmp://h:x/a/k",
            "rtmp://u@h/a/k",
            "rtmp://h/a/k k",
        ] {
            assert!(RtmpUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(mask("rtmp://h/app/supersecretkey"), "rtmp://h/app/supe****");
        assert_eq!(mask("rtmp://h/app/short"), "rtmp://h/app/****");
        assert_eq!(mask("rtmp://h/onlysecretkeyhere"), "rtmp://h/****");
    }

    /// The command phase against a scripted server: connect, createStream, publish, onStatus.
    /// A server's `_result` of transaction `txn`.
    fn server_result(server: &ChunkEncoder, txn: f64, extra: Amf0Value) -> Bytes {
        control::command(
            server,
            3,
            0,
            &[
                Amf0Value::string("_result"),
                Amf0Value::Number(txn),
                Amf0Value::Null,
                extra,
            ],
        )
    }

    #[test]
    fn publish_command_phase() {
        let url = RtmpUrl::parse("rtmp://h/live/key").unwrap();
        let mut c = ClientSession::new(url, Mode::Publish, 4096, Limits::default());
        let first = c.start();
        assert_eq!(first.len(), 3);
        let server = ChunkEncoder::new(128);
        let result = |txn: f64, extra: Amf0Value| server_result(&server, txn, extra);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        buf.extend_from_slice(&result(1.0, Amf0Value::Null));
        assert!(c.receive(&mut buf, &mut out).unwrap().is_empty());
        assert_eq!(out.len(), 3, "releaseStream, FCPublish, createStream");
        out.clear();
        buf.extend_from_slice(&result(4.0, Amf0Value::Number(7.0)));
        c.receive(&mut buf, &mut out).unwrap();
        assert_eq!(c.stream_id(), 7);
        assert_eq!(out.len(), 1, "publish");
        out.clear();
        buf.extend_from_slice(&control::on_status(
            &server,
            "status",
            "NetStream.Publish.Start",
            "go",
        ));
        let ev = c.receive(&mut buf, &mut out).unwrap();
        assert!(matches!(ev.as_slice(), [ClientEvent::Started]));
        assert!(c.is_started());
        // A ping is answered.
        buf.extend_from_slice(&control::user_control(&server, control::USER_PING_REQUEST, 42));
        c.receive(&mut buf, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    /// The first media of a play often arrives in the same read as `NetStream.Play.Start`: it
    /// stays in the buffer for the caller's next `receive` (it was lost, and a pull never got
    /// its sequence headers, when the server was quick).
    #[test]
    fn media_after_play_start_in_the_same_read_is_kept() {
        let url = RtmpUrl::parse("rtmp://h/live/key").unwrap();
        let mut c = ClientSession::new(url, Mode::Play, 4096, Limits::default());
        c.start();
        let server = ChunkEncoder::new(128);
        let result = |txn: f64, extra: Amf0Value| server_result(&server, txn, extra);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        buf.extend_from_slice(&result(1.0, Amf0Value::Null));
        c.receive(&mut buf, &mut out).unwrap();
        buf.extend_from_slice(&result(4.0, Amf0Value::Number(1.0)));
        c.receive(&mut buf, &mut out).unwrap();
        buf.extend_from_slice(&control::on_status(
            &server,
            "status",
            "NetStream.Play.Start",
            "go",
        ));
        let header = [0x17u8, 0, 0, 0, 0, 1, 2, 3];
        buf.extend_from_slice(&server.encode_to_bytes(6, 0, types::VIDEO, 1, &header));
        let ev = c.receive(&mut buf, &mut out).unwrap();
        assert!(matches!(ev.as_slice(), [ClientEvent::Started]), "{ev:?}");
        assert!(!buf.is_empty(), "the video message was consumed with the status");
        let ev = c.receive(&mut buf, &mut out).unwrap();
        match ev.as_slice() {
            [ClientEvent::Media(m)] => assert_eq!(&m.payload[..], &header),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_are_errors_with_the_servers_words() {
        let url = RtmpUrl::parse("rtmp://h/live/key").unwrap();
        let mut c = ClientSession::new(url, Mode::Publish, 4096, Limits::default());
        c.start();
        let server = ChunkEncoder::new(128);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&control::on_status(
            &server,
            "error",
            "NetStream.Publish.BadName",
            "already publishing",
        ));
        let e = c.receive(&mut buf, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("NetStream.Publish.BadName: already publishing"), "{e}");
    }
}
