//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) and ADTS headers (§1.A.2.2).

use crate::bits::BitReader;
use crate::Error;

const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// A parsed AudioSpecificConfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
    /// Index into the standard rate table, or 15 for an explicit rate.
    pub rate_index: u8,
}

impl AudioSpecificConfig {
    pub fn parse(b: &[u8]) -> Result<Self, Error> {
        let e = Error::AacConfig("truncated");
        let mut r = BitReader::new(b);
        let mut object_type = r.bits(5).ok_or(e.clone())? as u8;
        if object_type == 31 {
            object_type = 32 + r.bits(6).ok_or(e.clone())? as u8;
        }
        let rate_index = r.bits(4).ok_or(e.clone())? as u8;
        let sample_rate = if rate_index == 15 {
            r.bits(24).ok_or(e.clone())?
        } else {
            *RATES
                .get(rate_index as usize)
                .ok_or(Error::AacConfig("reserved sampling frequency index"))?
        };
        let channels = match r.bits(4).ok_or(e)? {
            7 => 8,
            c @ 0..=6 => c as u8,
            _ => return Err(Error::AacConfig("unsupported channel configuration")),
        };
        if sample_rate == 0 {
            return Err(Error::AacConfig("sampling rate 0"));
        }
        Ok(AudioSpecificConfig {
            object_type,
            sample_rate,
            channels,
            rate_index,
        })
    }

    /// Builds a 2-byte config for a standard rate (AAC-LC is object type 2).
    pub fn build(object_type: u8, sample_rate: u32, channels: u8) -> Option<[u8; 2]> {
        let idx = RATES.iter().position(|&r| r == sample_rate)? as u16;
        let ch = if channels == 8 { 7 } else { channels as u16 };
        let v = ((object_type as u16 & 0x1f) << 11) | (idx << 7) | (ch << 3);
        Some(v.to_be_bytes())
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The 7-byte ADTS header for a raw frame of `payload_len` bytes (MPEG-TS carries AAC as ADTS).
    pub fn adts_header(&self, payload_len: usize) -> [u8; 7] {
        let len = (payload_len + 7).min(0x1fff) as u32;
        let profile = (self.object_type.clamp(1, 4) - 1) as u32;
        let idx = if self.rate_index == 15 {
            RATES.iter().position(|&r| r == self.sample_rate).unwrap_or(3) as u32
        } else {
            self.rate_index as u32
        };
        let ch = if self.channels == 8 {
            7
        } else {
            self.channels as u32 & 7
        };
        [
            0xff,
            0xf1,
            ((profile << 6) | (idx << 2) | (ch >> 2)) as u8,
            (((ch & 3) << 6) | (len >> 11)) as u8,
            ((len >> 3) & 0xff) as u8,
            (((len & 7) << 5) | 0x1f) as u8,
            0xfc,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_configs() {
        // What ffmpeg's aac encoder writes at 48 kHz stereo and 44.1 kHz mono.
        let c = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 48000, 2));
        assert_eq!(c.codec_string(), "mp4a.40.2");
        let c = AudioSpecificConfig::parse(&[0x12, 0x08]).unwrap();
        assert_eq!((c.sample_rate, c.channels), (44100, 1));
        assert_eq!(AudioSpecificConfig::build(2, 48000, 2), Some([0x11, 0x90]));
        assert!(AudioSpecificConfig::parse(&[0x11]).is_err());
    }

    #[test]
    fn adts() {
        let c = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        let h = c.adts_header(100);
        assert_eq!(&h[..2], &[0xff, 0xf1]);
        let len = ((h[3] as usize & 3) << 11) | ((h[4] as usize) << 3) | (h[5] as usize >> 5);
        assert_eq!(len, 107);
        assert_eq!((h[2] >> 2) & 0xf, 3, "48 kHz index");
    }
}
