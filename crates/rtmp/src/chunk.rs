//! The RTMP chunk stream (RTMP spec §5.3): splitting messages into chunks and reassembling them.
//!
//! The decoder is sans-IO: feed it the bytes read so far and take complete messages out. It bounds
//! message length, the number of chunk streams and the bytes held in partial messages, so a peer
//! cannot make it allocate more than it has actually sent, nor more than those limits.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::Error;

pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// Largest chunk size a peer may set; larger values are refused as absurd.
pub const MAX_CHUNK_SIZE: usize = 16 << 20;

/// Message type ids (RTMP spec §5.4, §7.1).
pub mod types {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACK: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    /// Absolute timestamp in milliseconds (32 bits, wraps).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// The last header used an extended timestamp (so continuation chunks may repeat it).
    extended: Option<u32>,
    partial: BytesMut,
    has_header: bool,
}

/// Limits applied to what a peer sends.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message: usize,
    pub max_chunk_streams: usize,
    pub max_partial_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 8 << 20,
            max_chunk_streams: 64,
            max_partial_bytes: 16 << 20,
        }
    }
}

/// Reassembles messages from chunks.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    limits: Limits,
    partial_bytes: usize,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl ChunkDecoder {
    pub fn new(limits: Limits) -> Self {
        ChunkDecoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
            limits,
            partial_bytes: 0,
        }
    }

    /// Applies the peer's Set Chunk Size.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), Error> {
        let size = (size & 0x7fff_ffff) as usize;
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(Error::Chunk(format!(
                "peer set an absurd chunk size of {size} bytes"
            )));
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Drops a partial message (the peer's Abort message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            self.partial_bytes -= s.partial.capacity();
            s.partial = BytesMut::new();
        }
    }

    /// Consumes whole chunks from `buf` until a message completes (returned) or more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        loop {
            match self.decode_chunk(buf)? {
                Step::NeedMore => return Ok(None),
                Step::Message(m) => return Ok(Some(m)),
                Step::Continue => {}
            }
        }
    }

    fn decode_chunk(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        let b = &buf[..];
        let Some(&b0) = b.first() else {
            return Ok(Step::NeedMore);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + x as u32, 2),
                None => return Ok(Step::NeedMore),
            },
            1 => match b.get(1..3) {
                Some(x) => (64 + x[0] as u32 + 256 * x[1] as u32, 3),
                None => return Ok(Step::NeedMore),
            },
            x => (x as u32, 1),
        };
        let header_len = [11, 7, 3, 0][fmt as usize];
        if b.len() < pos + header_len {
            return Ok(Step::NeedMore);
        }
        if !self.streams.contains_key(&csid) {
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(Error::Chunk(format!(
                    "more than {} chunk streams open",
                    self.limits.max_chunk_streams
                )));
            }
            if fmt != 0 {
                return Err(Error::Chunk(format!(
                    "chunk stream {csid} starts without a type 0 header"
                )));
            }
        }
        let h = &b[pos..pos + header_len];
        let u24 = |x: &[u8]| ((x[0] as u32) << 16) | ((x[1] as u32) << 8) | x[2] as u32;
        let ts_field = if fmt < 3 { Some(u24(&h[0..3])) } else { None };
        let length = if fmt < 2 {
            Some(u24(&h[3..6]) as usize)
        } else {
            None
        };
        let type_id = if fmt < 2 { Some(h[6]) } else { None };
        let stream_id = if fmt == 0 {
            Some(u32::from_le_bytes([h[7], h[8], h[9], h[10]]))
        } else {
            None
        };
        pos += header_len;

        let st = self.streams.entry(csid).or_default();
        if fmt == 3 && !st.has_header {
            return Err(Error::Chunk(format!(
                "chunk stream {csid} continues without a header"
            )));
        }
        // Extended timestamp: present when the field is 0xFFFFFF, and on type 3 chunks after such
        // a header when the sender repeats it (librtmp and ffmpeg do; some encoders don't).
        let mut ext = None;
        if ts_field == Some(0xff_ffff) {
            let Some(x) = b.get(pos..pos + 4) else {
                return Ok(Step::NeedMore);
            };
            ext = Some(u32::from_be_bytes([x[0], x[1], x[2], x[3]]));
            pos += 4;
        } else if fmt == 3 {
            if let Some(prev) = st.extended {
                match b.get(pos..pos + 4) {
                    Some(x) if u32::from_be_bytes([x[0], x[1], x[2], x[3]]) == prev => {
                        ext = Some(prev);
                        pos += 4;
                    }
                    Some(_) => {}
                    None => return Ok(Step::NeedMore),
                }
            }
        }
        let new_message = fmt < 3 || st.partial.is_empty();
        let msg_len = length.unwrap_or(st.length);
        if msg_len > self.limits.max_message {
            return Err(Error::Chunk(format!(
                "message of {msg_len} bytes exceeds the limit of {} bytes",
                self.limits.max_message
            )));
        }
        let have = if new_message { 0 } else { st.partial.len() };
        let remaining = msg_len.saturating_sub(have);
        let take = remaining.min(self.chunk_size);
        if b.len() < pos + take {
            return Ok(Step::NeedMore);
        }
        // The whole chunk is present: commit the header.
        if fmt < 3 && !st.partial.is_empty() {
            // A new header in the middle of a message: the sender gave up on the old one.
            self.partial_bytes -= st.partial.capacity();
            st.partial = BytesMut::new();
        }
        if let Some(l) = length {
            st.length = l;
        }
        if let Some(t) = type_id {
            st.type_id = t;
        }
        if let Some(s) = stream_id {
            st.stream_id = s;
        }
        if fmt < 3 {
            st.extended = ext;
        }
        let field = ext.or(ts_field);
        match fmt {
            0 => {
                st.timestamp = field.unwrap_or(0);
                st.delta = 0;
            }
            1 | 2 => {
                st.delta = field.unwrap_or(0);
                st.timestamp = st.timestamp.wrapping_add(st.delta);
            }
            _ => {
                if new_message {
                    st.timestamp = st.timestamp.wrapping_add(st.delta);
                }
            }
        }
        st.has_header = true;
        buf.advance(pos);
        if st.partial.is_empty() && take == st.length {
            // The common case of a message in one chunk: no copy.
            let payload = buf.split_to(take).freeze();
            return Ok(Step::Message(Message {
                csid,
                timestamp: st.timestamp,
                type_id: st.type_id,
                stream_id: st.stream_id,
                payload,
            }));
        }
        if st.partial.is_empty() {
            // The first chunk of a message in several: room for all of it at once (no regrowth,
            // no copy as it arrives), counted against the limit from now on.
            if self.partial_bytes + st.length > self.limits.max_partial_bytes {
                return Err(Error::Chunk("too many bytes held in partial messages".into()));
            }
            st.partial = BytesMut::with_capacity(st.length);
            self.partial_bytes += st.partial.capacity();
        }
        st.partial.extend_from_slice(&buf[..take]);
        buf.advance(take);
        if st.partial.len() == st.length {
            self.partial_bytes -= st.partial.capacity();
            let payload = std::mem::take(&mut st.partial).freeze();
            return Ok(Step::Message(Message {
                csid,
                timestamp: st.timestamp,
                type_id: st.type_id,
                stream_id: st.stream_id,
                payload,
            }));
        }
        Ok(Step::Continue)
    }
}

enum Step {
    NeedMore,
    Continue,
    Message(Message),
}

/// Splits messages into chunks at a fixed outgoing chunk size, always with type 0 headers for the
/// first chunk (self-contained, so one encoding can be shared by every reader) and type 3 after.
#[derive(Debug, Clone, Copy)]
pub struct ChunkEncoder {
    pub chunk_size: usize,
}

impl ChunkEncoder {
    pub fn new(chunk_size: usize) -> Self {
        ChunkEncoder {
            chunk_size: chunk_size.clamp(128, MAX_CHUNK_SIZE),
        }
    }

    fn basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
        match csid {
            2..=63 => out.put_u8((fmt << 6) | csid as u8),
            64..=319 => {
                out.put_u8(fmt << 6);
                out.put_u8((csid - 64) as u8);
            }
            _ => {
                out.put_u8((fmt << 6) | 1);
                out.put_u16_le((csid - 64) as u16);
            }
        }
    }

    /// Appends the chunks of one message to `out`.
    pub fn encode(
        &self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut BytesMut,
    ) {
        let ext = timestamp >= 0xff_ffff;
        let n_chunks = payload.len().div_ceil(self.chunk_size).max(1);
        out.reserve(payload.len() + 16 + n_chunks * 8);
        Self::basic_header(out, 0, csid);
        let ts = if ext { 0xff_ffff } else { timestamp };
        out.put_slice(&ts.to_be_bytes()[1..]);
        out.put_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.put_u8(type_id);
        out.put_u32_le(stream_id);
        if ext {
            out.put_u32(timestamp);
        }
        for (i, chunk) in payload.chunks(self.chunk_size).enumerate() {
            if i > 0 {
                Self::basic_header(out, 3, csid);
                if ext {
                    out.put_u32(timestamp);
                }
            }
            out.put_slice(chunk);
        }
    }

    /// The chunks of one message as pieces to write one after the other, without copying the
    /// payload: each chunk's header (all of them in one buffer, sliced), then its stretch of
    /// `payload` (a slice of the same buffer). The same bytes as [`encode`](Self::encode).
    pub fn encode_pieces(
        &self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &Bytes,
        out: &mut Vec<Bytes>,
    ) {
        let ext = timestamp >= 0xff_ffff;
        let n_chunks = payload.len().div_ceil(self.chunk_size).max(1);
        let mut h = BytesMut::with_capacity(16 + (n_chunks - 1) * 7);
        Self::basic_header(&mut h, 0, csid);
        let ts = if ext { 0xff_ffff } else { timestamp };
        h.put_slice(&ts.to_be_bytes()[1..]);
        h.put_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        h.put_u8(type_id);
        h.put_u32_le(stream_id);
        if ext {
            h.put_u32(timestamp);
        }
        let first = h.len();
        for _ in 1..n_chunks {
            Self::basic_header(&mut h, 3, csid);
            if ext {
                h.put_u32(timestamp);
            }
        }
        // Every continuation header has the same length.
        let next = (h.len() - first) / n_chunks.saturating_sub(1).max(1);
        let h = h.freeze();
        out.reserve(n_chunks * 2);
        for i in 0..n_chunks {
            let from = if i == 0 { 0 } else { first + (i - 1) * next };
            let to = if i == 0 { first } else { from + next };
            out.push(h.slice(from..to));
            let at = i * self.chunk_size;
            let end = (at + self.chunk_size).min(payload.len());
            if end > at {
                out.push(payload.slice(at..end));
            }
        }
    }

    pub fn encode_to_bytes(
        &self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(csid, timestamp, type_id, stream_id, payload, &mut b);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut ChunkDecoder, data: &[u8], step: usize) -> Result<Vec<Message>, Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(m) = dec.decode(&mut buf)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    proptest! {
        #[test]
        fn round_trip(
            msgs in prop::collection::vec((2u32..400, any::<u32>(), 1u8..30, 0u32..3, prop::collection::vec(any::<u8>(), 0..3000)), 1..12),
            chunk_size in 128usize..5000,
            step in 1usize..700,
        ) {
            let enc = ChunkEncoder::new(chunk_size);
            let mut wire = BytesMut::new();
            for (csid, ts, ty, sid, payload) in &msgs {
                enc.encode(*csid, *ts, *ty, *sid, payload, &mut wire);
            }
            let mut dec = ChunkDecoder::default();
            dec.set_chunk_size(enc.chunk_size as u32).unwrap();
            let got = decode_all(&mut dec, &wire, step).unwrap();
            prop_assert_eq!(got.len(), msgs.len());
            for (m, (csid, ts, ty, sid, payload)) in got.iter().zip(&msgs) {
                prop_assert_eq!((m.csid, m.timestamp, m.type_id, m.stream_id), (*csid, *ts, *ty, *sid));
                prop_assert_eq!(&m.payload[..], &payload[..]);
            }
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..2000), step in 1usize..300) {
            let mut dec = ChunkDecoder::default();
            let _ = decode_all(&mut dec, &data, step);
        }
    }

    #[test]
    fn interleaved_and_delta_headers() {
        // Two messages on csid 4 via type 0 then type 2 (delta 40), interleaved with csid 3.
        let mut wire = vec![0x04, 0, 0, 10, 0, 0, 3, 8, 1, 0, 0, 0, 1, 2, 3];
        wire.extend_from_slice(&[0x03, 0, 0, 0, 0, 0, 1, 20, 0, 0, 0, 0, 9]);
        wire.extend_from_slice(&[0x84, 0, 0, 40, 1, 2, 3]);
        wire.extend_from_slice(&[0xc4, 4, 5, 6]);
        let mut dec = ChunkDecoder::default();
        let m = decode_all(&mut dec, &wire, 5).unwrap();
        let ts: Vec<_> = m.iter().map(|m| (m.csid, m.timestamp)).collect();
        assert_eq!(ts, vec![(4, 10), (3, 0), (4, 50), (4, 90)]);
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let mut dec = ChunkDecoder::default();
        assert!(dec.set_chunk_size(0).is_err());
        assert!(dec.set_chunk_size(0x7fff_ffff).is_err());
        let wire = [0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
        let err = decode_all(&mut dec, &wire, 100).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let mut dec = ChunkDecoder::default();
        assert!(
            decode_all(&mut dec, &[0xc5, 1, 2, 3], 10).is_err(),
            "type 3 without a header"
        );
    }

    #[test]
    fn pieces_are_the_encoded_bytes() {
        for chunk_size in [128usize, 4096] {
            let enc = ChunkEncoder::new(chunk_size);
            for (len, ts, csid) in [
                (0usize, 5u32, 4u32),
                (1, 0, 6),
                (128, 0x12_3456, 3),
                (129, 0xff_ffff, 4),
                (10_000, 0x0100_0000, 70),
                (8192, 7, 400),
            ] {
                let payload = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
                let mut whole = BytesMut::new();
                enc.encode(csid, ts, 9, 1, &payload, &mut whole);
                let mut pieces = Vec::new();
                enc.encode_pieces(csid, ts, 9, 1, &payload, &mut pieces);
                let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(
                    &joined[..],
                    &whole[..],
                    "chunk size {chunk_size}, {len} bytes, ts {ts:#x}"
                );
                // And it decodes back to the message.
                let mut dec = ChunkDecoder::default();
                dec.set_chunk_size(chunk_size as u32).unwrap();
                let mut buf = BytesMut::from(&joined[..]);
                let m = dec.decode(&mut buf).unwrap().expect("a message");
                assert_eq!((m.timestamp, m.payload.len()), (ts, len));
            }
        }
    }

    #[test]
    fn extended_timestamp_on_continuations() {
        let enc = ChunkEncoder::new(128);
        let payload = vec![7u8; 300];
        let wire = enc.encode_to_bytes(6, 0x0100_0000, 9, 1, &payload);
        let mut dec = ChunkDecoder::default();
        let m = decode_all(&mut dec, &wire, 50).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].timestamp, m[0].payload.len()), (0x0100_0000, 300));
    }
}
