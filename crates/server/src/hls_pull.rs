//! Pulled sources over HLS: a path whose `source` is an `http(s)://.../*.m3u8` playlist follows
//! it (a multivariant playlist: its first variant), fetches each new segment once, and publishes
//! its frames on the path at the pace of their timestamps. MPEG-TS segments go through the same
//! demuxer as SRT ingest; fMP4 (CMAF) segments, announced by `EXT-X-MAP`, through the fMP4
//! demuxer, the initialization segment read again whenever the map changes. Byte ranges
//! (`EXT-X-BYTERANGE`, `EXT-X-MAP:...,BYTERANGE=`) are fetched with `Range` requests.
//! Reconnecting and stopping are the pull supervisor's ([`crate::pull`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_container::fmp4_demux::Fmp4Demuxer;
use sluice_container::ts_demux::{DemuxEvent, TsDemuxer};
use sluice_media::{Publisher, Registry, SessionInfo, Track, CLOCK_RATE};

/// A playlist or a segment larger than this is refused (a live segment is a few MB).
const MAX_BODY: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HLS source: its playlist URL and the HTTP client that fetches it.
#[derive(Clone)]
pub struct HlsSource {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl HlsSource {
    /// Checks `url` (an `http://` or `https://` playlist URL).
    pub fn parse(url: &str) -> Result<HlsSource, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad HLS source URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("an HLS source is an http:// or https:// playlist URL".into());
        }
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HlsSource { client, url })
    }

    /// The URL without its query (tokens), for logs.
    pub fn masked(&self) -> String {
        masked(&self.url)
    }

    /// Follows the playlist into `path` until the source ends or fails.
    pub async fn run_once(&self, path: &str, registry: &Registry) -> Result<(), String> {
        pull_once(&self.client, &self.url, path, registry).await
    }
}

/// The URL without its query (tokens) for logs.
fn masked(u: &reqwest::Url) -> String {
    let mut m = u.clone();
    if m.query().is_some() {
        m.set_query(Some("****"));
    }
    m.to_string()
}

/// A byte range of a resource (`EXT-X-BYTERANGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteRange {
    offset: u64,
    len: u64,
}

/// An fMP4 initialization segment (`EXT-X-MAP`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Map {
    url: reqwest::Url,
    range: Option<ByteRange>,
}

/// A media segment of the playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    seq: u64,
    url: reqwest::Url,
    range: Option<ByteRange>,
    /// Its initialization segment: fMP4; none: MPEG-TS.
    map: Option<Map>,
}

async fn get(
    client: &reqwest::Client,
    url: &reqwest::Url,
    range: Option<ByteRange>,
) -> Result<Bytes, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET {}: {e}", masked(url));
    if range.is_some_and(|r| r.len == 0 || r.len > MAX_BODY as u64) {
        return Err(fail(&"a byte range of 0 bytes or over the size limit"));
    }
    let mut req = client.get(url.clone());
    if let Some(r) = range {
        req = req.header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", r.offset, r.offset.saturating_add(r.len - 1)),
        );
    }
    let mut resp = req.send().await.map_err(|e| fail(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(&status));
    }
    // A server that ignores Range sends the whole resource: the range is cut from it then.
    let partial = status == reqwest::StatusCode::PARTIAL_CONTENT;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(fail(&format!("larger than {} MB", MAX_BODY >> 20)));
        }
    }
    let Some(r) = range else {
        return Ok(Bytes::from(body));
    };
    let (from, len) = (if partial { 0 } else { r.offset }, r.len);
    let to = from.saturating_add(len);
    if to > body.len() as u64 {
        return Err(fail(&format!(
            "the byte range {len}@{} is past the {} bytes received",
            r.offset,
            body.len()
        )));
    }
    Ok(Bytes::from(body).slice(from as usize..to as usize))
}

/// A media playlist: its segments and target duration.
#[derive(Debug, Default, PartialEq)]
struct MediaPlaylist {
    target: Duration,
    segments: Vec<Segment>,
    ended: bool,
}

/// `len[@offset]`; without an offset, the range follows `prev` (the previous range of the
/// same resource).
fn byte_range(v: &str, prev: Option<u64>) -> Option<ByteRange> {
    let (len, offset) = match v.trim().split_once('@') {
        Some((l, o)) => (l.trim().parse().ok()?, o.trim().parse().ok()?),
        None => (v.trim().parse().ok()?, prev?),
    };
    Some(ByteRange { offset, len })
}

/// The value of attribute `name` in an attribute list (`URI="a,b",BYTERANGE="1@0"`).
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (&q[..end], q[end + 1..].trim_start_matches(','))
            }
            None => match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            },
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// Parses a playlist: `Err(Ok(variant))` for a multivariant playlist (its first variant).
fn parse(text: &str, base: &reqwest::Url) -> Result<MediaPlaylist, Result<reqwest::Url, String>> {
    if !text.trim_start().starts_with("#EXTM3U") {
        return Err(Err("not an HLS playlist (no #EXTM3U)".into()));
    }
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut p = MediaPlaylist {
        target: Duration::from_secs(2),
        ..Default::default()
    };
    let join = |uri: &str| {
        base.join(uri)
            .map_err(|e| Err(format!("bad URI {uri:?} in the playlist: {e}")))
    };
    let mut seq = 0u64;
    let mut variant_next = false;
    let mut map: Option<Map> = None;
    let mut range_next: Option<&str> = None;
    // Where the last byte range ended, in which resource.
    let mut range_end: Option<(reqwest::Url, u64)> = None;
    for l in lines {
        if l.starts_with("#EXT-X-STREAM-INF") {
            variant_next = true;
            continue;
        }
        if let Some(v) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
            if let Ok(t) = v.trim().parse::<f64>() {
                p.target = Duration::from_secs_f64(t.clamp(0.1, 60.0));
            }
        } else if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("#EXT-X-MAP:") {
            let uri = attribute(v, "URI").ok_or_else(|| Err("an EXT-X-MAP without a URI".to_owned()))?;
            let range = match attribute(v, "BYTERANGE") {
                Some(r) => Some(
                    byte_range(r, Some(0)).ok_or_else(|| Err(format!("a bad EXT-X-MAP BYTERANGE {r:?}")))?,
                ),
                None => None,
            };
            map = Some(Map {
                url: join(uri)?,
                range,
            });
        } else if let Some(v) = l.strip_prefix("#EXT-X-BYTERANGE:") {
            range_next = Some(v);
        } else if l.starts_with("#EXT-X-ENDLIST") {
            p.ended = true;
        } else if !l.starts_with('#') {
            let url = join(l)?;
            if variant_next {
                return Err(Ok(url));
            }
            let range = match range_next.take() {
                Some(r) => {
                    let prev = range_end.as_ref().filter(|(u, _)| *u == url).map(|(_, e)| *e);
                    let br = byte_range(r, prev).ok_or_else(|| {
                        Err(format!("a bad EXT-X-BYTERANGE {r:?} (an offset is needed here)"))
                    })?;
                    range_end = Some((url.clone(), br.offset.saturating_add(br.len)));
                    Some(br)
                }
                None => None,
            };
            p.segments.push(Segment {
                seq,
                url,
                range,
                map: map.clone(),
            });
            seq += 1;
        }
    }
    Ok(p)
}

async fn pull_once(
    client: &reqwest::Client,
    source: &reqwest::Url,
    path: &str,
    registry: &Registry,
) -> Result<(), String> {
    let mut url = source.clone();
    // The media playlist (a multivariant playlist's first variant).
    let mut playlist = None;
    for _ in 0..2 {
        let text = String::from_utf8_lossy(&get(client, &url, None).await?).into_owned();
        match parse(&text, &url) {
            Ok(p) => {
                playlist = Some(p);
                break;
            }
            Err(Ok(variant)) => url = variant,
            Err(Err(e)) => return Err(e),
        }
    }
    let mut playlist = playlist.ok_or("a multivariant playlist whose variant is multivariant too")?;
    let mut publisher: Publisher = registry
        .publish(
            path,
            SessionInfo {
                protocol: "hls",
                remote: None,
            },
        )
        .map_err(|e| e.to_string())?;
    tracing::info!(%path, source = %masked(source), "HLS source connected");
    let mut ts = TsDemuxer::new();
    let mut fmp4 = Fmp4Demuxer::new();
    // The initialization segment read last, and the tracks announced last.
    let mut map: Option<Map> = None;
    let mut announced: Option<Vec<Track>> = None;
    let mut events = Vec::new();
    // Start at the live edge: the last three segments.
    let mut next = playlist
        .segments
        .len()
        .checked_sub(3)
        .and_then(|i| playlist.segments.get(i))
        .or(playlist.segments.first())
        .map_or(0, |s| s.seq);
    // Frames go out at the pace of their timestamps, from the first one on.
    let mut clock: Option<(tokio::time::Instant, i64)> = None;
    let mut last_new = Instant::now();
    loop {
        let from = next;
        for seg in playlist.segments.iter().filter(|s| s.seq >= from) {
            let seq = seg.seq;
            let body = get(client, &seg.url, seg.range).await?;
            publisher.stats().add_bytes_in(body.len() as u64);
            match &seg.map {
                Some(m) => {
                    if map.as_ref() != Some(m) {
                        let init = get(client, &m.url, m.range).await?;
                        publisher.stats().add_bytes_in(init.len() as u64);
                        fmp4.handle_init(&init, &mut events)
                            .map_err(|e| format!("the initialization segment: {e}"))?;
                        map = Some(m.clone());
                    }
                    fmp4.handle_segment(&body, &mut events)
                        .map_err(|e| format!("segment {seq}: {e}"))?;
                }
                None => ts
                    .push(&body, &mut events)
                    .map_err(|e| format!("segment {seq}: {e}"))?,
            }
            for ev in events.drain(..) {
                match ev {
                    DemuxEvent::Tracks(t) => {
                        // The same tracks again (a map read again): no new epoch.
                        if announced.as_ref() != Some(&t) {
                            publisher.start(t.clone());
                            announced = Some(t);
                        }
                    }
                    DemuxEvent::Frame(f) => {
                        let (w0, d0) = *clock.get_or_insert((tokio::time::Instant::now(), f.dts));
                        let ahead = f.dts.saturating_sub(d0).max(0) as u64;
                        let due = w0 + Duration::from_micros(ahead * 1_000_000 / CLOCK_RATE as u64);
                        let now = tokio::time::Instant::now();
                        if due > now {
                            tokio::select! {
                                _ = tokio::time::sleep_until(due) => {}
                                _ = publisher.cancelled() => return Ok(()),
                            }
                        } else if now - due > Duration::from_secs(10) {
                            // Far behind (a stall at the source): start the pace again here.
                            clock = Some((now, f.dts));
                        }
                        publisher.write(f);
                    }
                }
            }
            next = seq + 1;
            last_new = Instant::now();
        }
        if playlist.ended {
            return Ok(());
        }
        if last_new.elapsed() > playlist.target * 6 + Duration::from_secs(5) {
            return Err(format!("no new segment for {} s", last_new.elapsed().as_secs()));
        }
        tokio::select! {
            _ = tokio::time::sleep(playlist.target / 2) => {}
            _ = publisher.cancelled() => return Ok(()),
        }
        let text = String::from_utf8_lossy(&get(client, &url, None).await?).into_owned();
        playlist = parse(&text, &url).map_err(|e| match e {
            Ok(_) => "the media playlist became a multivariant playlist".to_owned(),
            Err(e) => e,
        })?;
        // The source restarted its numbering: follow it.
        if playlist
            .segments
            .last()
            .is_some_and(|s| s.seq + 1 < next.saturating_sub(10))
        {
            next = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn playlists() {
        let base = url("http://h/live/cam/index.m3u8?token=t");
        let media = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:2.0,\nseg41.ts\n#EXTINF:2.0,\nhttp://cdn/seg42.ts\n";
        let p = parse(media, &base).unwrap();
        assert_eq!(p.target, Duration::from_secs(2));
        assert_eq!(p.segments[0].seq, 41);
        assert_eq!(p.segments[0].url.as_str(), "http://h/live/cam/seg41.ts");
        assert_eq!(
            (p.segments[1].seq, &p.segments[1].url),
            (42, &url("http://cdn/seg42.ts"))
        );
        assert!(p.segments.iter().all(|s| s.map.is_none() && s.range.is_none()));
        assert!(!p.ended);
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\nv1/index.m3u8\n";
        assert_eq!(
            parse(master, &base).unwrap_err().unwrap().as_str(),
            "http://h/live/cam/v1/index.m3u8"
        );
        assert!(parse("<html>", &base).unwrap_err().is_err());
        assert_eq!(masked(&base), "http://h/live/cam/index.m3u8?****");
    }

    #[test]
    fn cmaf_playlists_with_maps() {
        let base = url("http://h/live/cam/index.m3u8");
        let cmaf = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:1,\na.m4s\n#EXT-X-MAP:URI=\"init2.mp4\"\n#EXTINF:1,\nb.m4s\n#EXT-X-ENDLIST\n";
        let p = parse(cmaf, &base).unwrap();
        assert!(p.ended);
        let maps: Vec<&str> = p
            .segments
            .iter()
            .map(|s| s.map.as_ref().unwrap().url.path())
            .collect();
        assert_eq!(maps, ["/live/cam/init.mp4", "/live/cam/init2.mp4"]);
        // Sluice's own fMP4 playlist (LL-HLS parts and hints are not segments).
        let ll = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\nseg7.m4s\n#EXT-X-PART:DURATION=0.5,URI=\"part8.0.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part8.1.m4s\"\n";
        let p = parse(ll, &base).unwrap();
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].seq, 7);
    }

    #[test]
    fn byte_ranges() {
        let base = url("http://h/v/index.m3u8");
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"all.mp4\",BYTERANGE=\"720@0\"\n#EXTINF:1,\n#EXT-X-BYTERANGE:1000@720\nall.mp4\n#EXTINF:1,\n#EXT-X-BYTERANGE:500\nall.mp4\n";
        let p = parse(text, &base).unwrap();
        let m = p.segments[0].map.as_ref().unwrap();
        assert_eq!(m.range, Some(ByteRange { offset: 0, len: 720 }));
        assert_eq!(
            p.segments[0].range,
            Some(ByteRange {
                offset: 720,
                len: 1000
            })
        );
        assert_eq!(
            p.segments[1].range,
            Some(ByteRange {
                offset: 1720,
                len: 500
            })
        );
        // A range without an offset needs a previous range of the same resource.
        let bad = "#EXTM3U\n#EXTINF:1,\n#EXT-X-BYTERANGE:500\na.ts\n";
        assert!(parse(bad, &base).is_err());
        assert_eq!(
            attribute("URI=\"a,b.mp4\",BYTERANGE=\"1@2\"", "BYTERANGE"),
            Some("1@2")
        );
        assert_eq!(
            attribute("URI=\"a,b.mp4\",BYTERANGE=\"1@2\"", "URI"),
            Some("a,b.mp4")
        );
        assert_eq!(attribute("X=1,URI=u", "URI"), Some("u"));
        assert_eq!(attribute("URI=\"open", "URI"), None);
    }
}
