//! VP8 and VP9 frame headers: whether a frame is a keyframe and, for keyframes, the picture
//! size (RFC 6386 section 9.1; VP9 bitstream specification section 6.2, uncompressed header).

use crate::bits::BitReader;

/// What a frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub keyframe: bool,
    /// Width and height, known on keyframes.
    pub size: Option<(u32, u32)>,
}

/// Reads a VP8 frame header; `None` if the data is too short to be a frame.
pub fn vp8_frame(data: &[u8]) -> Option<FrameInfo> {
    let b0 = *data.first()?;
    let keyframe = b0 & 1 == 0;
    if !keyframe {
        return Some(FrameInfo { keyframe, size: None });
    }
    // 3-byte frame tag, then the start code 9d 01 2a, then 14-bit width and height.
    if data.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([data[6], *data.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*data.get(8)?, *data.get(9)?]) & 0x3fff;
    Some(FrameInfo {
        keyframe,
        size: Some((w as u32, h as u32)),
    })
}

/// Reads a VP9 uncompressed frame header; `None` if it is not one.
pub fn vp9_frame(data: &[u8]) -> Option<FrameInfo> {
    let mut r = BitReader::new(data);
    if r.bits(2)? != 2 {
        return None; // frame_marker
    }
    let profile = r.bit()? | (r.bit()? << 1);
    if profile == 3 {
        r.bit()?; // reserved_zero
    }
    if r.bit()? == 1 {
        // show_existing_frame: a repeat of an earlier frame, never a keyframe.
        return Some(FrameInfo {
            keyframe: false,
            size: None,
        });
    }
    let keyframe = r.bit()? == 0; // frame_type
    if !keyframe {
        return Some(FrameInfo { keyframe, size: None });
    }
    r.bit()?; // show_frame
    r.bit()?; // error_resilient_mode
    if r.bits(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config
    if profile >= 2 {
        r.bit()?; // ten_or_twelve_bit
    }
    let color_space = r.bits(3)?;
    if color_space != 7 {
        r.bit()?; // color_range
        if profile == 1 || profile == 3 {
            r.bits(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.bit()?; // reserved_zero
    }
    let w = r.bits(16)? + 1;
    let h = r.bits(16)? + 1;
    Some(FrameInfo {
        keyframe,
        size: Some((w, h)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vp8_keyframe_and_size() {
        // Frame tag (keyframe, version 0, show_frame), start code, 640x360.
        let f = [0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0, 0];
        assert_eq!(
            vp8_frame(&f),
            Some(FrameInfo {
                keyframe: true,
                size: Some((640, 360))
            })
        );
        assert_eq!(vp8_frame(&[0x51, 0, 0]).map(|i| i.keyframe), Some(false));
        assert_eq!(vp8_frame(&[0x50, 0, 0, 1, 2, 3, 0, 0, 0, 0]), None);
    }

    #[test]
    fn vp9_keyframe_and_size() {
        // Profile 0 keyframe, show_frame, sync code, color_space 0, range 0, 1280x720.
        let mut bits = String::from("10" /* marker */);
        bits += "00"; // profile 0
        bits += "0"; // show_existing_frame
        bits += "0"; // frame_type key
        bits += "1"; // show_frame
        bits += "0"; // error_resilient
        bits += "010010011000001101000010"; // sync code
        bits += "000"; // color_space
        bits += "0"; // color_range
        bits += &format!("{:016b}{:016b}", 1279, 719);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let bytes: Vec<u8> = (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect();
        assert_eq!(
            vp9_frame(&bytes),
            Some(FrameInfo {
                keyframe: true,
                size: Some((1280, 720))
            })
        );
        // Inter frame: frame_type 1.
        assert_eq!(vp9_frame(&[0b1000_0100]).map(|i| i.keyframe), Some(false));
        assert_eq!(vp9_frame(&[0x00]), None);
    }

    proptest! {
        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = vp8_frame(&data);
            let _ = vp9_frame(&data);
        }
    }
}
