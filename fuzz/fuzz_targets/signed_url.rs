//! A signed link's query (`expires=&ip=&sig=`) checked against a path: the server's own checker
//! (`crates/server/src/auth/signed.rs`), included as it is. Nothing but a link made with the
//! key may be allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/server/src/auth/signed.rs"]
mod signed;

fuzz_target!(|data: &[u8]| {
    let q = String::from_utf8_lossy(data);
    let ip = "192.0.2.1".parse().ok();
    assert!(signed::verify("fuzz-key", "live/x", &q, ip, 0).is_err() || q.contains("sig="));
    let good = signed::sign("fuzz-key", "live/x", 10, None);
    assert!(signed::verify("fuzz-key", "live/x", &good, ip, 0).is_ok());
});
