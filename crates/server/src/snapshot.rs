//! Snapshots: `GET /PATH/snapshot.jpg[?width=W]`, a JPEG of the path's latest keyframe, made by a
//! one-shot ffmpeg (outside our address space, bounded in time and output size) and remembered
//! per keyframe and width, so a page of thumbnails costs one decode per keyframe.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use sluice_container::ts::TsMuxer;
use sluice_media::{Event, Registry, Select, SessionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http_error::HttpError;

/// Largest JPEG accepted from the encoder.
const MAX_JPEG: usize = 16 << 20;
/// Encoders running at once; more requests wait (up to the time limit).
const AT_ONCE: usize = 2;
/// Most bytes of snapshots remembered (one per path and width).
const MAX_CACHED_BYTES: usize = 64 << 20;
/// Time for the whole answer: the keyframe, the encoder, the JPEG.
const LIMIT: Duration = Duration::from_secs(5);

/// The remembered snapshots and the encoder slots.
pub struct Snapshots {
    /// (path, width) -> (the keyframe's timestamp, the JPEG).
    cache: Mutex<HashMap<(String, u32), (i64, Bytes)>>,
    slots: tokio::sync::Semaphore,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            cache: Mutex::new(HashMap::new()),
            slots: tokio::sync::Semaphore::new(AT_ONCE),
        }
    }
}

impl Snapshots {
    /// The JPEG of `path`'s latest keyframe, `width` pixels wide (0: the picture's own size).
    pub async fn get(
        &self,
        registry: &Registry,
        path: &str,
        width: u32,
        ffmpeg: &str,
    ) -> Result<Bytes, HttpError> {
        tokio::time::timeout(LIMIT, self.make(registry, path, width, ffmpeg))
            .await
            .map_err(|_| HttpError::unavailable("the snapshot took too long"))?
    }

    async fn make(
        &self,
        registry: &Registry,
        path: &str,
        width: u32,
        ffmpeg: &str,
    ) -> Result<Bytes, HttpError> {
        let session = SessionInfo {
            protocol: "snapshot",
            remote: None,
        };
        let mut reader = registry
            .read_with(path, session, Select::Original)
            .map_err(|_| HttpError::not_found(format!("no stream is available on path {path}")))?;
        // A new reader starts at the latest keyframe (the core's GOP cache).
        let mut video = None;
        let (track, frame) = loop {
            match reader.recv().await {
                Ok(Event::Start(info)) => {
                    video = info.video().cloned();
                    if video.is_none() {
                        return Err(HttpError::not_found(format!("path {path} has no video")));
                    }
                }
                Ok(Event::Frame(f)) if f.keyframe => match &video {
                    Some(t) if t.id == f.track => break (t.clone(), f),
                    _ => {}
                },
                Ok(Event::Frame(_)) => {}
                Err(_) => {
                    return Err(HttpError::not_found(format!(
                        "no stream is available on path {path}"
                    )))
                }
            }
        };
        drop(reader);
        let key = (path.to_owned(), width);
        if let Some((dts, jpeg)) = self.cache.lock().get(&key) {
            if *dts == frame.dts {
                return Ok(jpeg.clone());
            }
        }
        let mut mux = TsMuxer::new(std::slice::from_ref(&track))
            .map_err(|e| HttpError::unavailable(format!("no snapshot of this codec: {e}")))?;
        let mut ts = BytesMut::new();
        mux.write_tables(&mut ts);
        mux.write_frame(&frame, &mut ts)
            .map_err(|e| HttpError::unavailable(format!("no snapshot of this codec: {e}")))?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| HttpError::unavailable("shutting down"))?;
        // Made by another request while this one waited for a slot?
        if let Some((dts, jpeg)) = self.cache.lock().get(&key) {
            if *dts == frame.dts {
                return Ok(jpeg.clone());
            }
        }
        let jpeg = encode(ffmpeg, ts.freeze(), width).await?;
        let mut cache = self.cache.lock();
        let held: usize = cache.values().map(|(_, j)| j.len()).sum();
        if held + jpeg.len() > MAX_CACHED_BYTES {
            cache.clear();
        }
        cache.insert(key, (frame.dts, jpeg.clone()));
        Ok(jpeg)
    }
}

/// One keyframe (MPEG-TS) in, one JPEG out.
async fn encode(ffmpeg: &str, ts: Bytes, width: u32) -> Result<Bytes, HttpError> {
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "error",
        "-f",
        "mpegts",
        "-i",
        "pipe:0",
    ]
    .map(String::from)
    .to_vec();
    if width > 0 {
        // Never larger than the picture itself.
        args.extend(["-vf".into(), format!("scale='min({width},iw)':-2")]);
    }
    args.extend(
        [
            "-frames:v",
            "1",
            "-c:v",
            "mjpeg",
            "-q:v",
            "3",
            "-f",
            "image2pipe",
            "pipe:1",
        ]
        .map(String::from),
    );
    let mut child = tokio::process::Command::new(ffmpeg)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HttpError::unavailable(format!("cannot start {ffmpeg}: {e}")))?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(HttpError::unavailable("no pipes to the encoder"));
    };
    // Fed from its own task: the encoder may write before it has read everything.
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&ts).await;
    });
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stdout
            .read(&mut buf)
            .await
            .map_err(|e| HttpError::unavailable(format!("the encoder failed: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() + n > MAX_JPEG {
            return Err(HttpError::unavailable("the snapshot is too large"));
        }
        out.extend_from_slice(&buf[..n]);
    }
    feed.abort();
    let _ = child.wait().await;
    if !out.starts_with(&[0xff, 0xd8]) {
        return Err(HttpError::unavailable("the encoder made no picture"));
    }
    Ok(Bytes::from(out))
}
