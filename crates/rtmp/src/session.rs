//! The RTMP session state machine both ends share, sans-IO: protocol control (chunk size,
//! windows and acknowledgements, pings), command parsing, and the server's command phase
//! (connect, createStream, ... up to publish or play). The server (`server.rs`) and the client
//! (`client.rs`, push and pull) run their connections through it, so both speak from one
//! implementation with the same chunk codec and bounds.

use bytes::Bytes;
use sluice_container::amf0::{self, Amf0Value};

use crate::chunk::{types, ChunkDecoder, ChunkEncoder, Message};
use crate::control::{self, STREAM_ID};
use crate::Error;

/// The window we announce to the peer, and assume until it announces its own.
pub const WINDOW: u32 = 2_500_000;

/// Protocol and user control of one connection, either end: what the peer's control messages
/// change, and the acknowledgements we owe it.
#[derive(Debug)]
pub struct Control {
    received: u64,
    acked: u64,
    peer_window: u32,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            received: 0,
            acked: 0,
            peer_window: WINDOW,
        }
    }
}

impl Control {
    /// Counts `n` bytes received; returns the acknowledgement to send when one is due.
    pub fn count_in(&mut self, n: usize, enc: &ChunkEncoder) -> Option<Bytes> {
        self.received += n as u64;
        if self.received - self.acked >= self.peer_window as u64 {
            self.acked = self.received;
            return Some(control::ack(enc, self.received as u32));
        }
        None
    }

    /// Handles `m` if it is a protocol or user control message (true), appending what to answer
    /// (a ping response) to `out`.
    pub fn handle(
        &mut self,
        m: &Message,
        dec: &mut ChunkDecoder,
        enc: &ChunkEncoder,
        out: &mut Vec<Bytes>,
    ) -> Result<bool, Error> {
        let p = &m.payload;
        let u32_at = |i: usize| {
            p.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match m.type_id {
            types::SET_CHUNK_SIZE => {
                let size = u32_at(0).ok_or_else(|| Error::Protocol("short Set Chunk Size".into()))?;
                dec.set_chunk_size(size)?;
            }
            types::ABORT => {
                if let Some(csid) = u32_at(0) {
                    dec.abort(csid);
                }
            }
            types::WINDOW_ACK_SIZE => {
                if let Some(w) = u32_at(0) {
                    self.peer_window = w.max(4096);
                }
            }
            types::ACK | types::SET_PEER_BANDWIDTH => {}
            types::USER_CONTROL => {
                if p.len() >= 6 && u16::from_be_bytes([p[0], p[1]]) == control::USER_PING_REQUEST {
                    let t = u32_at(2).unwrap_or(0);
                    out.push(control::user_control(enc, control::USER_PING_RESPONSE, t));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A command message: its name, transaction id and arguments; `None` for other messages.
pub fn parse_command(m: &Message) -> Result<Option<(String, f64, Vec<Amf0Value>)>, Error> {
    let payload = match m.type_id {
        types::COMMAND_AMF0 => &m.payload[..],
        // AMF3 command messages start with a format byte, then AMF0 values.
        types::COMMAND_AMF3 => m.payload.get(1..).unwrap_or(&[]),
        _ => return Ok(None),
    };
    let values = amf0::decode_all(payload)?;
    let mut it = values.into_iter();
    let name = match it.next() {
        Some(Amf0Value::String(s)) => s,
        _ => return Err(Error::Protocol("command message without a command name".into())),
    };
    let txn = it.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
    Ok(Some((name, txn, it.collect())))
}

/// `onMetaData` values from a data message (`@setDataFrame`, `onMetaData`, {...}) or (`onMetaData`, {...}).
pub fn metadata_of(payload: &Bytes) -> Option<Amf0Value> {
    let values = amf0::decode_all(payload).ok()?;
    let mut it = values
        .into_iter()
        .skip_while(|v| v.as_str() == Some("@setDataFrame"));
    if it.next()?.as_str() != Some("onMetaData") {
        return None;
    }
    it.next()
}

/// The stream path from the connect `app` and the publish/play name, and the query they carry
/// (`cam1?user=u&pass=p`, as OBS sends credentials in the stream key; the name's query first,
/// then the app's).
pub fn path_of(app: &str, name: &str) -> (String, String) {
    let (name, name_q) = name.split_once('?').unwrap_or((name, ""));
    let (app, app_q) = app.split_once('?').unwrap_or((app, ""));
    let parts: Vec<&str> = [app, name]
        .iter()
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
        .collect();
    let query: Vec<&str> = [name_q, app_q].into_iter().filter(|q| !q.is_empty()).collect();
    (parts.join("/"), query.join("&"))
}

/// What a client asked for at the end of the command phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Publish {
        path: String,
        query: String,
        /// Metadata sent before `publish` (some encoders do).
        meta: Option<Amf0Value>,
    },
    Play {
        path: String,
        query: String,
    },
}

/// The server's command phase: answers connect, createStream and the publisher's preliminaries
/// until the client asks to publish or play.
#[derive(Debug, Default)]
pub struct ServerCommands {
    app: String,
    meta: Option<Amf0Value>,
}

impl ServerCommands {
    /// The application of `connect` (empty before it).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Takes one message (protocol control already handled); appends the answers to `out`;
    /// returns the request once the client has made it.
    pub fn on_message(
        &mut self,
        m: &Message,
        enc: &ChunkEncoder,
        out: &mut Vec<Bytes>,
    ) -> Result<Option<Request>, Error> {
        let Some((name, txn, args)) = parse_command(m)? else {
            if m.type_id == types::DATA_AMF0 {
                self.meta = metadata_of(&m.payload).or(self.meta.take());
            }
            return Ok(None);
        };
        match name.as_str() {
            "connect" => {
                let obj = args.first();
                self.app = obj
                    .and_then(|o| o.get("app"))
                    .and_then(Amf0Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if self.app.is_empty() {
                    // Some clients only send tcUrl: rtmp://host[:port]/app
                    let tc = obj
                        .and_then(|o| o.get("tcUrl"))
                        .and_then(Amf0Value::as_str)
                        .unwrap_or("");
                    self.app = tc.splitn(4, '/').nth(3).unwrap_or("").to_owned();
                }
                out.push(control::window_ack_size(enc, WINDOW));
                out.push(control::set_peer_bandwidth(enc, WINDOW));
                out.push(control::set_chunk_size(enc, enc.chunk_size as u32));
                let props = Amf0Value::object([
                    ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
                    ("capabilities", Amf0Value::Number(31.0)),
                ]);
                let info = Amf0Value::object([
                    ("level", Amf0Value::string("status")),
                    ("code", Amf0Value::string("NetConnection.Connect.Success")),
                    ("description", Amf0Value::string("Connection succeeded.")),
                    ("objectEncoding", Amf0Value::Number(0.0)),
                ]);
                out.push(control::result(enc, true, txn, props, info));
            }
            "createStream" => {
                out.push(control::result(
                    enc,
                    true,
                    txn,
                    Amf0Value::Null,
                    Amf0Value::Number(STREAM_ID as f64),
                ));
            }
            "releaseStream" | "FCPublish" | "FCSubscribe" | "getStreamLength" | "_checkbw" => {
                if txn != 0.0 {
                    out.push(control::result(
                        enc,
                        true,
                        txn,
                        Amf0Value::Null,
                        Amf0Value::Undefined,
                    ));
                }
            }
            "publish" | "play" => {
                let stream = args.get(1).and_then(Amf0Value::as_str).unwrap_or("");
                let (path, query) = path_of(&self.app, stream);
                return Ok(Some(if name == "publish" {
                    Request::Publish {
                        path,
                        query,
                        meta: self.meta.take(),
                    }
                } else {
                    Request::Play { path, query }
                }));
            }
            "deleteStream" | "closeStream" | "FCUnpublish" => {}
            other => {
                tracing::debug!(command = other, "ignoring unknown RTMP command");
                if txn != 0.0 {
                    out.push(control::result(enc, false, txn, Amf0Value::Null, Amf0Value::Null));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Limits;
    use crate::client::{ClientEvent, ClientSession, Mode, RtmpUrl};
    use bytes::BytesMut;

    /// The client and the server state machines talk to each other, no socket: connect,
    /// createStream, publish, and the server's onStatus start the stream on both ends.
    #[test]
    fn client_and_server_sessions_agree() {
        for (mode, want) in [(Mode::Publish, "publish"), (Mode::Play, "play")] {
            let url = RtmpUrl::parse("rtmp://h/live/cam1?user=u").unwrap();
            let mut client = ClientSession::new(url, mode, 4096, Limits::default());
            let mut server = ServerCommands::default();
            let senc = ChunkEncoder::new(4096);
            let mut sdec = ChunkDecoder::new(Limits::default());
            let mut scontrol = Control::default();
            let mut to_server: Vec<Bytes> = client.start();
            let mut request = None;
            let mut started = false;
            for _ in 0..10 {
                let mut sbuf = BytesMut::new();
                for b in to_server.drain(..) {
                    sbuf.extend_from_slice(&b);
                }
                let mut to_client = Vec::new();
                while let Some(m) = sdec.decode(&mut sbuf).unwrap() {
                    if scontrol.handle(&m, &mut sdec, &senc, &mut to_client).unwrap() {
                        continue;
                    }
                    if let Some(r) = server.on_message(&m, &senc, &mut to_client).unwrap() {
                        request = Some(r);
                        let code = if mode == Mode::Publish {
                            "NetStream.Publish.Start"
                        } else {
                            "NetStream.Play.Start"
                        };
                        to_client.push(control::on_status(&senc, "status", code, "go"));
                    }
                }
                let mut cbuf = BytesMut::new();
                for b in to_client {
                    cbuf.extend_from_slice(&b);
                }
                let events = client.receive(&mut cbuf, &mut to_server).unwrap();
                if events.iter().any(|e| matches!(e, ClientEvent::Started)) {
                    started = true;
                    break;
                }
            }
            assert!(started, "{want}: the client never started");
            let (path, query) = match request.unwrap() {
                Request::Publish { path, query, .. } | Request::Play { path, query } => (path, query),
            };
            assert_eq!((path.as_str(), query.as_str()), ("live/cam1", "user=u"), "{want}");
        }
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(
            path_of("live", "cam1?user=u&pass=p"),
            ("live/cam1".into(), "user=u&pass=p".into())
        );
        assert_eq!(
            path_of("live?token=t", "cam1"),
            ("live/cam1".into(), "token=t".into())
        );
        assert_eq!(path_of("/live/", "/a/b"), ("live/a/b".into(), String::new()));
    }
}
