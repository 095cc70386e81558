//! H.265: the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3), SPS picture size
//! (ITU-T H.265 §7.3.2.2), and the RFC 6381 codec string (ISO/IEC 14496-15 Annex E).

use bytes::Bytes;

use crate::bits::{rbsp, BitReader};
use crate::Error;

pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;

/// A parsed HEVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    pub profile_space: u8,
    pub tier: u8,
    pub profile_idc: u8,
    pub compatibility_flags: u32,
    pub constraint_flags: [u8; 6],
    pub level_idc: u8,
    pub length_size: u8,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl HevcConfig {
    pub fn parse(rec: &Bytes) -> Result<HevcConfig, Error> {
        let e = Error::HevcConfig;
        if rec.len() < 23 {
            return Err(e("shorter than 23 bytes"));
        }
        let mut c = HevcConfig {
            profile_space: rec[1] >> 6,
            tier: (rec[1] >> 5) & 1,
            profile_idc: rec[1] & 0x1f,
            compatibility_flags: u32::from_be_bytes([rec[2], rec[3], rec[4], rec[5]]),
            constraint_flags: rec[6..12].try_into().expect("6 bytes"),
            level_idc: rec[12],
            length_size: (rec[21] & 3) + 1,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
        };
        let arrays = rec[22] as usize;
        let mut pos = 23;
        for _ in 0..arrays {
            let hdr = rec.get(pos..pos + 3).ok_or(e("truncated array header"))?;
            let nal_type = hdr[0] & 0x3f;
            let count = u16::from_be_bytes([hdr[1], hdr[2]]) as usize;
            pos += 3;
            for _ in 0..count {
                let l = rec.get(pos..pos + 2).ok_or(e("truncated NAL unit length"))?;
                let len = u16::from_be_bytes([l[0], l[1]]) as usize;
                let nal = rec.get(pos + 2..pos + 2 + len).ok_or(e("truncated NAL unit"))?;
                let nal = rec.slice_ref(nal);
                pos += 2 + len;
                match nal_type {
                    NAL_VPS => c.vps.push(nal),
                    NAL_SPS => c.sps.push(nal),
                    NAL_PPS => c.pps.push(nal),
                    _ => {}
                }
            }
        }
        if c.sps.is_empty() {
            return Err(e("no SPS"));
        }
        Ok(c)
    }

    pub fn dimensions(&self) -> Result<(u32, u32), Error> {
        sps_dimensions(&self.sps[0])
    }

    /// Builds a record (4-byte NAL lengths) from parameter sets, taking the profile, tier and
    /// level from the SPS's profile_tier_level (ITU-T H.265 §7.3.3).
    pub fn build(vps: &[u8], sps: &[u8], pps: &[u8]) -> Result<Bytes, Error> {
        let e = Error::HevcSps;
        let data = rbsp(sps.get(2..).ok_or(e("truncated"))?);
        // sps_video_parameter_set_id(4) max_sub_layers_minus1(3) temporal_id_nesting(1), then
        // general profile_space/tier/profile_idc(8), compatibility(32), constraints(48), level(8).
        let ptl = data.get(1..13).ok_or(e("truncated profile_tier_level"))?;
        let mut out = Vec::with_capacity(23 + 15 + vps.len() + sps.len() + pps.len());
        out.push(1);
        out.extend_from_slice(ptl);
        out.extend_from_slice(&[0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0x00, 0x00]);
        let nested = data[0] & 1;
        let layers = ((data[0] >> 1) & 7) + 1;
        out.push((layers << 3) | (nested << 2) | 3);
        out.push(3);
        for (t, nal) in [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)] {
            out.push(0x80 | t);
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&(nal.len().min(0xffff) as u16).to_be_bytes());
            out.extend_from_slice(&nal[..nal.len().min(0xffff)]);
        }
        Ok(Bytes::from(out))
    }

    /// RFC 6381 codec string, e.g. `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self) -> String {
        let space = ["", "A", "B", "C"][self.profile_space as usize & 3];
        let compat = self.compatibility_flags.reverse_bits();
        let tier = if self.tier == 1 { 'H' } else { 'L' };
        let mut s = format!(
            "hvc1.{space}{}.{compat:X}.{tier}{}",
            self.profile_idc, self.level_idc
        );
        let last = self.constraint_flags.iter().rposition(|&b| b != 0);
        if let Some(last) = last {
            for b in &self.constraint_flags[..=last] {
                s.push_str(&format!(".{b:X}"));
            }
        }
        s
    }
}

/// Picture size of an H.265 SPS NAL unit (2-byte header included), after the conformance window.
pub fn sps_dimensions(nal: &[u8]) -> Result<(u32, u32), Error> {
    let e = Error::HevcSps;
    let data = rbsp(nal.get(2..).ok_or(e("truncated"))?);
    let mut r = BitReader::new(&data);
    let t = e("truncated");
    r.skip(4).ok_or(t.clone())?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3).ok_or(t.clone())? as usize;
    r.skip(1).ok_or(t.clone())?; // temporal_id_nesting
                                 // profile_tier_level(1, max_sub_layers_minus1): general part is 88 bits + level 8 bits.
    r.skip(96).ok_or(t.clone())?;
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1) {
        *p = (r.bit().ok_or(t.clone())? == 1, r.bit().ok_or(t.clone())? == 1);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1)).ok_or(t.clone())?;
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1) {
        if profile {
            r.skip(88).ok_or(t.clone())?;
        }
        if level {
            r.skip(8).ok_or(t.clone())?;
        }
    }
    r.ue().ok_or(t.clone())?; // sps_seq_parameter_set_id
    let chroma = r.ue().ok_or(t.clone())?;
    if chroma == 3 {
        r.skip(1).ok_or(t.clone())?;
    }
    let mut w = r.ue().ok_or(t.clone())?;
    let mut h = r.ue().ok_or(t.clone())?;
    if r.bit().ok_or(t.clone())? == 1 {
        let (sw, sh) = match chroma {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let (l, rt, tp, b) = (
            r.ue().ok_or(t.clone())?,
            r.ue().ok_or(t.clone())?,
            r.ue().ok_or(t.clone())?,
            r.ue().ok_or(t)?,
        );
        w = w.saturating_sub(l.saturating_add(rt).saturating_mul(sw));
        h = h.saturating_sub(tp.saturating_add(b).saturating_mul(sh));
    }
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(e("implausible picture size"));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (cargo fuzz, codec_config): huge conformance-window offsets overflowed the
    /// crop's multiplication (a panic in debug builds).
    #[test]
    fn huge_crop_offsets_are_an_error_not_a_panic() {
        let data = [
            0x12, 0x00, 0x80, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x07, 0x00, 0x27, 0x00, 0x14, 0xaf,
            0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x07, 0x27,
        ];
        assert!(sps_dimensions(&data).is_err());
    }

    const X265_640X360: &[u8] = include_bytes!("../testdata/ffmpeg_x265_640x360.hvcc");

    #[test]
    fn parses_x265_record() {
        let c = HevcConfig::parse(&Bytes::from_static(X265_640X360)).unwrap();
        assert_eq!((c.vps.len(), c.sps.len(), c.pps.len()), (1, 1, 1));
        assert_eq!(c.dimensions().unwrap(), (640, 360));
        assert_eq!(c.codec_string(), "hvc1.1.6.L63.90");
        for n in 0..X265_640X360.len().min(200) {
            let _ = HevcConfig::parse(&Bytes::copy_from_slice(&X265_640X360[..n]));
        }
    }

    #[test]
    fn builds_record_from_parameter_sets() {
        let c = HevcConfig::parse(&Bytes::from_static(X265_640X360)).unwrap();
        let rec = HevcConfig::build(&c.vps[0], &c.sps[0], &c.pps[0]).unwrap();
        let again = HevcConfig::parse(&rec).unwrap();
        assert_eq!(again.codec_string(), c.codec_string());
        assert_eq!(again.dimensions().unwrap(), (640, 360));
        assert_eq!((again.vps[0].clone(), again.length_size), (c.vps[0].clone(), 4));
    }
}
