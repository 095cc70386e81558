//! AMF0 values (Action Message Format 0), as carried by RTMP commands and FLV script tags.
//!
//! Decoding never panics, bounds nesting depth and the number of entries, and reads only what
//! the input holds; every string is length-prefixed so nothing is allocated beyond the input.

use crate::Error;

/// Deepest nesting of objects/arrays accepted from the network.
const MAX_DEPTH: usize = 16;
/// Most entries accepted in one object or array.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    Date(f64),
}

impl Amf0Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    /// Looks a key up in an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => {
                p.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Amf0Value)>) -> Amf0Value {
        Amf0Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
    pub fn string(s: impl Into<String>) -> Amf0Value {
        Amf0Value::String(s.into())
    }
}

/// Decodes every value in `buf`.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Amf0Value>, Error> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if out.len() >= MAX_ENTRIES {
            return Err(Error::Amf0("too many values"));
        }
        out.push(decode(&mut buf)?);
    }
    Ok(out)
}

/// Decodes one value, advancing `buf`.
pub fn decode(buf: &mut &[u8]) -> Result<Amf0Value, Error> {
    decode_depth(buf, 0)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if buf.len() < n {
        return Err(Error::Amf0("truncated value"));
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

fn read_u16(buf: &mut &[u8]) -> Result<usize, Error> {
    let b = take(buf, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
}

fn read_u32(buf: &mut &[u8]) -> Result<usize, Error> {
    let b = take(buf, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn read_f64(buf: &mut &[u8]) -> Result<f64, Error> {
    let b = take(buf, 8)?;
    Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn read_str(buf: &mut &[u8], len: usize) -> Result<String, Error> {
    let b = take(buf, len)?;
    // Lossy: clients send Latin-1 in the wild; a bad byte must not end the session.
    Ok(String::from_utf8_lossy(b).into_owned())
}

fn read_pairs(buf: &mut &[u8], depth: usize) -> Result<Vec<(String, Amf0Value)>, Error> {
    let mut pairs = Vec::new();
    loop {
        let klen = read_u16(buf)?;
        if klen == 0 && buf.first() == Some(&0x09) {
            *buf = &buf[1..];
            return Ok(pairs);
        }
        if pairs.len() >= MAX_ENTRIES {
            return Err(Error::Amf0("too many object entries"));
        }
        let key = read_str(buf, klen)?;
        let v = decode_depth(buf, depth + 1)?;
        pairs.push((key, v));
    }
}

fn decode_depth(buf: &mut &[u8], depth: usize) -> Result<Amf0Value, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::Amf0("nesting too deep"));
    }
    let marker = take(buf, 1)?[0];
    Ok(match marker {
        0x00 => Amf0Value::Number(read_f64(buf)?),
        0x01 => Amf0Value::Boolean(take(buf, 1)?[0] != 0),
        0x02 => {
            let n = read_u16(buf)?;
            Amf0Value::String(read_str(buf, n)?)
        }
        0x03 => Amf0Value::Object(read_pairs(buf, depth)?),
        0x05 => Amf0Value::Null,
        0x06 => Amf0Value::Undefined,
        0x08 => {
            let _count_hint = read_u32(buf)?;
            Amf0Value::EcmaArray(read_pairs(buf, depth)?)
        }
        0x0a => {
            let n = read_u32(buf)?;
            if n > MAX_ENTRIES {
                return Err(Error::Amf0("strict array too long"));
            }
            let mut v = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                v.push(decode_depth(buf, depth + 1)?);
            }
            Amf0Value::StrictArray(v)
        }
        0x0b => {
            let ms = read_f64(buf)?;
            take(buf, 2)?; // time zone, unused by the spec
            Amf0Value::Date(ms)
        }
        0x0c => {
            let n = read_u32(buf)?;
            Amf0Value::String(read_str(buf, n)?)
        }
        _ => return Err(Error::Amf0("unsupported AMF0 type marker")),
    })
}

/// Appends the encoding of `v` to `out`.
pub fn encode(v: &Amf0Value, out: &mut Vec<u8>) {
    match v {
        Amf0Value::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => out.extend_from_slice(&[0x01, *b as u8]),
        Amf0Value::String(s) => {
            if s.len() <= u16::MAX as usize {
                out.push(0x02);
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            } else {
                out.push(0x0c);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            }
            out.extend_from_slice(s.as_bytes());
        }
        Amf0Value::Object(p) => {
            out.push(0x03);
            encode_pairs(p, out);
        }
        Amf0Value::Null => out.push(0x05),
        Amf0Value::Undefined => out.push(0x06),
        Amf0Value::EcmaArray(p) => {
            out.push(0x08);
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            encode_pairs(p, out);
        }
        Amf0Value::StrictArray(v) => {
            out.push(0x0a);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            for x in v {
                encode(x, out);
            }
        }
        Amf0Value::Date(ms) => {
            out.push(0x0b);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

fn encode_pairs(p: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (k, v) in p {
        let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k);
        encode(v, out);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
}

/// Encodes a sequence of values (an RTMP command or a script tag body).
pub fn encode_all(values: &[Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Amf0Value> {
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("not NaN", |f| !f.is_nan())
                .prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            "[a-zA-Z0-9 ]{0,20}".prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
            Just(Amf0Value::Undefined),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6).prop_map(Amf0Value::Object),
                prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..6).prop_map(Amf0Value::EcmaArray),
                prop::collection::vec(inner, 0..6).prop_map(Amf0Value::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in prop::collection::vec(value(), 0..5)) {
            prop_assert_eq!(decode_all(&encode_all(&v)).unwrap(), v);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&data);
        }
    }

    #[test]
    fn ffmpeg_connect_command() {
        // The start of the connect command ffmpeg 5.1 sends: "connect", 1.0, {app: "live", ...}.
        let mut b = vec![0x02, 0, 7];
        b.extend_from_slice(b"connect");
        b.push(0x00);
        b.extend_from_slice(&1.0f64.to_be_bytes());
        b.push(0x03);
        b.extend_from_slice(&[0, 3]);
        b.extend_from_slice(b"app");
        b.extend_from_slice(&[0x02, 0, 4]);
        b.extend_from_slice(b"live");
        b.extend_from_slice(&[0, 0, 9]);
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0].as_str(), Some("connect"));
        assert_eq!(v[1].as_f64(), Some(1.0));
        assert_eq!(v[2].get("app").and_then(Amf0Value::as_str), Some("live"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = Vec::new();
        for _ in 0..100 {
            b.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        assert!(decode_all(&b).is_err());
    }
}
