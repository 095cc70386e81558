//! The RTMP session state machines on hostile bytes: the client (push, pull: a server's
//! answers) and the server's command phase (a client's commands). Any bytes give events, answers
//! or a clean error, within the chunk decoder's limits.
#![no_main]
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_rtmp::chunk::{ChunkDecoder, ChunkEncoder, Limits};
use sluice_rtmp::client::{ClientSession, Mode, RtmpUrl};
use sluice_rtmp::session::{Control, ServerCommands};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_message: 1 << 16, max_chunk_streams: 8, max_partial_bytes: 1 << 18 };
    let step = data.first().map_or(1, |b| (*b as usize % 61) + 1);
    // Client side: the bytes are what a server sends.
    for mode in [Mode::Publish, Mode::Play] {
        let url = RtmpUrl::parse("rtmp://h/live/key").unwrap();
        let mut c = ClientSession::new(url, mode, 4096, limits.clone());
        c.start();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in data.chunks(step) {
            buf.extend_from_slice(piece);
            if c.receive(&mut buf, &mut out).is_err() {
                break;
            }
            out.clear();
        }
    }
    // Server side: the bytes are what a client sends after the handshake.
    let mut dec = ChunkDecoder::new(limits);
    let enc = ChunkEncoder::new(4096);
    let mut ctl = Control::default();
    let mut cmds = ServerCommands::default();
    let mut buf = BytesMut::new();
    let mut out: Vec<Bytes> = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => match ctl.handle(&m, &mut dec, &enc, &mut out) {
                    Ok(true) => {}
                    Ok(false) => {
                        if cmds.on_message(&m, &enc, &mut out).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(None) => break,
                Err(_) => return,
            }
        }
        out.clear();
    }
});
