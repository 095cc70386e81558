//! RTMP publish load generator: publishes one FLV file to N paths at once from one process, in
//! real time, looping it, so a test or benchmark can bring many paths to life together.
//!
//! Usage: `rtmp-publish rtmp://HOST:PORT/APP/PREFIX PATHS SECONDS FILE.flv`. Path i is
//! `APP/PREFIX{i}`. Prints one JSON object: how many paths published, how many failed and why.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use sluice_rtmp::chunk::{ChunkEncoder, Limits};
use sluice_rtmp::client::{self, ClientSession, Mode, RtmpUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

/// One FLV tag: type (8 audio, 9 video, 18 data), timestamp in ms, body.
struct Tag {
    kind: u8,
    ms: u32,
    body: Bytes,
}

fn read_flv(data: &[u8]) -> Result<Vec<Tag>> {
    if data.len() < 13 || &data[..3] != b"FLV" {
        bail!("not an FLV file");
    }
    let mut pos = u32::from_be_bytes(data[5..9].try_into()?) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let kind = data[pos] & 0x1f;
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ms = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let start = pos + 11;
        if start + size > data.len() {
            break;
        }
        if matches!(kind, 8 | 9) {
            tags.push(Tag {
                kind,
                ms,
                body: Bytes::copy_from_slice(&data[start..start + size]),
            });
        }
        pos = start + size + 4;
    }
    if tags.is_empty() {
        bail!("no audio or video tag in the FLV file");
    }
    Ok(tags)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        bail!("usage: rtmp-publish rtmp://HOST:PORT/APP/PREFIX PATHS SECONDS FILE.flv");
    }
    let url = args[1].clone();
    let paths: usize = args[2].parse()?;
    let seconds: u64 = args[3].parse()?;
    let tags = read_flv(&std::fs::read(&args[4]).with_context(|| format!("cannot read {}", args[4]))?)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(url, paths, seconds, tags))
}

async fn run(url: String, paths: usize, seconds: u64, tags: Vec<Tag>) -> Result<()> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| anyhow!("URL must start with rtmp://"))?;
    let (addr, path) = rest.split_once('/').ok_or_else(|| anyhow!("URL has no path"))?;
    let (app, prefix) = path
        .split_once('/')
        .ok_or_else(|| anyhow!("URL needs APP/PREFIX"))?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // Connect and publish every path at once.
    let mut pending = Vec::new();
    for i in 0..paths {
        let (addr, app, stream) = (addr.to_owned(), app.to_owned(), format!("{prefix}{i}"));
        pending.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), publish(&addr, &app, &stream))
                .await
                .map_err(|_| anyhow!("publish timed out"))?
        }));
    }
    let mut sessions = Vec::new();
    let mut errors = Vec::new();
    for p in pending {
        match p.await? {
            Ok(s) => sessions.push(s),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let published = sessions.len();
    let sent = Arc::new(AtomicU64::new(0));
    // Replay the file to every path in real time, looping, until the deadline.
    let enc = ChunkEncoder::new(4096);
    let span = tags.last().map_or(0, |t| t.ms) + 40;
    let t0 = Instant::now();
    let mut loop_base = 0u32;
    'outer: loop {
        for tag in &tags {
            let ms = loop_base + tag.ms;
            let due = t0 + Duration::from_millis(ms as u64);
            if due >= deadline {
                break 'outer;
            }
            tokio::time::sleep_until(due.into()).await;
            let csid = if tag.kind == 8 { 4 } else { 6 };
            let mut failed = Vec::new();
            for (i, (w, sid)) in sessions.iter_mut().enumerate() {
                let msg = enc.encode_to_bytes(csid, ms, tag.kind, *sid, &tag.body);
                if let Err(e) = w.write_all(&msg).await {
                    errors.push(format!("write: {e}"));
                    failed.push(i);
                } else {
                    sent.fetch_add(msg.len() as u64, Relaxed);
                }
            }
            for i in failed.into_iter().rev() {
                sessions.swap_remove(i);
            }
        }
        loop_base += span;
    }
    errors.sort();
    errors.dedup();
    println!(
        "{{\"paths\":{paths},\"published\":{published},\"still_publishing\":{},\"failed\":{},\"mbytes_sent\":{:.1},\"errors\":{:?}}}",
        sessions.len(),
        paths - published,
        sent.load(Relaxed) as f64 / 1e6,
        errors.iter().take(3).collect::<Vec<_>>(),
    );
    Ok(())
}

/// Connects, publishes `app/stream` (the project's RTMP client), and returns the write half with
/// the message stream id.
async fn publish(addr: &str, app: &str, stream: &str) -> Result<(OwnedWriteHalf, u32)> {
    let mut sock = TcpStream::connect(addr).await.context("connect")?;
    sock.set_nodelay(true)?;
    let url = RtmpUrl::parse(&format!("rtmp://{addr}/{app}/{stream}")).map_err(|e| anyhow!(e))?;
    let mut session = ClientSession::new(url, Mode::Publish, 4096, Limits::default());
    let mut buf = BytesMut::with_capacity(16 * 1024);
    client::connect(&mut sock, &mut session, &mut buf, Duration::from_secs(20))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let sid = session.stream_id();
    let (mut r, w) = sock.into_split();
    // Drain what the server sends (acks, pings) so its writes never block.
    tokio::spawn(async move {
        let mut b = vec![0u8; 4096];
        while matches!(r.read(&mut b).await, Ok(n) if n > 0) {}
    });
    Ok((w, sid))
}
