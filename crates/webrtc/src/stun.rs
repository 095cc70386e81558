//! Just enough STUN (RFC 8489) to route a datagram on the shared UDP port: is it STUN, and which
//! session's ICE username fragment does its USERNAME name. str0m parses and answers the message
//! itself; this only reads the header and walks the attribute list, with every length checked.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// How a datagram on the shared port is classified (RFC 7983 demultiplexing on the first byte).
#[derive(Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A STUN message; `local_ufrag` is our half of its USERNAME (`ours:theirs`), if it has one.
    Stun { local_ufrag: Option<&'a str> },
    /// DTLS, SRTP or SRTCP: routed by the sender's address.
    Other,
    /// Nothing a WebRTC peer sends (empty, or a first byte no protocol on this port uses).
    Garbage,
}

pub fn classify(b: &[u8]) -> Kind<'_> {
    match b.first() {
        Some(0..=3) => match stun_username(b) {
            Some(user) => Kind::Stun {
                local_ufrag: user.split(':').next().filter(|u| !u.is_empty()),
            },
            None if is_stun(b) => Kind::Stun { local_ufrag: None },
            None => Kind::Garbage,
        },
        Some(20..=63) | Some(128..=191) => Kind::Other,
        _ => Kind::Garbage,
    }
}

fn is_stun(b: &[u8]) -> bool {
    b.len() >= 20 && b[0] & 0xc0 == 0 && b[4..8] == MAGIC_COOKIE && {
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        len.is_multiple_of(4) && 20 + len <= b.len()
    }
}

/// The USERNAME attribute of a STUN message, if it is well formed and has one.
fn stun_username(b: &[u8]) -> Option<&str> {
    if !is_stun(b) {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let mut attrs = &b[20..20 + len];
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let padded = alen.div_ceil(4) * 4;
        let value = attrs.get(4..4 + alen)?;
        if typ == ATTR_USERNAME {
            return std::str::from_utf8(value).ok();
        }
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binding_request(user: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        // PRIORITY, to check that the walk goes past other attributes.
        attrs.extend_from_slice(&[0x00, 0x24, 0, 4, 1, 2, 3, 4]);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_our_ufrag() {
        let m = binding_request("abcd1234:xyz");
        assert_eq!(
            classify(&m),
            Kind::Stun {
                local_ufrag: Some("abcd1234")
            }
        );
    }

    #[test]
    fn truncated_or_foreign() {
        let m = binding_request("abcd:xyz");
        assert_eq!(classify(&m[..m.len() - 3]), Kind::Garbage);
        assert_eq!(classify(&[]), Kind::Garbage);
        assert_eq!(classify(&[0x17, 0xfe, 0xfd]), Kind::Other); // DTLS
        assert_eq!(classify(&[0x80, 0x60]), Kind::Other); // RTP
        assert_eq!(classify(&[0xff; 40]), Kind::Garbage);
    }

    proptest! {
        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = classify(&data);
        }
    }
}
