//! A track's profile and level, as an operator reads them ("High", "3.1"), from its codec
//! configuration record: what the API shows per track.
//!
//! Reads only the header bytes that carry them, so a record that is short, odd or half-parsed
//! elsewhere still gives what it has; nothing here panics, any unknown value is `None`.

use sluice_media::{CodecId, Track};

/// Profile and level of one track (`None` where the codec has none or the record does not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecInfo {
    /// "High", "Main 10", "LC", "HE-AAC", ...
    pub profile: Option<String>,
    /// "3.1", "4.0", "1b"; AV1's unrestricted level is "max".
    pub level: Option<String>,
}

/// The profile and level that `t.config` announces (see [`Track`] for what it holds per codec).
pub fn codec_info(t: &Track) -> CodecInfo {
    let c = &t.config[..];
    match t.codec {
        CodecId::H264 => avc(c),
        CodecId::H265 => hevc(c),
        CodecId::Av1 => av1(c),
        CodecId::Vp9 => vp9(c),
        CodecId::Aac => CodecInfo {
            profile: aac_profile(c),
            level: None,
        },
        _ => CodecInfo::default(),
    }
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1): profile_idc, the constraint
/// flags and level_idc are bytes 1 to 3, copied from the SPS (H.264 Annex A.2 names them).
fn avc(c: &[u8]) -> CodecInfo {
    if c.len() < 4 || c[0] != 1 {
        return CodecInfo::default();
    }
    let (idc, flags, level) = (c[1], c[2], c[3]);
    let set = |n: u8| flags & (0x80 >> n) != 0;
    let profile = match idc {
        66 if set(1) => "Constrained Baseline",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 if set(4) && set(5) => "Constrained High",
        100 if set(4) => "Progressive High",
        100 => "High",
        110 if set(3) => "High 10 Intra",
        110 => "High 10",
        122 if set(3) => "High 4:2:2 Intra",
        122 => "High 4:2:2",
        244 if set(3) => "High 4:4:4 Intra",
        244 => "High 4:4:4 Predictive",
        44 => "CAVLC 4:4:4 Intra",
        83 => "Scalable Baseline",
        86 => "Scalable High",
        118 => "Multiview High",
        128 => "Stereo High",
        _ => "",
    };
    // Level 1b: level_idc 9, or 11 with constraint_set3 in the profiles before High (A.3.1).
    let level = match level {
        0 => None,
        9 => Some("1b".to_owned()),
        11 if set(3) && matches!(idc, 66 | 77 | 88) => Some("1b".to_owned()),
        l => Some(format!("{}.{}", l / 10, l % 10)),
    };
    CodecInfo {
        profile: (!profile.is_empty()).then(|| profile.to_owned()),
        level,
    }
}

/// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1): general_profile_idc in the low
/// 5 bits of byte 1, the compatibility flags in bytes 2 to 5, general_level_idc (30 × the
/// level) in byte 12. Profile names from H.265 Annex A.3.
fn hevc(c: &[u8]) -> CodecInfo {
    if c.len() < 13 {
        return CodecInfo::default();
    }
    let mut idc = c[1] & 0x1f;
    if idc == 0 {
        // Some encoders leave profile_idc 0 and say it with the first compatibility flag.
        let flags = u32::from_be_bytes([c[2], c[3], c[4], c[5]]);
        idc = flags.leading_zeros() as u8;
    }
    let profile = match idc {
        1 => "Main",
        2 => "Main 10",
        3 => "Main Still Picture",
        4 => "Format Range Extensions",
        5 => "High Throughput",
        6 => "Multiview Main",
        7 => "Scalable Main",
        8 => "3D Main",
        9 => "Screen Content Coding",
        10 => "Scalable Format Range Extensions",
        11 => "High Throughput Screen Content Coding",
        _ => "",
    };
    let level = c[12];
    CodecInfo {
        profile: (!profile.is_empty()).then(|| profile.to_owned()),
        level: (level > 0).then(|| format!("{}.{}", level / 30, level % 30 / 3)),
    }
}

/// AV1CodecConfigurationRecord (AV1 ISOBMFF binding §2.3): marker and version in byte 0
/// (0x81), seq_profile in the top 3 bits of byte 1 and seq_level_idx_0 in its low 5 bits; level
/// X.Y is idx = (X - 2) × 4 + Y (AV1 spec Annex A.3), 31 meaning no restriction.
fn av1(c: &[u8]) -> CodecInfo {
    if c.len() < 2 || c[0] != 0x81 {
        return CodecInfo::default();
    }
    let profile = match c[1] >> 5 {
        0 => Some("Main"),
        1 => Some("High"),
        2 => Some("Professional"),
        _ => None,
    };
    let idx = c[1] & 0x1f;
    CodecInfo {
        profile: profile.map(str::to_owned),
        level: Some(if idx == 31 {
            "max".to_owned()
        } else {
            format!("{}.{}", 2 + (idx >> 2), idx & 3)
        }),
    }
}

/// VP Codec Configuration (`vpcC`, VP codec ISOBMFF binding §2.2): profile then level (10 × the
/// level), after the 4-byte full box header when the config carries it.
fn vp9(c: &[u8]) -> CodecInfo {
    let p = if c.len() >= 12 && c[0] == 1 { &c[4..] } else { c };
    if p.len() < 8 {
        return CodecInfo::default();
    }
    CodecInfo {
        profile: (p[0] <= 3).then(|| format!("Profile {}", p[0])),
        level: (p[1] > 0).then(|| format!("{}.{}", p[1] / 10, p[1] % 10)),
    }
}

/// The AAC profile from an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1, object types of
/// Table 1.1), including HE-AAC signalled implicitly: an LC config followed by the SBR (0x2b7)
/// and PS (0x548) sync extensions (§1.6.6.2), as FLV publishers send it.
fn aac_profile(c: &[u8]) -> Option<String> {
    let mut r = Bits { data: c, pos: 0 };
    let mut aot = r.object_type()?;
    let rate_index = r.read(4)?;
    if rate_index == 15 {
        r.read(24)?;
    }
    let channels = r.read(4)?;
    if aot == 5 || aot == 29 {
        // Explicit signalling: the extension's rate, then the core's object type.
        return Some(if aot == 5 { "HE-AAC" } else { "HE-AAC v2" }.to_owned());
    }
    if matches!(aot, 1..=4) && channels != 0 {
        // GASpecificConfig: frameLengthFlag, dependsOnCoreCoder (+ coreCoderDelay), extensionFlag.
        let ga = r.read(1).zip(r.read(1));
        let ga = match ga {
            Some((_, 1)) => r.read(14).and_then(|_| r.read(1)),
            Some(_) => r.read(1),
            None => None,
        };
        if ga.is_some() && r.read(11) == Some(0x2b7) && r.object_type() == Some(5) && r.read(1) == Some(1) {
            aot = 5;
            let ext_rate = r.read(4);
            if ext_rate == Some(15) {
                r.read(24);
            }
            if r.read(11) == Some(0x548) && r.read(1) == Some(1) {
                aot = 29;
            }
        }
    }
    let name = match aot {
        1 => "Main",
        2 => "LC",
        3 => "SSR",
        4 => "LTP",
        5 => "HE-AAC",
        6 => "Scalable",
        17 => "ER LC",
        19 => "ER LTP",
        20 => "ER Scalable",
        23 => "LD",
        29 => "HE-AAC v2",
        39 => "ELD",
        42 => "xHE-AAC",
        n => return Some(format!("object type {n}")),
    };
    Some(name.to_owned())
}

/// A big-endian bit reader that answers `None` past the end.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | ((byte >> (7 - self.pos % 8)) & 1) as u32;
            self.pos += 1;
        }
        Some(v)
    }

    /// audioObjectType, with its escape (31 → 32 + 6 bits).
    fn object_type(&mut self) -> Option<u32> {
        match self.read(5)? {
            31 => Some(32 + self.read(6)?),
            n => Some(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn info(codec: CodecId, config: &[u8]) -> CodecInfo {
        let config = Bytes::copy_from_slice(config);
        let t = if codec.kind() == sluice_media::MediaKind::Video {
            Track::video(0, codec, config, 640, 360)
        } else {
            Track::audio(1, codec, config, 48_000, 2)
        };
        codec_info(&t)
    }

    fn pl(p: &str, l: &str) -> CodecInfo {
        CodecInfo {
            profile: Some(p.into()),
            level: Some(l.into()),
        }
    }

    /// Records written by ffmpeg 5.1 (libx264, libx265, SVT-AV1 1.4.1, libvpx-vp9, its AAC
    /// encoder) for 640x360 test sources.
    #[test]
    fn ffmpeg_records() {
        let avcc = include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc");
        assert_eq!(info(CodecId::H264, avcc), pl("High", "3.0"));
        let hvcc = include_bytes!("../../codec/testdata/ffmpeg_x265_640x360.hvcc");
        assert_eq!(info(CodecId::H265, hvcc), pl("Main", "2.1"));
        let av1c = b"\x81\x01\x0c\x00\x0a\x0b\x00\x00\x00\x0c\xc4\xff\x67\x00\xbe\x00\x10";
        assert_eq!(info(CodecId::Av1, av1c), pl("Main", "2.1"));
        let vpcc = b"\x01\x00\x00\x00\x00\x15\x82\x02\x02\x02\x00\x00";
        assert_eq!(info(CodecId::Vp9, vpcc), pl("Profile 0", "2.1"));
        // LC with the SBR sync extension saying "no SBR" (ffmpeg's native encoder writes it).
        let asc = b"\x11\x90\x56\xe5\x00";
        assert_eq!(info(CodecId::Aac, asc).profile.as_deref(), Some("LC"));
        assert_eq!(info(CodecId::Aac, b"\x11\x90").profile.as_deref(), Some("LC"));
    }

    #[test]
    fn profiles_and_levels_from_the_header_bytes() {
        // H.264: constraint flags and level 1b.
        assert_eq!(
            info(CodecId::H264, b"\x01\x42\xc0\x1f"),
            pl("Constrained Baseline", "3.1")
        );
        assert_eq!(info(CodecId::H264, b"\x01\x4d\x10\x0b"), pl("Main", "1b"));
        assert_eq!(info(CodecId::H264, b"\x01\x6e\x00\x33"), pl("High 10", "5.1"));
        // H.265 Main 10 at level 4.1 (123), high tier bit set.
        let hvcc = b"\x01\x22\x20\x00\x00\x00\x90\x00\x00\x00\x00\x00\x7b";
        assert_eq!(info(CodecId::H265, hvcc), pl("Main 10", "4.1"));
        // AV1 High, seq_level_idx 31.
        assert_eq!(info(CodecId::Av1, b"\x81\x3f"), pl("High", "max"));
        // AAC: explicit HE-AAC (object type 5), HE-AAC v2 (29), implicit SBR and PS.
        assert_eq!(
            info(CodecId::Aac, b"\x2b\x11\x88").profile.as_deref(),
            Some("HE-AAC")
        );
        assert_eq!(
            info(CodecId::Aac, b"\xeb\x11\x88").profile.as_deref(),
            Some("HE-AAC v2")
        );
        let implicit = b"\x13\x10\x56\xe5\x9d\x48\x00";
        assert_eq!(info(CodecId::Aac, implicit).profile.as_deref(), Some("HE-AAC"));
        let ps = b"\x13\x10\x56\xe5\x9d\x48\x80";
        assert_eq!(info(CodecId::Aac, ps).profile.as_deref(), Some("HE-AAC v2"));
        // Escaped object type 42 (USAC).
        assert_eq!(
            info(CodecId::Aac, b"\xf9\x46\x40").profile.as_deref(),
            Some("xHE-AAC")
        );
    }

    #[test]
    fn short_or_odd_records_give_nothing_and_never_panic() {
        assert_eq!(info(CodecId::H264, b""), CodecInfo::default());
        assert_eq!(info(CodecId::H264, b"\x01\x64\x00"), CodecInfo::default());
        assert_eq!(info(CodecId::H264, b"\x02\x64\x00\x1f"), CodecInfo::default());
        assert_eq!(info(CodecId::H265, b"\x01\x01\x60"), CodecInfo::default());
        assert_eq!(info(CodecId::Av1, b"\x81"), CodecInfo::default());
        assert_eq!(info(CodecId::Vp9, b"\x00\x0a"), CodecInfo::default());
        assert_eq!(info(CodecId::Aac, b"\x11"), CodecInfo::default());
        assert_eq!(info(CodecId::Opus, b"OpusHead"), CodecInfo::default());
        // Unknown ids: no profile, but the level when it is there.
        assert_eq!(
            info(CodecId::H264, b"\x01\x07\x00\x1e"),
            CodecInfo {
                profile: None,
                level: Some("3.0".into())
            }
        );
        for len in 0..=24 {
            for fill in [0x00u8, 0xff, 0x81, 0x01] {
                let bytes = vec![fill; len];
                for codec in [
                    CodecId::H264,
                    CodecId::H265,
                    CodecId::Av1,
                    CodecId::Vp9,
                    CodecId::Aac,
                ] {
                    let _ = info(codec, &bytes);
                }
            }
        }
    }
}
