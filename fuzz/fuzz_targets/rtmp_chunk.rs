//! RTMP chunk stream decoding: any bytes, fed in pieces, with chunk size changes on the way,
//! must give messages or a clean error, within the decoder's limits.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_rtmp::chunk::{types, ChunkDecoder, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_message: 1 << 16, max_chunk_streams: 8, max_partial_bytes: 1 << 18 };
    let mut dec = ChunkDecoder::new(limits);
    let mut buf = BytesMut::new();
    // Split the input at arbitrary points to exercise partial chunk handling.
    let step = data.first().map_or(1, |b| (*b as usize % 61) + 1);
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    if m.type_id == types::SET_CHUNK_SIZE && m.payload.len() >= 4 {
                        let n = u32::from_be_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
                        if dec.set_chunk_size(n).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
