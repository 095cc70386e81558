//! RTMP play load generator for `bench/`: opens N RTMP play sessions from one process, measures
//! time to first video frame per session, then only counts bytes (and acknowledges them), so
//! that one core can drive thousands of viewers.
//!
//! Usage: `sluice-loadgen URL VIEWERS SECONDS [RAMP_MS]`. Prints one JSON object.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use sluice_rtmp::chunk::{types, Limits};
use sluice_rtmp::client::{self, ClientEvent, ClientSession, Mode, RtmpUrl};
use sluice_rtmp::control;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Totals {
    bytes: AtomicU64,
}

struct Outcome {
    ttff: Option<Duration>,
    error: Option<String>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!("usage: sluice-loadgen rtmp://HOST:PORT/APP/STREAM VIEWERS SECONDS [RAMP_MS]");
    }
    let url = args[1].clone();
    let viewers: usize = args[2].parse()?;
    let seconds: u64 = args[3].parse()?;
    let ramp_ms: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(url, viewers, seconds, ramp_ms))
}

async fn run(url: String, viewers: usize, seconds: u64, ramp_ms: u64) -> Result<()> {
    let (addr, app, stream) = parse_url(&url)?;
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(viewers);
    for i in 0..viewers {
        let (addr, app, stream, totals) = (addr.clone(), app.clone(), stream.clone(), totals.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut ttff = None;
            let r = tokio::time::timeout_at(
                deadline.into(),
                viewer(&addr, &app, &stream, &totals, t0, &mut ttff),
            )
            .await;
            let error = match r {
                Ok(Err(e)) => Some(format!("{e:#}")),
                _ => None,
            };
            Outcome { ttff, error }
        }));
        if ramp_ms > 0 && i + 1 < viewers {
            tokio::time::sleep(Duration::from_millis(ramp_ms)).await;
        }
    }
    // Bytes received over the measurement window: everything after the ramp.
    let ramp_end = Instant::now();
    let bytes_at_ramp_end = totals.bytes.load(Relaxed);
    let mut ttffs = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let o = t.await?;
        match (o.ttff, o.error) {
            (_, Some(e)) => errors.push(e),
            (Some(d), None) => ttffs.push(d.as_secs_f64() * 1000.0),
            (None, None) => errors.push("no video frame before the end".into()),
        }
    }
    let window = Instant::now().duration_since(ramp_end).as_secs_f64().max(0.001);
    let bytes = totals.bytes.load(Relaxed) - bytes_at_ramp_end;
    ttffs.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if ttffs.is_empty() {
            return f64::NAN;
        }
        ttffs[((ttffs.len() as f64 - 1.0) * p).round() as usize]
    };
    errors.sort();
    errors.dedup();
    println!(
        "{{\"viewers\":{viewers},\"ok\":{},\"failed\":{},\"ttff_p50_ms\":{:.1},\"ttff_p95_ms\":{:.1},\"ttff_max_ms\":{:.1},\"mbps_per_viewer\":{:.3},\"total_mbps\":{:.1},\"errors\":{:?}}}",
        ttffs.len(),
        viewers - ttffs.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0),
        bytes as f64 * 8.0 / window / 1e6 / viewers as f64,
        bytes as f64 * 8.0 / window / 1e6,
        errors.iter().take(3).collect::<Vec<_>>(),
    );
    Ok(())
}

fn parse_url(url: &str) -> Result<(String, String, String)> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| anyhow!("URL must start with rtmp://"))?;
    let (host, path) = rest.split_once('/').ok_or_else(|| anyhow!("URL has no path"))?;
    let (app, stream) = path
        .split_once('/')
        .ok_or_else(|| anyhow!("URL needs APP/STREAM"))?;
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:1935")
    };
    Ok((host, app.to_owned(), stream.to_owned()))
}

async fn viewer(
    addr: &str,
    app: &str,
    stream: &str,
    totals: &Totals,
    t0: Instant,
    ttff: &mut Option<Duration>,
) -> Result<()> {
    let mut sock = TcpStream::connect(addr).await.context("connect")?;
    sock.set_nodelay(true)?;
    // The command phase: the project's RTMP client (the server's own session state machine).
    let url = RtmpUrl::parse(&format!("rtmp://{addr}/{app}/{stream}")).map_err(|e| anyhow!(e))?;
    let mut session = ClientSession::new(url, Mode::Play, 4096, Limits::default());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    client::connect(&mut sock, &mut session, &mut buf, Duration::from_secs(20))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let enc = session.encoder();
    // Phase 1: decode messages until the first video frame.
    loop {
        let mut out = Vec::new();
        for ev in session.receive(&mut buf, &mut out).map_err(|e| anyhow!("{e}"))? {
            let ClientEvent::Media(m) = ev else { continue };
            if m.type_id == types::VIDEO && m.payload.len() > 1 {
                // Skip sequence headers (AVC packet type 0 / enhanced sequence start).
                let b0 = m.payload[0];
                let seq_header = if b0 & 0x80 != 0 {
                    b0 & 0x0f == 0
                } else {
                    m.payload[1] == 0
                };
                if !seq_header && ttff.is_none() {
                    *ttff = Some(t0.elapsed());
                }
            }
        }
        for o in &out {
            sock.write_all(o).await?;
        }
        if ttff.is_some() {
            break;
        }
        let n = sock.read_buf(&mut buf).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        totals.bytes.fetch_add(n as u64, Relaxed);
    }
    // Phase 2: count bytes only (and acknowledge them).
    let mut received: u64 = 0;
    let mut acked: u64 = 0;
    let window: u64 = 2_500_000;
    let mut raw = vec![0u8; 256 * 1024];
    loop {
        let n = sock.read(&mut raw).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        received += n as u64;
        totals.bytes.fetch_add(n as u64, Relaxed);
        if received - acked >= window / 2 {
            sock.write_all(&control::ack(&enc, received as u32)).await?;
            acked = received;
        }
    }
}
