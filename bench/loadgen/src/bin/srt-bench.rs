//! SRT load and latency tool for `bench/srt_ingest.sh`, on libsrt through `sluice-srt`.
//!
//! `srt-bench send URL MBPS SECONDS` publishes a synthetic H.264 stream in MPEG-TS at MBPS
//! (30 frames per second, a keyframe each second); every frame carries its send time.
//! `srt-bench recv URL SECONDS` reads a stream, demuxes it and reports, as one JSON object, the
//! received rate and the end-to-end delay of each frame (receive time minus send time; both
//! ends on one machine share the clock).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use bytes::{BufMut, Bytes, BytesMut};
use sluice_container::ts::TsMuxer;
use sluice_container::ts_demux::{DemuxEvent, TsDemuxer};
use sluice_media::{CodecId, Frame, Track};
use sluice_srt::socket::Socket;

/// A real x264 configuration record (640x360), so the stream's parameter sets parse.
const AVCC: &[u8] = include_bytes!("../../../../crates/codec/testdata/ffmpeg_x264_640x360.avcc");

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

fn connect(url: &str) -> Result<Socket> {
    let rest = url
        .strip_prefix("srt://")
        .ok_or_else(|| anyhow!("URL must start with srt://"))?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, port) = hostport.rsplit_once(':').ok_or_else(|| anyhow!("no port"))?;
    let addr =
        sluice_srt::socket::resolve(host, port.parse()?).ok_or_else(|| anyhow!("cannot resolve {host}"))?;
    let s = Socket::new()?;
    s.set_i32(49, 1316)?; // SRTO_PAYLOADSIZE
    for kv in query.split('&').filter(|k| !k.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "streamid" => s.set_str(46, v)?, // SRTO_STREAMID
            "latency" => s.set_i32(23, (v.parse::<i64>()? / 1000) as i32)?, // SRTO_LATENCY, ms
            _ => {}
        }
    }
    s.connect(addr)?;
    Ok(s)
}

fn send(url: &str, mbps: f64, seconds: u64) -> Result<()> {
    let sock = connect(url)?;
    let track = Track::video(0, CodecId::H264, Bytes::from_static(AVCC), 640, 360);
    let mut mux = TsMuxer::new(&[track])?;
    let frame_bytes = ((mbps * 1e6 / 8.0 / 30.0) as usize).max(64);
    let filler = vec![0xaau8; frame_bytes];
    let start = Instant::now();
    let mut out = BytesMut::with_capacity(frame_bytes * 2);
    let mut n: u64 = 0;
    let mut sent_bytes = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let due = start + Duration::from_nanos(n * 1_000_000_000 / 30);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = n.is_multiple_of(30);
        // One slice NAL: type, the send time as 16 hex digits (no start-code bytes), filler.
        let stamp = format!("{:016x}", now_ns());
        let mut nal = BytesMut::with_capacity(frame_bytes + 32);
        nal.put_u8(if key { 0x65 } else { 0x41 });
        nal.put_slice(stamp.as_bytes());
        nal.put_slice(&filler);
        let mut au = BytesMut::with_capacity(nal.len() + 4);
        au.put_u32(nal.len() as u32);
        au.put_slice(&nal);
        let ts = (n * 3000) as i64;
        if key {
            mux.write_tables(&mut out);
        }
        mux.write_frame(&Frame::new(0, ts, ts, key, au.freeze()), &mut out)?;
        for chunk in out.chunks(1316) {
            sock.send(chunk)?;
            sent_bytes += chunk.len() as u64;
        }
        out.clear();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"sent_frames\":{n},\"sent_mbps\":{:.1}}}",
        sent_bytes as f64 * 8.0 / secs / 1e6
    );
    Ok(())
}

fn recv(url: &str, seconds: u64) -> Result<()> {
    let sock = connect(url)?;
    sock.set_recv_timeout(Duration::from_millis(500))?;
    let mut demux = TsDemuxer::new();
    let mut buf = vec![0u8; 1500];
    let mut events = Vec::new();
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut delays_ms = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        match sock.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                bytes += n as u64;
                demux.push(&buf[..n], &mut events)?;
                let now = now_ns();
                for ev in events.drain(..) {
                    if let DemuxEvent::Frame(f) = ev {
                        // AVCC: 4-byte length, NAL header, then 16 hex digits of send time.
                        for nal in iter_nals(&f.data) {
                            if nal.len() > 17 && (nal[0] & 0x1f == 1 || nal[0] & 0x1f == 5) {
                                if let Some(sent) = std::str::from_utf8(&nal[1..17])
                                    .ok()
                                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                                {
                                    delays_ms.push((now.saturating_sub(sent)) as f64 / 1e6);
                                }
                            }
                        }
                    }
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => bail!("receive: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Skip the first second (joining, GOP cache) when reporting delay.
    let skip = delays_ms.len().min(30);
    let mut d: Vec<f64> = delays_ms[skip..].to_vec();
    d.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if d.is_empty() {
            f64::NAN
        } else {
            d[((d.len() - 1) as f64 * p).round() as usize]
        }
    };
    println!(
        "{{\"frames\":{},\"recv_mbps\":{:.1},\"delay_p50_ms\":{:.1},\"delay_p95_ms\":{:.1},\"delay_max_ms\":{:.1}}}",
        delays_ms.len(),
        bytes as f64 * 8.0 / secs / 1e6,
        pct(0.5),
        pct(0.95),
        pct(1.0)
    );
    Ok(())
}

fn iter_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i + 4 > data.len() {
            return None;
        }
        let n = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
        let nal = data.get(i + 4..i + 4 + n)?;
        i += 4 + n;
        Some(nal)
    })
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("send") if a.len() >= 5 => send(&a[2], a[3].parse()?, a[4].parse()?),
        Some("recv") if a.len() >= 4 => recv(&a[2], a[3].parse()?),
        _ => bail!("usage: srt-bench send URL MBPS SECONDS | srt-bench recv URL SECONDS"),
    }
}
