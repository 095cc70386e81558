//! Fragmented MP4 / CMAF writing (ISO/IEC 14496-12, ISO/IEC 23000-19): an initialization segment
//! (`ftyp` + `moov`) for a set of tracks, and media fragments (`moof` + `mdat`).
//!
//! Written by hand: the boxes we need are few and fixed, and the crates that write MP4 either
//! cover only progressive files or copy every sample; here sample data is appended once into the
//! fragment being built and nothing else is allocated per sample.
//!
//! Video uses the core's 90 kHz timescale; audio uses its sample rate, converted from the
//! absolute decode times so that rounding never accumulates.

use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_media::{CodecId, Frame, MediaKind, Track, TrackId, CLOCK_RATE};

use crate::Error;

const SAMPLE_SYNC: u32 = 0x0200_0000;
const SAMPLE_NON_SYNC: u32 = 0x0101_0000;

/// One track of an fMP4 stream: its MP4 track id, timescale and sample entry.
#[derive(Debug, Clone)]
struct Trak {
    source: TrackId,
    id: u32,
    timescale: u32,
    track: Track,
}

/// Writes the initialization segment and media fragments for a set of tracks.
#[derive(Debug)]
pub struct Fmp4Writer {
    traks: Vec<Trak>,
    sequence: u32,
    /// The buffer fragments are written into and split off from: once a fragment's `Bytes` is
    /// dropped (a recorder wrote it), the next one reuses its memory rather than growing a new
    /// buffer from nothing (fresh pages cost page faults and zeroing, per fragment, per path).
    buf: BytesMut,
}

/// The samples of one fragment, collected per track before [`Fmp4Writer::fragment`].
#[derive(Debug, Default)]
pub struct Fragment {
    tracks: Vec<(TrackId, Vec<Sample>)>,
}

#[derive(Debug, Clone)]
struct Sample {
    dts: i64,
    cts: i64,
    key: bool,
    data: Bytes,
}

impl Fragment {
    pub fn push(&mut self, frame: &Frame) {
        let s = Sample {
            dts: frame.dts,
            cts: frame.cts(),
            key: frame.keyframe,
            data: frame.data.clone(),
        };
        match self.tracks.iter_mut().find(|(t, _)| *t == frame.track) {
            Some((_, v)) => v.push(s),
            None => self.tracks.push((frame.track, vec![s])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.iter().all(|(_, v)| v.is_empty())
    }

    /// Total size of the sample data.
    pub fn bytes(&self) -> usize {
        self.tracks
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|s| s.data.len())
            .sum()
    }

    /// Earliest decode time, in core ticks.
    pub fn start(&self) -> Option<i64> {
        self.tracks
            .iter()
            .filter_map(|(_, v)| v.first())
            .map(|s| s.dts)
            .min()
    }
}

impl Fmp4Writer {
    /// A writer for the tracks fMP4 can carry (G.711 and AC-3 are left out); an error when none.
    pub fn new(tracks: &[Track]) -> Result<Self, Error> {
        let mut traks = Vec::new();
        for t in tracks {
            let timescale = match t.kind() {
                MediaKind::Video => CLOCK_RATE as u32,
                MediaKind::Audio if t.codec == CodecId::Opus => 48_000,
                MediaKind::Audio => t.sample_rate.max(1),
            };
            match t.codec {
                CodecId::H264
                | CodecId::H265
                | CodecId::Av1
                | CodecId::Vp9
                | CodecId::Aac
                | CodecId::Opus
                | CodecId::Mp3 => {}
                // Tracks we do not write in fMP4 are left out; the rest still goes through.
                _ => continue,
            }
            if t.config.is_empty() && matches!(t.codec, CodecId::H264 | CodecId::H265 | CodecId::Aac) {
                return Err(Error::Fmp4(format!(
                    "{} track has no codec configuration",
                    t.codec
                )));
            }
            traks.push(Trak {
                source: t.id,
                id: traks.len() as u32 + 1,
                timescale,
                track: t.clone(),
            });
        }
        if traks.is_empty() {
            let codecs: Vec<&str> = tracks.iter().map(|t| t.codec.name()).collect();
            return Err(Error::Fmp4(format!(
                "no track fMP4 can carry (tracks: {})",
                codecs.join(", ")
            )));
        }
        Ok(Fmp4Writer {
            traks,
            sequence: 0,
            buf: BytesMut::new(),
        })
    }

    /// Whether a core track goes into this writer.
    pub fn carries(&self, track: TrackId) -> bool {
        self.traks.iter().any(|t| t.source == track)
    }

    /// The initialization segment: `ftyp` and `moov`.
    pub fn init(&self) -> Bytes {
        self.build_init(false, None).0
    }

    /// The initialization segment of one track alone (a DASH representation, whose fragments
    /// come from [`Fmp4Writer::fragment_per_track`]); `None` when the track is not carried.
    pub fn track_init(&self, track: TrackId) -> Option<Bytes> {
        self.carries(track).then(|| self.build_init(false, Some(track)).0)
    }

    /// The core tracks carried, in MP4 track order.
    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        self.traks.iter().map(|t| &t.track)
    }

    /// The initialization segment of a file that grows fragment by fragment (the recorder): the
    /// same with an `mvex/mehd` box whose 64-bit fragment duration, in milliseconds, is 0 until
    /// the file is complete. Returns the bytes and the offset of that duration field, which the
    /// writer patches in place when it closes the file (players then read the duration from the
    /// header; until then they find it from the fragments).
    pub fn file_init(&self) -> (Bytes, usize) {
        self.build_init(true, None)
    }

    fn build_init(&self, mehd: bool, only: Option<TrackId>) -> (Bytes, usize) {
        let traks: Vec<&Trak> = self
            .traks
            .iter()
            .filter(|t| only.is_none_or(|o| o == t.source))
            .collect();
        let mut mehd_at = 0;
        let mut out = BytesMut::with_capacity(1024);
        boxed(&mut out, b"ftyp", |b| {
            b.put_slice(b"iso6");
            b.put_u32(0);
            for brand in [b"iso6", b"cmfc", b"mp41", b"dash"] {
                b.put_slice(brand);
            }
        });
        boxed(&mut out, b"moov", |b| {
            full(b, b"mvhd", 0, 0, |b| {
                b.put_u32(0); // creation
                b.put_u32(0); // modification
                b.put_u32(1000);
                b.put_u32(0); // duration: fragmented
                b.put_u32(0x0001_0000); // rate
                b.put_u16(0x0100); // volume
                b.put_bytes(0, 10);
                matrix(b);
                b.put_bytes(0, 24);
                b.put_u32(self.traks.len() as u32 + 1);
            });
            for t in &traks {
                trak(b, t);
            }
            boxed(b, b"mvex", |b| {
                if mehd {
                    full(b, b"mehd", 1, 0, |b| {
                        mehd_at = b.len();
                        b.put_u64(0);
                    });
                }
                for t in &traks {
                    full(b, b"trex", 0, 0, |b| {
                        b.put_u32(t.id);
                        b.put_u32(1); // sample description index
                        b.put_u32(0);
                        b.put_u32(0);
                        b.put_u32(if t.track.kind() == MediaKind::Audio {
                            SAMPLE_SYNC
                        } else {
                            SAMPLE_NON_SYNC
                        });
                    });
                }
            });
        });
        (out.freeze(), mehd_at)
    }

    /// One media fragment (`moof` + `mdat`) holding `frag`'s samples. `next_dts` gives, per track,
    /// the decode time of the first sample after this fragment when known, so that the last
    /// sample's duration is exact; otherwise the previous sample's duration is reused.
    pub fn fragment(&mut self, frag: &Fragment, next_dts: &dyn Fn(TrackId) -> Option<i64>) -> Bytes {
        self.fragment_from(frag, next_dts, 0)
    }

    /// The same with every decode time taken from `origin` (the fragment's times start at
    /// `dts - origin`): a file of its own whose timeline starts at 0.
    pub fn fragment_from(
        &mut self,
        frag: &Fragment,
        next_dts: &dyn Fn(TrackId) -> Option<i64>,
        origin: i64,
    ) -> Bytes {
        let mut out = std::mem::take(&mut self.buf);
        out.reserve(frag.bytes() + 512);
        self.write_fragment(&mut out, frag, next_dts, origin, None, None, None);
        let bytes = out.split().freeze();
        self.buf = out;
        bytes
    }

    /// The same fragment without copying its samples: the `moof` and the `mdat` header, then
    /// each sample's data in `mdat` order (shared with the frames). The fragment is the header
    /// followed by the samples; for a writer that gathers them itself (the recorder).
    pub fn fragment_gathered(
        &mut self,
        frag: &Fragment,
        next_dts: &dyn Fn(TrackId) -> Option<i64>,
        origin: i64,
    ) -> (Bytes, Vec<Bytes>) {
        let mut out = std::mem::take(&mut self.buf);
        let mut media = Vec::new();
        self.write_fragment(&mut out, frag, next_dts, origin, None, None, Some(&mut media));
        let bytes = out.split().freeze();
        self.buf = out;
        (bytes, media)
    }

    /// The same samples as one fragment per track (`moof` + `mdat` each, in MP4 track order), as
    /// CMAF and DASH want them: one buffer, and the byte range each track's fragment takes in it,
    /// so that a muxed reader (HLS) serves the whole and a DASH representation its track's
    /// ranges, from the same bytes. With `prft` (the wall-clock time of the fragment's start),
    /// each track's fragment is preceded by a Producer Reference Time box (ISO/IEC 14496-12
    /// 8.16.5) that low-latency DASH players use to measure latency.
    pub fn fragment_per_track(
        &mut self,
        frag: &Fragment,
        next_dts: &dyn Fn(TrackId) -> Option<i64>,
        prft: Option<SystemTime>,
    ) -> (Bytes, Vec<Piece>) {
        let mut out = std::mem::take(&mut self.buf);
        out.reserve(frag.bytes() + 512);
        let mut pieces = Vec::new();
        let sources: Vec<TrackId> = self.traks.iter().map(|t| t.source).collect();
        for source in sources {
            let start = out.len();
            if self.write_fragment(&mut out, frag, next_dts, 0, Some(source), prft, None) {
                pieces.push(Piece {
                    track: source,
                    range: start..out.len(),
                });
            }
        }
        let bytes = out.split().freeze();
        self.buf = out;
        (bytes, pieces)
    }

    /// Appends one fragment of `frag`'s samples (of track `only`, or all) to `out`, the samples'
    /// data into `media` instead when given; false, with nothing written, when there is no sample.
    #[allow(clippy::too_many_arguments)]
    fn write_fragment(
        &mut self,
        out: &mut BytesMut,
        frag: &Fragment,
        next_dts: &dyn Fn(TrackId) -> Option<i64>,
        origin: i64,
        only: Option<TrackId>,
        prft: Option<SystemTime>,
        mut media: Option<&mut Vec<Bytes>>,
    ) -> bool {
        struct Run<'a> {
            trak: &'a Trak,
            samples: &'a [Sample],
            base: u64,
            durations: Vec<u32>,
        }
        let mut runs = Vec::new();
        for t in self.traks.iter().filter(|t| only.is_none_or(|o| o == t.source)) {
            let Some((_, samples)) = frag.tracks.iter().find(|(id, _)| *id == t.source) else {
                continue;
            };
            if samples.is_empty() {
                continue;
            }
            let conv = |dts: i64| rescale(dts.saturating_sub(origin).max(0), t.timescale);
            let times: Vec<u64> = samples.iter().map(|s| conv(s.dts)).collect();
            let mut durations: Vec<u32> = times
                .windows(2)
                .map(|w| w[1].saturating_sub(w[0]).min(u32::MAX as u64) as u32)
                .collect();
            let last = match next_dts(t.source) {
                Some(n) => conv(n).saturating_sub(times[times.len() - 1]) as u32,
                None => durations.last().copied().unwrap_or(match t.track.codec {
                    CodecId::Aac => 1024,
                    CodecId::Opus => 960,
                    CodecId::Mp3 => 1152,
                    _ => t.timescale / 30,
                }),
            };
            durations.push(last);
            runs.push(Run {
                trak: t,
                samples,
                base: times[0],
                durations,
            });
        }

        if runs.is_empty() && only.is_some() {
            return false;
        }
        self.sequence += 1;
        if let (Some(wall), Some(first)) = (prft, runs.first()) {
            // Version 1: 64-bit media time, in the track's timescale, of the fragment's start.
            // The media time is the presentation time of the first sample (decode time plus
            // composition offset).
            let ntp = ntp_time(wall);
            let cts = rescale_signed(first.samples[0].cts, first.trak.timescale).max(0) as u64;
            full(out, b"prft", 1, 0, |b| {
                b.put_u32(first.trak.id);
                b.put_u64(ntp);
                b.put_u64(first.base + cts);
            });
        }
        // Lay the samples out in decode order across tracks, so a reader that consumes the file
        // front to back gets audio and video together; each stretch of one track is one `trun`.
        let mut order: Vec<(usize, usize)> = runs
            .iter()
            .enumerate()
            .flat_map(|(r, run)| (0..run.samples.len()).map(move |i| (r, i)))
            .collect();
        order.sort_by_key(|&(r, i)| (runs[r].samples[i].dts, r));
        // (track run index, first sample, sample count), in mdat order.
        let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
        for &(r, i) in &order {
            match chunks.last_mut() {
                Some((lr, first, n)) if *lr == r && *first + *n == i => *n += 1,
                _ => chunks.push((r, i, 1)),
            }
        }
        let mdat_len: usize = runs
            .iter()
            .flat_map(|r| r.samples.iter())
            .map(|s| s.data.len())
            .sum();
        let inline = if media.is_some() { 0 } else { mdat_len };
        out.reserve(inline + 256 + order.len() * 16 + chunks.len() * 20);
        // The data offsets depend on the moof size, which is fixed by the sample counts: write
        // the moof once with placeholders, then patch them.
        let mut slots = vec![0usize; chunks.len()];
        let moof_start = out.len();
        let sequence = self.sequence;
        boxed(out, b"moof", |b| {
            full(b, b"mfhd", 0, 0, |b| b.put_u32(sequence));
            for (ri, r) in runs.iter().enumerate() {
                let video = r.trak.track.kind() == MediaKind::Video;
                boxed(b, b"traf", |b| {
                    // default-base-is-moof
                    full(b, b"tfhd", 0, 0x02_0000, |b| b.put_u32(r.trak.id));
                    full(b, b"tfdt", 1, 0, |b| b.put_u64(r.base));
                    let flags = if video { 0x000f01 } else { 0x000301 };
                    for (ci, &(cr, first, n)) in chunks.iter().enumerate() {
                        if cr != ri {
                            continue;
                        }
                        full(b, b"trun", 1, flags, |b| {
                            b.put_u32(n as u32);
                            slots[ci] = b.len();
                            b.put_u32(0);
                            for i in first..first + n {
                                let s = &r.samples[i];
                                b.put_u32(r.durations[i]);
                                b.put_u32(s.data.len() as u32);
                                if video {
                                    b.put_u32(if s.key { SAMPLE_SYNC } else { SAMPLE_NON_SYNC });
                                    b.put_i32(rescale_signed(s.cts, r.trak.timescale) as i32);
                                }
                            }
                        });
                    }
                });
            }
        });
        let moof_len = out.len() - moof_start;
        let mut data_offset = moof_len + 8;
        for (slot, &(r, first, n)) in slots.iter().zip(&chunks) {
            out[*slot..*slot + 4].copy_from_slice(&(data_offset as u32).to_be_bytes());
            data_offset += runs[r].samples[first..first + n]
                .iter()
                .map(|s| s.data.len())
                .sum::<usize>();
        }
        out.put_u32((mdat_len + 8) as u32);
        out.put_slice(b"mdat");
        for &(r, first, n) in &chunks {
            for s in &runs[r].samples[first..first + n] {
                match media.as_deref_mut() {
                    Some(m) => m.push(s.data.clone()),
                    None => out.put_slice(&s.data),
                }
            }
        }
        true
    }
}

/// Where one track's fragment lies in the bytes of [`Fmp4Writer::fragment_per_track`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub track: TrackId,
    pub range: std::ops::Range<usize>,
}

/// NTP time (seconds since 1900 in the high 32 bits, fraction in the low 32) of a wall-clock time.
fn ntp_time(t: SystemTime) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().saturating_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    secs << 32 | frac
}

/// Converts core ticks to `timescale` units, from the absolute value so errors never add up.
fn rescale(ticks: i64, timescale: u32) -> u64 {
    (ticks as i128 * timescale as i128 / CLOCK_RATE as i128) as u64
}

fn rescale_signed(ticks: i64, timescale: u32) -> i64 {
    (ticks as i128 * timescale as i128 / CLOCK_RATE as i128) as i64
}

fn boxed(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn full(out: &mut BytesMut, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut BytesMut)) {
    boxed(out, kind, |b| {
        b.put_u32((version as u32) << 24 | (flags & 0x00ff_ffff));
        body(b);
    });
}

fn matrix(b: &mut BytesMut) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.put_u32(v);
    }
}

fn trak(b: &mut BytesMut, t: &Trak) {
    let video = t.track.kind() == MediaKind::Video;
    boxed(b, b"trak", |b| {
        full(b, b"tkhd", 0, 0x3, |b| {
            b.put_u32(0);
            b.put_u32(0);
            b.put_u32(t.id);
            b.put_u32(0);
            b.put_u32(0); // duration
            b.put_bytes(0, 8);
            b.put_u16(0); // layer
            b.put_u16(if video { 0 } else { 1 }); // alternate group
            b.put_u16(if video { 0 } else { 0x0100 });
            b.put_u16(0);
            matrix(b);
            b.put_u32(if video { t.track.width << 16 } else { 0 });
            b.put_u32(if video { t.track.height << 16 } else { 0 });
        });
        boxed(b, b"mdia", |b| {
            full(b, b"mdhd", 0, 0, |b| {
                b.put_u32(0);
                b.put_u32(0);
                b.put_u32(t.timescale);
                b.put_u32(0);
                b.put_u16(0x55c4); // 'und'
                b.put_u16(0);
            });
            full(b, b"hdlr", 0, 0, |b| {
                b.put_u32(0);
                b.put_slice(if video { b"vide" } else { b"soun" });
                b.put_bytes(0, 12);
                b.put_slice(if video {
                    b"Sluice video\0"
                } else {
                    b"Sluice audio\0"
                });
            });
            boxed(b, b"minf", |b| {
                if video {
                    full(b, b"vmhd", 0, 1, |b| b.put_bytes(0, 8));
                } else {
                    full(b, b"smhd", 0, 0, |b| b.put_u32(0));
                }
                boxed(b, b"dinf", |b| {
                    full(b, b"dref", 0, 0, |b| {
                        b.put_u32(1);
                        full(b, b"url ", 0, 1, |_| {});
                    })
                });
                boxed(b, b"stbl", |b| {
                    full(b, b"stsd", 0, 0, |b| {
                        b.put_u32(1);
                        sample_entry(b, &t.track);
                    });
                    for kind in [b"stts", b"stsc", b"stco"] {
                        full(b, kind, 0, 0, |b| b.put_u32(0));
                    }
                    full(b, b"stsz", 0, 0, |b| {
                        b.put_u32(0);
                        b.put_u32(0);
                    });
                });
            });
        });
    });
}

fn sample_entry(b: &mut BytesMut, t: &Track) {
    match t.kind() {
        MediaKind::Video => {
            let (fourcc, cfg): (&[u8; 4], &[u8; 4]) = match t.codec {
                CodecId::H264 => (b"avc1", b"avcC"),
                CodecId::H265 => (b"hvc1", b"hvcC"),
                CodecId::Av1 => (b"av01", b"av1C"),
                _ => (b"vp09", b"vpcC"),
            };
            boxed(b, fourcc, |b| {
                b.put_bytes(0, 6);
                b.put_u16(1); // data reference index
                b.put_bytes(0, 16);
                b.put_u16(t.width as u16);
                b.put_u16(t.height as u16);
                b.put_u32(0x0048_0000);
                b.put_u32(0x0048_0000);
                b.put_u32(0);
                b.put_u16(1); // frame count
                b.put_bytes(0, 32); // compressor name
                b.put_u16(0x18);
                b.put_i16(-1);
                if t.codec == CodecId::Vp9 {
                    full(b, cfg, 1, 0, |b| b.put_slice(&vpcc_payload(&t.config)));
                } else if t.codec == CodecId::Av1 && t.config.is_empty() {
                    // Minimal av1C (main profile, level from the sequence header in the samples).
                    boxed(b, cfg, |b| b.put_slice(&[0x81, 0x08, 0x0c, 0x00]));
                } else {
                    boxed(b, cfg, |b| b.put_slice(&t.config));
                }
            });
        }
        MediaKind::Audio => {
            let channels = t.channels.max(1);
            let rate = if t.codec == CodecId::Opus {
                48_000
            } else {
                t.sample_rate
            };
            let fourcc = if t.codec == CodecId::Opus {
                b"Opus"
            } else {
                b"mp4a"
            };
            boxed(b, fourcc, |b| {
                b.put_bytes(0, 6);
                b.put_u16(1);
                b.put_bytes(0, 8);
                b.put_u16(channels as u16);
                b.put_u16(16);
                b.put_u32(0);
                b.put_u32(rate.min(0xffff) << 16);
                match t.codec {
                    CodecId::Opus => boxed(b, b"dOps", |b| dops(b, &t.config, channels)),
                    CodecId::Mp3 => esds(b, 0x6b, &[]),
                    _ => esds(b, 0x40, &t.config),
                }
            });
        }
    }
}

/// `dOps` from an `OpusHead` (little-endian) or, when there is none, a stereo/mono default.
fn dops(b: &mut BytesMut, head: &[u8], channels: u8) {
    if head.len() >= 19 && &head[..8] == b"OpusHead" {
        b.put_u8(0);
        b.put_u8(head[9]);
        b.put_u16(u16::from_le_bytes([head[10], head[11]]));
        b.put_u32(u32::from_le_bytes([head[12], head[13], head[14], head[15]]));
        b.put_i16(i16::from_le_bytes([head[16], head[17]]));
        b.put_u8(head[18]);
        if head[18] != 0 {
            b.put_slice(&head[19..]);
        }
    } else {
        b.put_u8(0);
        b.put_u8(channels);
        b.put_u16(312);
        b.put_u32(48_000);
        b.put_i16(0);
        b.put_u8(0);
    }
}

fn vpcc_payload(config: &[u8]) -> Vec<u8> {
    // Either the 4-byte-header full box payload or nothing: default to profile 0, 8-bit 4:2:0.
    if config.len() >= 8 {
        let c = if config.len() >= 12 && config[0] == 1 {
            &config[4..]
        } else {
            config
        };
        return c.to_vec();
    }
    vec![0, 10, 0x82, 0x02, 0x02, 0x02, 0x00, 0x00]
}

fn descriptor(b: &mut BytesMut, tag: u8, body: &[u8]) {
    b.put_u8(tag);
    // Four-byte size form, which every parser accepts.
    let n = body.len() as u32;
    b.put_slice(&[
        0x80 | (n >> 21) as u8 & 0x7f,
        0x80 | (n >> 14) as u8 & 0x7f,
        0x80 | (n >> 7) as u8 & 0x7f,
        n as u8 & 0x7f,
    ]);
    b.put_slice(body);
}

fn esds(b: &mut BytesMut, object_type: u8, asc: &[u8]) {
    full(b, b"esds", 0, 0, |b| {
        let mut dec_specific = BytesMut::new();
        if !asc.is_empty() {
            descriptor(&mut dec_specific, 0x05, asc);
        }
        let mut dec_config = BytesMut::new();
        dec_config.put_u8(object_type);
        dec_config.put_u8(0x15); // audio stream
        dec_config.put_slice(&[0, 0, 0]); // buffer size
        dec_config.put_u32(0); // max bitrate
        dec_config.put_u32(0); // avg bitrate
        dec_config.put_slice(&dec_specific);
        let mut es = BytesMut::new();
        es.put_u16(1); // ES id
        es.put_u8(0);
        descriptor(&mut es, 0x04, &dec_config);
        descriptor(&mut es, 0x06, &[0x02]);
        descriptor(b, 0x03, &es);
    });
}

/// RFC 6381 codec string of a track, as HLS `CODECS` and DASH `codecs` want it.
pub fn codec_string(t: &Track) -> Option<String> {
    use sluice_codec::{aac::AudioSpecificConfig, avc::AvcConfig, hevc::HevcConfig};
    Some(match t.codec {
        CodecId::H264 => AvcConfig::parse(&t.config).ok()?.codec_string(),
        CodecId::H265 => HevcConfig::parse(&t.config).ok()?.codec_string(),
        CodecId::Aac => AudioSpecificConfig::parse(&t.config).ok()?.codec_string(),
        CodecId::Opus => "opus".into(),
        CodecId::Mp3 => "mp4a.40.34".into(),
        CodecId::Av1 => {
            let c = &t.config;
            if c.len() >= 3 {
                let profile = c[1] >> 5;
                let level = c[1] & 0x1f;
                let tier = if c[2] & 0x80 != 0 { 'H' } else { 'M' };
                let depth = if c[2] & 0x40 != 0 {
                    if c[2] & 0x20 != 0 {
                        12
                    } else {
                        10
                    }
                } else {
                    8
                };
                format!("av01.{profile}.{level:02}{tier}.{depth:02}")
            } else {
                "av01.0.08M.08".into()
            }
        }
        CodecId::Vp9 => {
            let p = vpcc_payload(&t.config);
            format!("vp09.{:02}.{:02}.{:02}", p[0], p[1], p[2] >> 4)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc_track() -> Track {
        let rec = Bytes::from_static(include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc"));
        Track::video(0, CodecId::H264, rec, 640, 360)
    }

    /// Walks the boxes of `data` and returns (type, size) at the top level.
    fn top_boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= data.len() {
            let n = u32::from_be_bytes(data[i..i + 4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&data[i + 4..i + 8]).into_owned(), n));
            assert!(n >= 8 && i + n <= data.len(), "box overruns its parent");
            i += n;
        }
        assert_eq!(i, data.len());
        out
    }

    #[test]
    fn init_segment_has_ftyp_and_moov() {
        let audio = Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2);
        let w = Fmp4Writer::new(&[avc_track(), audio]).unwrap();
        let init = w.init();
        let boxes = top_boxes(&init);
        assert_eq!(
            boxes.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        let text = String::from_utf8_lossy(&init);
        for needle in ["avc1", "avcC", "mp4a", "esds", "trex", "mvex"] {
            assert!(text.contains(needle), "init lacks {needle}");
        }
    }

    #[test]
    fn fragment_offsets_point_at_samples() {
        let mut w = Fmp4Writer::new(&[avc_track()]).unwrap();
        let mut f = Fragment::default();
        f.push(&Frame::new(0, 0, 0, true, Bytes::from_static(b"AAAA")));
        f.push(&Frame::new(0, 3000, 6000, false, Bytes::from_static(b"BBBBBB")));
        let out = w.fragment(&f, &|_| Some(6000));
        let boxes = top_boxes(&out);
        assert_eq!(boxes[0].0, "moof");
        assert_eq!(boxes[1].0, "mdat");
        let moof_len = boxes[0].1;
        // trun: find its data offset and check it points at "AAAA".
        let pos = out.windows(4).position(|w| w == b"trun").unwrap();
        let off = u32::from_be_bytes(out[pos + 12..pos + 16].try_into().unwrap()) as usize;
        assert_eq!(&out[off..off + 4], b"AAAA");
        assert_eq!(off, moof_len + 8);
        // durations 3000 and 3000, cts 0 and 3000
        let d0 = u32::from_be_bytes(out[pos + 16..pos + 20].try_into().unwrap());
        let c1 = i32::from_be_bytes(out[pos + 44..pos + 48].try_into().unwrap());
        assert_eq!((d0, c1), (3000, 3000));
    }

    #[test]
    fn audio_times_do_not_drift() {
        let audio = Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x88]), 44_100, 2);
        // 1024-sample frames at 44.1 kHz in 90 kHz ticks, rounded as a publisher's ms clock would.
        let mut w = Fmp4Writer::new(&[audio]).unwrap();
        let mut f = Fragment::default();
        for i in 0..1000i64 {
            let ms = i * 1024 * 1000 / 44_100;
            f.push(&Frame::new(1, ms * 90, ms * 90, true, Bytes::from_static(b"x")));
        }
        let out = w.fragment(&f, &|_| None);
        let pos = out.windows(4).position(|w| w == b"trun").unwrap();
        let mut total = 0u64;
        for i in 0..1000 {
            let at = pos + 16 + i * 8;
            total += u32::from_be_bytes(out[at..at + 4].try_into().unwrap()) as u64;
        }
        // The durations add up to the span of the decode times (plus one last frame).
        let span = 999 * 1024 * 1000 / 44_100 * 44_100 / 1000;
        assert!(
            (total as i64 - span as i64 - 1024).abs() < 50,
            "total {total} span {span}"
        );
    }

    #[test]
    fn samples_interleave_in_decode_order() {
        let audio = Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2);
        let mut w = Fmp4Writer::new(&[avc_track(), audio]).unwrap();
        let mut f = Fragment::default();
        f.push(&Frame::new(0, 0, 0, true, Bytes::from_static(b"V0")));
        f.push(&Frame::new(0, 3000, 3000, false, Bytes::from_static(b"V1")));
        f.push(&Frame::new(1, 0, 0, true, Bytes::from_static(b"A0")));
        f.push(&Frame::new(1, 1920, 1920, true, Bytes::from_static(b"A1")));
        f.push(&Frame::new(1, 3840, 3840, true, Bytes::from_static(b"A2")));
        let out = w.fragment(&f, &|_| None);
        let mdat = out.windows(4).position(|w| w == b"mdat").unwrap() + 4;
        assert_eq!(&out[mdat..], b"V0A0A1V1A2");
        // Audio has two runs (A0A1, A2), video two (V0, V1).
        assert_eq!(out.windows(4).filter(|w| w == b"trun").count(), 4);
    }

    #[test]
    fn g711_is_refused() {
        let t = Track::audio(0, CodecId::Pcma, Bytes::new(), 8000, 1);
        assert!(Fmp4Writer::new(&[t]).is_err());
    }

    #[test]
    fn codec_strings() {
        assert!(codec_string(&avc_track()).unwrap().starts_with("avc1."));
        let a = Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2);
        assert_eq!(codec_string(&a).unwrap(), "mp4a.40.2");
    }
}
