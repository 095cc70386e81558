//! Pulling a stream from another RTMP server into a path: after [`client::connect`] in play
//! mode, the server's media messages go to the core through the same [`Ingest`] as a
//! publisher's.

use std::time::Duration;

use bytes::BytesMut;
use sluice_media::{Publisher, Registry, SessionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::chunk::types;
use crate::client::{ClientEvent, ClientSession};
use crate::ingest::Ingest;
use crate::server::aggregate;
use crate::session::metadata_of;
use crate::Error;

/// Publishes what the server plays to us on `path` until the connection ends (Ok when the
/// server ends the stream or our session is ended), the server sends nothing for `idle`, or a
/// message is bad. `buf` holds what arrived after the play started.
pub async fn run<S>(
    io: &mut S,
    session: &mut ClientSession,
    mut buf: BytesMut,
    path: &str,
    info: SessionInfo,
    registry: &Registry,
    idle: Duration,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut publisher: Publisher = registry.publish(path, info)?;
    let mut ingest = Ingest::default();
    loop {
        let mut out = Vec::new();
        let events = match session.receive(&mut buf, &mut out) {
            Ok(e) => e,
            Err(Error::Protocol(msg)) if msg.contains("ended the stream") => return Ok(()),
            Err(e) => return Err(e),
        };
        for m in &out {
            io.write_all(m).await?;
        }
        for e in events {
            let ClientEvent::Media(m) = e else { continue };
            match m.type_id {
                types::VIDEO => ingest.video(m.timestamp, &m.payload, &mut publisher)?,
                types::AUDIO => ingest.audio(m.timestamp, &m.payload, &mut publisher)?,
                types::AGGREGATE => aggregate(&m, &mut ingest, &mut publisher)?,
                types::DATA_AMF0 => {
                    if let Some(meta) = metadata_of(&m.payload) {
                        ingest.metadata(&meta);
                    }
                }
                _ => {}
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let n = tokio::select! {
            biased;
            _ = publisher.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, io.read_buf(&mut buf)) => r,
        };
        match n {
            Err(_) => return Err(Error::Timeout(format!("the source sent nothing for {idle:?}"))),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(0)) => return Err(Error::Protocol("the source closed the connection".into())),
            Ok(Ok(_)) => {}
        }
    }
}
