//! RTMP handshake: C0+C1 from a client and S0+S1+S2 from a server, of any content.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_rtmp::handshake;

fuzz_target!(|data: &[u8]| {
    let mut n = 0u8;
    let mut random = || {
        n = n.wrapping_add(7);
        n
    };
    let _ = handshake::server_response(data, 0, &mut random);
    let _ = handshake::client_c2(data);
});
