//! HLS viewer load for `bench/`: N viewers in one process, each reloading the media playlist
//! (with the query given, e.g. a token) every half second over a keep-alive connection and
//! fetching each new segment once, as a simple (not low-latency) player does.
//!
//! Usage: `hls-bench http://HOST:PORT/PATH/stream.m3u8[?QUERY] VIEWERS SECONDS`. Prints one
//! JSON object: playlists and segments fetched, bytes, errors.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

#[derive(Default)]
struct Totals {
    playlists: AtomicU64,
    segments: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!("usage: hls-bench URL_OF_MEDIA_PLAYLIST VIEWERS SECONDS");
    }
    let url = reqwest::Url::parse(&args[1])?;
    let viewers: usize = args[2].parse()?;
    let seconds: u64 = args[3].parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let totals = Arc::new(Totals::default());
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for i in 0..viewers {
            let (url, totals) = (url.clone(), totals.clone());
            tasks.push(tokio::spawn(async move {
                // Spread the viewers' reload times over the half second.
                tokio::time::sleep(Duration::from_millis((i as u64 * 500) / viewers.max(1) as u64)).await;
                viewer(url, &totals, deadline).await
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        println!(
            "{{\"viewers\":{viewers},\"seconds\":{seconds},\"playlists\":{},\"segments\":{},\"bytes\":{},\"errors\":{}}}",
            totals.playlists.load(Relaxed),
            totals.segments.load(Relaxed),
            totals.bytes.load(Relaxed),
            totals.errors.load(Relaxed)
        );
        Ok(())
    })
}

async fn viewer(url: reqwest::Url, totals: &Totals, deadline: Instant) {
    // One client per viewer: its own keep-alive connection, as separate players have.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut seen = HashSet::new();
    let mut first = true;
    while Instant::now() < deadline {
        match client.get(url.clone()).send().await {
            Ok(r) if r.status().is_success() => {
                totals.playlists.fetch_add(1, Relaxed);
                let text = r.text().await.unwrap_or_default();
                let segs: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .collect();
                for (i, s) in segs.iter().enumerate() {
                    // A player joining starts near the live edge: the last segment only.
                    if !seen.insert(s.to_string()) || (first && i + 1 < segs.len()) {
                        continue;
                    }
                    let Ok(u) = url.join(s) else { continue };
                    match client.get(u).send().await {
                        Ok(r) if r.status().is_success() => {
                            let n = r.bytes().await.map(|b| b.len()).unwrap_or(0);
                            totals.segments.fetch_add(1, Relaxed);
                            totals.bytes.fetch_add(n as u64, Relaxed);
                        }
                        _ => {
                            totals.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                first = false;
            }
            _ => {
                totals.errors.fetch_add(1, Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
