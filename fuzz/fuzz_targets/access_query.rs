//! The credentials a client puts in a URL query (RTMP stream key `cam1?user=u&pass=p`, HTTP
//! `?token=`), parsed into the one access request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_media::access::{AccessRequest, Action};

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let r = AccessRequest::new(Action::Publish, "live/x", "rtmp", None).with_query(&query);
    assert!(r.query.len() <= query.len());
});
