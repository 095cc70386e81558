//! An `Authorization` header value (Basic, Bearer, anything) parsed into credentials: the
//! server's own parser (`crates/server/src/auth/header.rs`), included as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/server/src/auth/header.rs"]
mod header;

fuzz_target!(|data: &[u8]| {
    let v = String::from_utf8_lossy(data);
    let (user, pass, token) = header::parse_authorization(&v);
    assert_eq!(user.is_some(), pass.is_some());
    if let Some(t) = token {
        assert!(t.len() <= header::MAX_VALUE);
    }
});
