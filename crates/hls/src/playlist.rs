//! The typed playlist model (RFC 8216): a media playlist and a multivariant playlist, each
//! rendered to text, and the RFC 3339 date format of EXT-X-PROGRAM-DATE-TIME. Rendering only:
//! what goes in (the window, the sequence numbers) is the store's business.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// A media playlist: the segments of one rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist<'a> {
    pub version: u8,
    pub independent_segments: bool,
    /// EXT-X-TARGETDURATION, whole seconds.
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub segments: Vec<MediaSegment<'a>>,
    /// EXT-X-ENDLIST: the stream has ended.
    pub end_list: bool,
    /// Low-Latency HLS (RFC 8216bis): parts, server control, preload hint, skipped segments.
    pub low_latency: Option<LowLatency<'a>>,
}

/// The Low-Latency HLS part of a media playlist (draft-pantos-hls-rfc8216bis 4.4.3.7-4.4.5.3).
#[derive(Debug, Clone, PartialEq)]
pub struct LowLatency<'a> {
    /// EXT-X-PART-INF:PART-TARGET, seconds.
    pub part_target: f64,
    /// EXT-X-SERVER-CONTROL:PART-HOLD-BACK, seconds (at least three part targets).
    pub part_hold_back: f64,
    /// EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL, seconds.
    pub can_skip_until: f64,
    /// EXT-X-SKIP:SKIPPED-SEGMENTS: segments left out at the head of a delta update.
    pub skipped_segments: u64,
    /// Parts of the segment being built, after the last complete segment.
    pub pending_parts: Vec<PartEntry<'a>>,
    /// The segment being built starts a new stream (EXT-X-DISCONTINUITY before its parts).
    pub pending_discontinuity: bool,
    /// Its initialization segment (EXT-X-MAP, when it differs from the last segment's).
    pub pending_map: Option<&'a str>,
    /// EXT-X-PRELOAD-HINT:TYPE=PART: the next part's URI.
    pub preload_hint: Option<&'a str>,
    /// EXT-X-RENDITION-REPORT: where the other renditions of the path stand.
    pub rendition_reports: Vec<RenditionReport>,
}

/// One EXT-X-RENDITION-REPORT (RFC 8216bis 4.4.5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// The rendition's media playlist, relative to this one.
    pub uri: String,
    /// The last segment (complete or being built) of that rendition.
    pub last_msn: u64,
    /// The last part of that segment, when it has parts.
    pub last_part: Option<u64>,
}

/// One EXT-X-PART.
#[derive(Debug, Clone, PartialEq)]
pub struct PartEntry<'a> {
    pub uri: &'a str,
    /// Seconds.
    pub duration: f64,
    /// INDEPENDENT=YES: the part starts with a keyframe.
    pub independent: bool,
}

/// One segment of a [`MediaPlaylist`].
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSegment<'a> {
    pub uri: &'a str,
    /// Seconds.
    pub duration: f64,
    pub program_date_time: Option<SystemTime>,
    /// EXT-X-DISCONTINUITY before this segment.
    pub discontinuity: bool,
    /// The initialization segment (EXT-X-MAP), written when it differs from the previous one's.
    pub map: Option<&'a str>,
    /// Its parts (EXT-X-PART before the segment's URI), for the last segments of an LL-HLS
    /// playlist.
    pub parts: Vec<PartEntry<'a>>,
}

impl MediaPlaylist<'_> {
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(256 + self.segments.len() * 96);
        header(&mut s, self.version, self.independent_segments);
        let _ = write!(
            s,
            "#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            self.target_duration, self.media_sequence, self.discontinuity_sequence,
        );
        if let Some(ll) = &self.low_latency {
            let _ = write!(
                s,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.3},PART-HOLD-BACK={:.3}\n\
                 #EXT-X-PART-INF:PART-TARGET={:.5}\n",
                ll.can_skip_until, ll.part_hold_back, ll.part_target,
            );
            if ll.skipped_segments > 0 {
                let _ = writeln!(s, "#EXT-X-SKIP:SKIPPED-SEGMENTS={}", ll.skipped_segments);
            }
        }
        let mut map = None;
        for seg in &self.segments {
            if seg.discontinuity {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if seg.map.is_some() && seg.map != map {
                let _ = writeln!(s, "#EXT-X-MAP:URI=\"{}\"", seg.map.unwrap_or_default());
                map = seg.map;
            }
            if let Some(t) = seg.program_date_time {
                let _ = writeln!(s, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_millis(t));
            }
            for p in &seg.parts {
                part(&mut s, p);
            }
            let _ = write!(s, "#EXTINF:{:.5},\n{}\n", seg.duration, seg.uri);
        }
        if let Some(ll) = &self.low_latency {
            if !ll.pending_parts.is_empty() {
                if ll.pending_discontinuity && !self.segments.is_empty() {
                    s.push_str("#EXT-X-DISCONTINUITY\n");
                }
                if ll.pending_map.is_some() && ll.pending_map != map {
                    let _ = writeln!(s, "#EXT-X-MAP:URI=\"{}\"", ll.pending_map.unwrap_or_default());
                }
            }
            for p in &ll.pending_parts {
                part(&mut s, p);
            }
            if let Some(uri) = ll.preload_hint.filter(|_| !self.end_list) {
                let _ = writeln!(s, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{uri}\"");
            }
            for r in &ll.rendition_reports {
                let _ = write!(
                    s,
                    "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                    r.uri, r.last_msn
                );
                if let Some(p) = r.last_part {
                    let _ = write!(s, ",LAST-PART={p}");
                }
                s.push('\n');
            }
        }
        if self.end_list {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }
}

/// A multivariant playlist: the renditions a player chooses from.
#[derive(Debug, Clone, PartialEq)]
pub struct MultivariantPlaylist<'a> {
    pub version: u8,
    pub independent_segments: bool,
    pub variants: Vec<VariantStream<'a>>,
}

/// One EXT-X-STREAM-INF entry.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantStream<'a> {
    /// Peak bits per second.
    pub bandwidth: u64,
    /// RFC 6381 codec strings, comma-separated (omitted when empty).
    pub codecs: &'a str,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    pub uri: &'a str,
}

impl MultivariantPlaylist<'_> {
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(256);
        header(&mut s, self.version, self.independent_segments);
        for v in &self.variants {
            let _ = write!(s, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
            if !v.codecs.is_empty() {
                let _ = write!(s, ",CODECS=\"{}\"", v.codecs);
            }
            if let Some((w, h)) = v.resolution {
                let _ = write!(s, ",RESOLUTION={w}x{h}");
            }
            if let Some(r) = v.frame_rate {
                let _ = write!(s, ",FRAME-RATE={r:.3}");
            }
            let _ = write!(s, "\n{}\n", v.uri);
        }
        s
    }
}

fn part(s: &mut String, p: &PartEntry) {
    let _ = write!(s, "#EXT-X-PART:DURATION={:.5},URI=\"{}\"", p.duration, p.uri);
    if p.independent {
        s.push_str(",INDEPENDENT=YES");
    }
    s.push('\n');
}

fn header(s: &mut String, version: u8, independent_segments: bool) {
    let _ = write!(s, "#EXTM3U\n#EXT-X-VERSION:{version}\n");
    if independent_segments {
        s.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
}

/// Formats a wall-clock time as RFC 3339 with milliseconds in UTC, as EXT-X-PROGRAM-DATE-TIME wants.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn date_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339_millis(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn media_playlist_text() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let seg = |uri, discontinuity, map| MediaSegment {
            uri,
            duration: 1.0,
            program_date_time: Some(t),
            discontinuity,
            map,
            parts: Vec::new(),
        };
        let p = MediaPlaylist {
            version: 7,
            independent_segments: true,
            target_duration: 1,
            media_sequence: 4,
            discontinuity_sequence: 1,
            segments: vec![
                seg("a.m4s", false, Some("i1.mp4")),
                seg("b.m4s", false, Some("i1.mp4")),
                seg("c.m4s", true, Some("i2.mp4")),
            ],
            end_list: true,
            low_latency: None,
        };
        let pdt = "#EXT-X-PROGRAM-DATE-TIME:2026-11-18T11:06:40.123Z\n";
        assert_eq!(
            p.render(),
            format!(
                "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:1\n\
                 #EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-MAP:URI=\"i1.mp4\"\n\
                 {pdt}#EXTINF:1.00000,\na.m4s\n{pdt}#EXTINF:1.00000,\nb.m4s\n#EXT-X-DISCONTINUITY\n\
                 #EXT-X-MAP:URI=\"i2.mp4\"\n{pdt}#EXTINF:1.00000,\nc.m4s\n#EXT-X-ENDLIST\n"
            )
        );
    }

    #[test]
    fn low_latency_text() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let part = |uri, independent| PartEntry {
            uri,
            duration: 0.2,
            independent,
        };
        let p = MediaPlaylist {
            version: 9,
            independent_segments: true,
            target_duration: 1,
            media_sequence: 10,
            discontinuity_sequence: 0,
            segments: vec![MediaSegment {
                uri: "s12.m4s",
                duration: 0.4,
                program_date_time: Some(t),
                discontinuity: false,
                map: Some("i.mp4"),
                parts: vec![part("p1.m4s", true), part("p2.m4s", false)],
            }],
            end_list: false,
            low_latency: Some(LowLatency {
                part_target: 0.2,
                part_hold_back: 0.6,
                can_skip_until: 6.0,
                skipped_segments: 2,
                pending_parts: vec![part("p3.m4s", true)],
                pending_discontinuity: false,
                pending_map: Some("i.mp4"),
                preload_hint: Some("p4.m4s"),
                rendition_reports: vec![RenditionReport {
                    uri: "~360p/stream.m3u8".into(),
                    last_msn: 12,
                    last_part: Some(0),
                }],
            }),
        };
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:1\n\
             #EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,PART-HOLD-BACK=0.600\n\
             #EXT-X-PART-INF:PART-TARGET=0.20000\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n\
             #EXT-X-MAP:URI=\"i.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-11-18T11:06:40.123Z\n\
             #EXT-X-PART:DURATION=0.20000,URI=\"p1.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.20000,URI=\"p2.m4s\"\n#EXTINF:0.40000,\ns12.m4s\n\
             #EXT-X-PART:DURATION=0.20000,URI=\"p3.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p4.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"~360p/stream.m3u8\",LAST-MSN=12,LAST-PART=0\n"
        );
    }

    #[test]
    fn multivariant_text() {
        let p = MultivariantPlaylist {
            version: 3,
            independent_segments: true,
            variants: vec![VariantStream {
                bandwidth: 800_000,
                codecs: "avc1.64001e,mp4a.40.2",
                resolution: Some((640, 360)),
                frame_rate: Some(30.0),
                uri: "stream.m3u8",
            }],
        };
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=800000,\
             CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=30.000\nstream.m3u8\n"
        );
    }
}
