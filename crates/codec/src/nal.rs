//! NAL unit framing: length-prefixed (AVCC/HVCC, the core's form) and Annex B (MPEG-TS).

use bytes::{BufMut, Bytes, BytesMut};

use crate::Error;

/// Iterates the NAL units of a length-prefixed buffer. Stops with an error on a bad length.
pub fn iter_avcc(data: &[u8], length_size: u8) -> impl Iterator<Item = Result<&[u8], Error>> {
    let n = length_size as usize;
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < n || n == 0 || n > 4 {
            rest = &[];
            return Some(Err(Error::Nal("truncated NAL unit length")));
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        if rest.len() < n + len {
            rest = &[];
            return Some(Err(Error::Nal("NAL unit longer than the frame")));
        }
        let nal = &rest[n..n + len];
        rest = &rest[n + len..];
        Some(Ok(nal))
    })
}

/// Which video codec a NAL unit stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalCodec {
    H264,
    H265,
}

impl NalCodec {
    pub fn nal_type(self, nal: &[u8]) -> u8 {
        match (self, nal.first()) {
            (NalCodec::H264, Some(b)) => b & 0x1f,
            (NalCodec::H265, Some(b)) => (b >> 1) & 0x3f,
            _ => 0xff,
        }
    }

    /// IDR (H.264) or IRAP (H.265) picture.
    pub fn is_keyframe_nal(self, nal: &[u8]) -> bool {
        let t = self.nal_type(nal);
        match self {
            NalCodec::H264 => t == 5,
            NalCodec::H265 => (16..=23).contains(&t),
        }
    }

    /// SPS/PPS (H.264) or VPS/SPS/PPS (H.265).
    pub fn is_parameter_set(self, t: u8) -> bool {
        match self {
            NalCodec::H264 => t == 7 || t == 8,
            NalCodec::H265 => (32..=34).contains(&t),
        }
    }

    /// Access unit delimiter.
    pub fn is_aud(self, t: u8) -> bool {
        match self {
            NalCodec::H264 => t == 9,
            NalCodec::H265 => t == 35,
        }
    }

    fn aud(self) -> &'static [u8] {
        match self {
            NalCodec::H264 => &[0, 0, 0, 1, 0x09, 0xf0],
            NalCodec::H265 => &[0, 0, 0, 1, 0x46, 0x01, 0x50],
        }
    }
}

/// Whether a length-prefixed frame holds a keyframe NAL unit.
pub fn is_keyframe(codec: NalCodec, data: &[u8], length_size: u8) -> bool {
    iter_avcc(data, length_size).any(|n| n.is_ok_and(|n| codec.is_keyframe_nal(n)))
}

/// Converts a length-prefixed frame to Annex B, starting with an access unit delimiter and, on
/// keyframes that lack them, the parameter sets (`params`: VPS/SPS/PPS NAL units in order) —
/// what MPEG-TS players need to start decoding at any keyframe.
pub fn avcc_to_annexb(
    codec: NalCodec,
    data: &[u8],
    length_size: u8,
    params: &[Bytes],
    keyframe: bool,
) -> Result<Bytes, Error> {
    to_annexb(codec, data, length_size, params, keyframe, true)
}

/// Like [`avcc_to_annexb`] without the access unit delimiter: what RTP packetizers (WebRTC,
/// RTSP) take, since an AUD on the wire is useless to a browser's decoder.
pub fn avcc_to_annexb_no_aud(
    codec: NalCodec,
    data: &[u8],
    length_size: u8,
    params: &[Bytes],
    keyframe: bool,
) -> Result<Bytes, Error> {
    to_annexb(codec, data, length_size, params, keyframe, false)
}

fn to_annexb(
    codec: NalCodec,
    data: &[u8],
    length_size: u8,
    params: &[Bytes],
    keyframe: bool,
    aud: bool,
) -> Result<Bytes, Error> {
    let mut out =
        BytesMut::with_capacity(data.len() + 64 + params.iter().map(|p| p.len() + 4).sum::<usize>());
    if aud {
        out.put_slice(codec.aud());
    }
    let mut has_params = false;
    for nal in iter_avcc(data, length_size) {
        if codec.is_parameter_set(codec.nal_type(nal?)) {
            has_params = true;
        }
    }
    if keyframe && !has_params {
        for p in params {
            out.put_slice(&[0, 0, 0, 1]);
            out.put_slice(p);
        }
    }
    for nal in iter_avcc(data, length_size) {
        let nal = nal?;
        if nal.is_empty() || codec.is_aud(codec.nal_type(nal)) {
            continue;
        }
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
    }
    Ok(out.freeze())
}

/// Splits an Annex B buffer into NAL units (without start codes).
///
/// Start codes are found with `memchr`'s SIMD substring search: this runs over every byte of
/// every video frame that arrives as MPEG-TS.
pub fn iter_annexb(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = memchr::memmem::find_iter(data, &[0, 0, 1])
        .map(|i| i + 3)
        .peekable();
    std::iter::from_fn(move || {
        while let Some(s) = starts.next() {
            let mut e = starts.peek().map_or(data.len(), |&n| n - 3);
            while e > s && data[e - 1] == 0 {
                e -= 1; // trailing zero of a 4-byte start code
            }
            if e > s {
                return Some(&data[s..e]);
            }
        }
        None
    })
}

/// Converts Annex B to 4-byte length-prefixed NAL units.
pub fn annexb_to_avcc(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for nal in iter_annexb(data) {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keyframe_gets_aud_and_params() {
        let frame = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x06];
        let sps = Bytes::from_static(&[0x67, 1]);
        let pps = Bytes::from_static(&[0x68, 2]);
        let ab = avcc_to_annexb(NalCodec::H264, &frame, 4, &[sps, pps], true).unwrap();
        assert_eq!(
            &ab[..],
            &[
                0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 0xaa, 0, 0,
                0, 1, 6
            ]
        );
        assert!(is_keyframe(NalCodec::H264, &frame, 4));
        assert!(avcc_to_annexb(NalCodec::H264, &frame[..7], 4, &[], false).is_err());
    }

    proptest! {
        #[test]
        fn annexb_round_trip(nals in prop::collection::vec(prop::collection::vec(1u8..=255, 1..50), 1..8)) {
            let mut avcc = Vec::new();
            for n in &nals {
                avcc.extend_from_slice(&(n.len() as u32).to_be_bytes());
                avcc.extend_from_slice(n);
            }
            let ab = avcc_to_annexb(NalCodec::H264, &avcc, 4, &[], false).unwrap();
            let back = annexb_to_avcc(&ab);
            // The access unit delimiter is added in front.
            let got: Vec<&[u8]> = iter_avcc(&back, 4).map(Result::unwrap).skip(1).collect();
            let want: Vec<&[u8]> = nals.iter().filter(|n| n[0] & 0x1f != 9).map(|n| &n[..]).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..256), ls in 0u8..6) {
            let _ = avcc_to_annexb(NalCodec::H265, &data, ls, &[], true);
            let _ = annexb_to_avcc(&data);
            let _ = is_keyframe(NalCodec::H264, &data, ls);
        }
    }
}
