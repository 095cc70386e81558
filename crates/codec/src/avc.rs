//! H.264: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3), SPS picture size, codec string.

use bytes::Bytes;

use crate::Error;

/// A parsed AVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Bytes in each NAL unit length prefix (1, 2 or 4).
    pub length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl AvcConfig {
    pub fn parse(rec: &Bytes) -> Result<AvcConfig, Error> {
        let e = Error::AvcConfig;
        if rec.len() < 7 {
            return Err(e("shorter than 7 bytes"));
        }
        if rec[0] != 1 {
            return Err(e("configurationVersion is not 1"));
        }
        let length_size = (rec[4] & 3) + 1;
        if length_size == 3 {
            return Err(e("NAL length size of 3 bytes"));
        }
        let mut pos = 5;
        let list = |pos: &mut usize, count: usize| -> Result<Vec<Bytes>, Error> {
            let mut v = Vec::new();
            for _ in 0..count {
                let len = rec
                    .get(*pos..*pos + 2)
                    .ok_or(e("truncated parameter set length"))?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                let start = *pos + 2;
                if start + len > rec.len() {
                    return Err(e("truncated parameter set"));
                }
                v.push(rec.slice(start..start + len));
                *pos = start + len;
            }
            Ok(v)
        };
        let nsps = (rec[pos] & 0x1f) as usize;
        pos += 1;
        let sps = list(&mut pos, nsps)?;
        let npps = *rec.get(pos).ok_or(e("missing PPS count"))? as usize;
        pos += 1;
        let pps = list(&mut pos, npps)?;
        if sps.is_empty() {
            return Err(e("no SPS"));
        }
        Ok(AvcConfig {
            profile: rec[1],
            compatibility: rec[2],
            level: rec[3],
            length_size,
            sps,
            pps,
        })
    }

    /// Builds a record from one SPS and PPS (4-byte NAL lengths).
    pub fn build(sps: &[u8], pps: &[u8]) -> Bytes {
        let mut b = vec![
            1,
            *sps.get(1).unwrap_or(&0),
            *sps.get(2).unwrap_or(&0),
            *sps.get(3).unwrap_or(&0),
            0xff,
            0xe1,
        ];
        b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        b.extend_from_slice(sps);
        b.push(1);
        b.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        b.extend_from_slice(pps);
        Bytes::from(b)
    }

    /// Picture size in pixels, after cropping, from the first SPS.
    pub fn dimensions(&self) -> Result<(u32, u32), Error> {
        sps_dimensions(&self.sps[0])
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }
}

/// Picture size of an H.264 SPS NAL unit (header byte included).
pub fn sps_dimensions(sps: &[u8]) -> Result<(u32, u32), Error> {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::rbsp::{decode_nal, BitReader};
    // h264-reader's decode_nal panics on an empty NAL unit (found by fuzzing): refuse it here.
    if sps.len() < 2 {
        return Err(Error::AvcSps("SPS NAL unit is shorter than 2 bytes".into()));
    }
    let rbsp = decode_nal(sps).map_err(|e| Error::AvcSps(e.to_string()))?;
    let sps =
        SeqParameterSet::from_bits(BitReader::new(&*rbsp)).map_err(|e| Error::AvcSps(format!("{e:?}")))?;
    sps.pixel_dimensions()
        .map_err(|e| Error::AvcSps(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const X264_640X360: &[u8] = include_bytes!("../testdata/ffmpeg_x264_640x360.avcc");
    const X264_1080P: &[u8] = include_bytes!("../testdata/ffmpeg_x264_1920x1080.avcc");

    /// Regression (cargo fuzz, codec_config): an empty SPS made h264-reader panic.
    #[test]
    fn empty_sps_is_an_error_not_a_panic() {
        assert!(sps_dimensions(&[]).is_err());
        assert!(sps_dimensions(&[0x67]).is_err());
        // A record whose SPS has length 0.
        let rec = Bytes::from_static(&[1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 0, 1, 0, 1, 0x68]);
        if let Ok(c) = AvcConfig::parse(&rec) {
            assert!(c.dimensions().is_err());
        }
    }

    #[test]
    fn parses_x264_record() {
        let c = AvcConfig::parse(&Bytes::from_static(X264_640X360)).unwrap();
        assert_eq!((c.profile, c.level, c.length_size), (0x64, 0x1e, 4));
        assert_eq!(c.codec_string(), "avc1.64001e");
        assert_eq!(c.dimensions().unwrap(), (640, 360));
        // 1080p is coded as 1088 lines and cropped.
        let c = AvcConfig::parse(&Bytes::from_static(X264_1080P)).unwrap();
        assert_eq!(c.dimensions().unwrap(), (1920, 1080));
        assert_eq!(c.codec_string(), "avc1.640028");
        let rebuilt = AvcConfig::build(&c.sps[0], &c.pps[0]);
        assert_eq!(AvcConfig::parse(&rebuilt).unwrap().sps, c.sps);
    }

    #[test]
    fn truncated_records_are_errors() {
        for n in 0..X264_640X360.len() {
            let _ = AvcConfig::parse(&Bytes::copy_from_slice(&X264_640X360[..n]));
        }
        assert!(AvcConfig::parse(&Bytes::copy_from_slice(&X264_640X360[..20])).is_err());
    }
}
