//! The tokio adapter: one RTMP connection from handshake to publish or play, against the core.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_container::amf0::Amf0Value;
use sluice_media::access::{self, AccessRequest, Denied};
use sluice_media::stats::SessionStats;
use sluice_media::{Event, ReadError, Registry, SessionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{timeout, timeout_at, Instant};

use crate::chunk::{types, ChunkDecoder, ChunkEncoder, Message};
use crate::control::{self, STREAM_ID};
use crate::handshake;
use crate::ingest::Ingest;
use crate::play::Play;
use crate::session::{metadata_of, parse_command, Control, Request, ServerCommands};
use crate::{Error, ServerConfig};

/// Runs one RTMP connection until it ends. The returned error says why it ended abnormally.
pub async fn serve<S>(
    stream: S,
    remote: SocketAddr,
    registry: Registry,
    config: ServerConfig,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let deadline = Instant::now() + config.handshake_timeout;
    let mut conn = Conn {
        rd,
        wr,
        inbuf: BytesMut::with_capacity(16 * 1024),
        dec: ChunkDecoder::new(config.limits.clone()),
        enc: ChunkEncoder::new(config.chunk_size as usize),
        remote,
        ctl: Control::default(),
        stats: None,
    };
    timeout_at(deadline, conn.handshake())
        .await
        .map_err(|_| Error::Timeout("the client did not complete the handshake in time".into()))??;
    let action = timeout_at(deadline, conn.commands())
        .await
        .map_err(|_| Error::Timeout("the client sent no publish or play command in time".into()))??;
    match action {
        Action::Closed => Ok(()),
        Action::Publish { path, query, meta } => {
            let req = AccessRequest::new(access::Action::Publish, &path, config.protocol, Some(remote))
                .with_query(&query);
            if let Err(denied) = registry.authorize(&req).await {
                return Err(conn.refuse(&path, true, denied).await);
            }
            conn.publish(path, meta, &registry, &config).await
        }
        Action::Play { path, query } => {
            let req = AccessRequest::new(access::Action::Read, &path, config.protocol, Some(remote))
                .with_query(&query);
            if let Err(denied) = registry.authorize(&req).await {
                return Err(conn.refuse(&path, false, denied).await);
            }
            conn.play(path, &registry, &config).await
        }
    }
}

enum Action {
    Closed,
    Publish {
        path: String,
        query: String,
        meta: Option<Amf0Value>,
    },
    Play {
        path: String,
        query: String,
    },
}

struct Conn<S> {
    rd: ReadHalf<S>,
    wr: WriteHalf<S>,
    inbuf: BytesMut,
    dec: ChunkDecoder,
    enc: ChunkEncoder,
    remote: SocketAddr,
    /// Protocol control, shared with the client (`session.rs`).
    ctl: Control,
    stats: Option<Arc<SessionStats>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    async fn handshake(&mut self) -> Result<(), Error> {
        let mut c0c1 = vec![0u8; 1 + handshake::PACKET];
        self.rd.read_exact(&mut c0c1).await?;
        let mut x = (self.remote.port() as u32).wrapping_mul(2_654_435_761) | 1;
        let mut random = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        let s = handshake::server_response(&c0c1, 0, &mut random)?;
        self.wr.write_all(&s).await?;
        let mut c2 = vec![0u8; handshake::PACKET];
        self.rd.read_exact(&mut c2).await?;
        Ok(())
    }

    /// Reads the next message, handling protocol control messages on the way.
    async fn next(&mut self) -> Result<Option<Message>, Error> {
        loop {
            if let Some(m) = self.dec.decode(&mut self.inbuf)? {
                if self.control(&m).await? {
                    continue;
                }
                return Ok(Some(m));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    async fn read_more(&mut self) -> Result<bool, Error> {
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(64 * 1024);
        }
        let n = self.rd.read_buf(&mut self.inbuf).await?;
        self.count_in(n).await?;
        Ok(n > 0)
    }

    async fn count_in(&mut self, n: usize) -> Result<(), Error> {
        if let Some(s) = &self.stats {
            s.add_bytes_in(n as u64);
        }
        if let Some(a) = self.ctl.count_in(n, &self.enc) {
            self.wr.write_all(&a).await?;
        }
        Ok(())
    }

    /// Handles protocol control and user control messages; true if `m` was one.
    async fn control(&mut self, m: &Message) -> Result<bool, Error> {
        let mut out = Vec::new();
        let handled = self.ctl.handle(m, &mut self.dec, &self.enc, &mut out)?;
        for b in out {
            self.wr.write_all(&b).await?;
        }
        Ok(handled)
    }

    async fn send(&mut self, b: &[u8]) -> Result<(), Error> {
        self.wr.write_all(b).await?;
        Ok(())
    }

    /// The command phase (`session::ServerCommands`): connect, createStream, ... until publish
    /// or play.
    async fn commands(&mut self) -> Result<Action, Error> {
        let mut cmds = ServerCommands::default();
        loop {
            let Some(m) = self.next().await? else {
                return Ok(Action::Closed);
            };
            let mut out = Vec::new();
            let req = cmds.on_message(&m, &self.enc, &mut out)?;
            if !out.is_empty() {
                let mut buf = BytesMut::new();
                for b in &out {
                    buf.extend_from_slice(b);
                }
                self.send(&buf).await?;
            }
            if m.type_id == types::COMMAND_AMF0 && out.len() > 1 {
                tracing::debug!(remote = %self.remote, app = cmds.app(), "RTMP connect");
            }
            match req {
                None => {}
                Some(Request::Publish { path, query, meta }) => {
                    return Ok(Action::Publish { path, query, meta })
                }
                Some(Request::Play { path, query }) => return Ok(Action::Play { path, query }),
            }
        }
    }

    /// Answers a refused publish or play with an `onStatus` error naming the reason, closes the
    /// connection, and returns the error the session ends with.
    async fn refuse(&mut self, path: &str, publish: bool, denied: Denied) -> Error {
        let code = match (&denied, publish) {
            (Denied::Unauthorized(_), true) => "NetStream.Publish.BadAuth",
            (Denied::Forbidden(_), true) => "NetStream.Publish.BadName",
            (_, false) => "NetStream.Play.Failed",
        };
        let what = if publish { "publish" } else { "play" };
        tracing::warn!(remote = %self.remote, %path, "RTMP {what} refused: {denied}");
        let b = control::on_status(&self.enc, "error", code, &denied.to_string());
        let _ = self.send(&b).await;
        let _ = self.wr.shutdown().await;
        Error::Denied(denied)
    }

    async fn publish(
        mut self,
        path: String,
        meta: Option<Amf0Value>,
        registry: &Registry,
        config: &ServerConfig,
    ) -> Result<(), Error> {
        let session = SessionInfo {
            protocol: config.protocol,
            remote: Some(self.remote),
        };
        let mut publisher = match registry.publish(&path, session) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(remote = %self.remote, %path, "RTMP publish refused: {e}");
                let b = control::on_status(&self.enc, "error", "NetStream.Publish.BadName", &e.to_string());
                let _ = self.send(&b).await;
                let _ = self.wr.shutdown().await;
                return Err(e.into());
            }
        };
        self.stats = Some(publisher.stats().clone());
        let mut out = BytesMut::new();
        out.extend_from_slice(&control::user_control(
            &self.enc,
            control::USER_STREAM_BEGIN,
            STREAM_ID,
        ));
        out.extend_from_slice(&control::on_status(
            &self.enc,
            "status",
            "NetStream.Publish.Start",
            &format!("{path} is now published"),
        ));
        self.send(&out).await?;
        tracing::info!(remote = %self.remote, %path, "RTMP publisher started");
        let mut ingest = Ingest::default();
        if let Some(m) = &meta {
            ingest.metadata(m);
        }
        let result = loop {
            let next = tokio::select! {
                biased;
                _ = publisher.cancelled() => None,
                m = timeout(config.idle_timeout, self.next()) => Some(m),
            };
            let Some(next) = next else {
                // Kicked or shutting down: tell the client, then close.
                let reason = publisher.stats().reason();
                tracing::info!(remote = %self.remote, %path, "RTMP publisher closed by the server: {reason}");
                let b = control::on_status(&self.enc, "status", "NetStream.Unpublish.Success", &reason);
                let _ = self.send(&b).await;
                let _ = self.wr.shutdown().await;
                break Ok(());
            };
            let m = match next {
                Err(_) => {
                    break Err(Error::Timeout(format!(
                        "publisher sent nothing for {:?}",
                        config.idle_timeout
                    )))
                }
                Ok(Err(e)) => break Err(e),
                Ok(Ok(None)) => break Ok(()),
                Ok(Ok(Some(m))) => m,
            };
            let r = match m.type_id {
                types::VIDEO => ingest.video(m.timestamp, &m.payload, &mut publisher),
                types::AUDIO => ingest.audio(m.timestamp, &m.payload, &mut publisher),
                types::AGGREGATE => aggregate(&m, &mut ingest, &mut publisher),
                types::DATA_AMF0 => {
                    if let Some(meta) = metadata_of(&m.payload) {
                        ingest.metadata(&meta);
                    }
                    Ok(())
                }
                types::COMMAND_AMF0 | types::COMMAND_AMF3 => match parse_command(&m) {
                    Ok(Some((name, _, _)))
                        if matches!(name.as_str(), "deleteStream" | "closeStream" | "FCUnpublish") =>
                    {
                        break Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                _ => Ok(()),
            };
            if let Err(e) = r {
                break Err(e);
            }
        };
        match &result {
            Ok(()) => tracing::info!(remote = %self.remote, %path, "RTMP publisher ended"),
            Err(e) => tracing::warn!(remote = %self.remote, %path, "RTMP publisher closed: {e}"),
        }
        result
    }

    async fn play(mut self, path: String, registry: &Registry, config: &ServerConfig) -> Result<(), Error> {
        let coalesce = config.play_coalesce;
        let session = SessionInfo {
            protocol: config.protocol,
            remote: Some(self.remote),
        };
        let mut reader = match registry.read_with(&path, session, sluice_media::Select::AAC) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(remote = %self.remote, %path, "RTMP play refused: {e}");
                let b = control::on_status(
                    &self.enc,
                    "error",
                    "NetStream.Play.StreamNotFound",
                    &e.to_string(),
                );
                let _ = self.send(&b).await;
                let _ = self.wr.shutdown().await;
                return Err(e.into());
            }
        };
        let stats = reader.stats().clone();
        let mut out = BytesMut::new();
        out.extend_from_slice(&control::user_control(
            &self.enc,
            control::USER_STREAM_BEGIN,
            STREAM_ID,
        ));
        out.extend_from_slice(&control::on_status(
            &self.enc,
            "status",
            "NetStream.Play.Reset",
            &format!("Playing and resetting {path}."),
        ));
        out.extend_from_slice(&control::on_status(
            &self.enc,
            "status",
            "NetStream.Play.Start",
            &format!("Started playing {path}."),
        ));
        out.extend_from_slice(&control::data(
            &self.enc,
            STREAM_ID,
            0,
            &[
                Amf0Value::string("|RtmpSampleAccess"),
                Amf0Value::Boolean(true),
                Amf0Value::Boolean(true),
            ],
        ));
        self.send(&out).await?;
        tracing::info!(remote = %self.remote, %path, "RTMP reader started");

        let mut play = Play::new(self.enc);
        let mut info = None;
        let mut batch: Vec<Bytes> = Vec::with_capacity(64);
        if self.inbuf.is_empty() {
            self.inbuf = BytesMut::with_capacity(READER_INBUF);
        }
        let result: Result<(), Error> = loop {
            tokio::select! {
                ev = reader.recv() => {
                    let mut next = Some(ev);
                    let mut end = None;
                    while let Some(ev) = next.take() {
                        match ev {
                            Ok(Event::Start(i)) => {
                                play.start(&i, &mut batch);
                                info = Some(i);
                            }
                            Ok(Event::Frame(f)) => {
                                if let Some(i) = &info {
                                    play.frame(i, &f, &mut batch);
                                }
                            }
                            Err(e) => {
                                end = Some(e);
                                break;
                            }
                        }
                        if batch.len() < 256 {
                            next = reader.try_recv();
                        }
                    }
                    if !batch.is_empty() {
                        let n = write_all_vectored(&mut self.wr, &batch).await?;
                        stats.add_bytes_out(n as u64);
                        batch.clear();
                        // A joining viewer's GOP makes one long batch; do not keep its size.
                        if batch.capacity() > 256 {
                            batch.shrink_to(64);
                        }
                        if end.is_none() && !coalesce.is_zero() {
                            // The publisher's first write after the pause wakes the viewer
                            // (no timer of its own).
                            let now = tokio::time::Instant::now();
                            reader.wait_paced(now + coalesce, now + 2 * coalesce).await;
                        }
                    }
                    match end {
                        None => {}
                        Some(ReadError::Closed { reason }) => {
                            tracing::info!(remote = %self.remote, %path, "RTMP reader closed by the server: {reason}");
                            let b = control::on_status(&self.enc, "status", "NetStream.Play.Stop", &reason);
                            let _ = self.send(&b).await;
                            let _ = self.wr.shutdown().await;
                            break Ok(());
                        }
                        Some(ReadError::Ended) => {
                            let b = control::on_status(&self.enc, "status", "NetStream.Play.UnpublishNotify", &format!("{path} is now unpublished."));
                            let _ = self.send(&b).await;
                            let _ = self.wr.shutdown().await;
                            break Ok(());
                        }
                        Some(e) => break Err(e.into()),
                    }
                }
                more = read_some(&mut self.rd, &mut self.inbuf) => {
                    let n = more?;
                    if n == 0 {
                        break Ok(());
                    }
                    self.count_in(n).await?;
                    let mut stop = false;
                    while let Some(m) = self.dec.decode(&mut self.inbuf)? {
                        if self.control(&m).await? {
                            continue;
                        }
                        if let Some((name, _, _)) = parse_command(&m)? {
                            if matches!(name.as_str(), "deleteStream" | "closeStream") {
                                stop = true;
                            }
                        }
                    }
                    if stop {
                        break Ok(());
                    }
                }
            }
        };
        match &result {
            Ok(()) => tracing::info!(remote = %self.remote, %path, "RTMP reader ended"),
            Err(e) => tracing::warn!(remote = %self.remote, %path, "RTMP reader closed: {e}"),
        }
        result
    }
}

/// What a viewer's connection reads into: players send acknowledgements and pings, tens of
/// bytes a second (a bigger message still arrives, in several reads).
const READER_INBUF: usize = 1024;

async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    // Players send little (acks, pings): a small buffer keeps the per-viewer footprint low.
    if buf.capacity() - buf.len() < 256 {
        buf.reserve(READER_INBUF);
    }
    rd.read_buf(buf).await
}

/// Writes every buffer with vectored writes (one syscall for many frames).
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    bufs: &[Bytes],
) -> std::io::Result<usize> {
    let total: usize = bufs.iter().map(Bytes::len).sum();
    let (mut idx, mut off) = (0usize, 0usize);
    while idx < bufs.len() {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity((bufs.len() - idx).min(64));
        slices.push(IoSlice::new(&bufs[idx][off..]));
        slices.extend(bufs[idx + 1..].iter().take(63).map(|b| IoSlice::new(b)));
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && idx < bufs.len() {
            let left = bufs[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
        while idx < bufs.len() && bufs[idx].len() == off {
            idx += 1;
            off = 0;
        }
    }
    Ok(total)
}

/// An aggregate message holds FLV tags back to back (RTMP spec §7.1.6).
pub(crate) fn aggregate(
    m: &Message,
    ingest: &mut Ingest,
    publisher: &mut sluice_media::Publisher,
) -> Result<(), Error> {
    let p = &m.payload;
    let mut pos = 0;
    let mut base: Option<u32> = None;
    while pos + 11 <= p.len() {
        let kind = p[pos];
        let size = ((p[pos + 1] as usize) << 16) | ((p[pos + 2] as usize) << 8) | p[pos + 3] as usize;
        let ts = ((p[pos + 7] as u32) << 24)
            | ((p[pos + 4] as u32) << 16)
            | ((p[pos + 5] as u32) << 8)
            | p[pos + 6] as u32;
        let start = pos + 11;
        if start + size > p.len() {
            return Err(Error::Protocol("aggregate message with a truncated tag".into()));
        }
        let body = p.slice(start..start + size);
        let first = *base.get_or_insert(ts);
        let t = m.timestamp.wrapping_add(ts.wrapping_sub(first));
        match kind {
            types::VIDEO => ingest.video(t, &body, publisher)?,
            types::AUDIO => ingest.audio(t, &body, publisher)?,
            _ => {}
        }
        pos = start + size + 4;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::path_of;

    #[test]
    fn paths() {
        let p = |app, name| {
            let (path, query) = path_of(app, name);
            (path, query)
        };
        assert_eq!(p("live", "cam1"), ("live/cam1".into(), "".into()));
        assert_eq!(p("live/", "cam1?key=abc"), ("live/cam1".into(), "key=abc".into()));
        assert_eq!(p("/live?x=1", "a/b"), ("live/a/b".into(), "x=1".into()));
        assert_eq!(p("", "cam1"), ("cam1".into(), "".into()));
        assert_eq!(
            p("live?token=t", "cam1?user=u&pass=p"),
            ("live/cam1".into(), "user=u&pass=p&token=t".into())
        );
    }

    #[tokio::test]
    async fn vectored_write_writes_everything() {
        let bufs: Vec<Bytes> = (0..300).map(|i| Bytes::from(vec![i as u8; 1 + i % 37])).collect();
        let mut out = Vec::new();
        let n = write_all_vectored(&mut out, &bufs).await.unwrap();
        let want: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!((n, out), (want.len(), want));
    }
}
