//! Bad input on the RTMP port and the command line, checked against the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Garbage, truncated handshakes, absurd chunk sizes and silent clients each close their own
/// session with a log line; the server keeps serving a publisher and its readers.
#[test]
fn garbage_on_rtmp_port_leaves_server_serving() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[("SLUICE_RTMP_HANDSHAKE_TIMEOUT", "2s")], None);
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam1"));
    wait_stream(&server, "live/cam1");

    // A client that connects and never speaks.
    let mut silent = TcpStream::connect(server.rtmp).unwrap();
    // Random bytes instead of a handshake.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut junk = vec![0u8; 64 * 1024];
    for b in junk.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let mut s = TcpStream::connect(server.rtmp).unwrap();
    let _ = s.write_all(&junk);
    // A valid handshake followed by a chunk announcing a 16 MiB message, then a huge chunk size.
    let mut s2 = TcpStream::connect(server.rtmp).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    s2.write_all(&c0c1).unwrap();
    let mut s0s1s2 = [0u8; 1 + 1536 * 2];
    s2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s2.read_exact(&mut s0s1s2).unwrap();
    s2.write_all(&s0s1s2[1..1537]).unwrap();
    // fmt 0, csid 3, timestamp 0, length 0xFFFFFF, type 20 (AMF0 command), stream 0.
    let _ = s2.write_all(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0]);
    let _ = s2.write_all(&junk[..4096]);
    // Truncated handshake: C0 only, then close.
    let mut s3 = TcpStream::connect(server.rtmp).unwrap();
    s3.write_all(&[3]).unwrap();
    drop(s3);

    // The silent client is dropped after the handshake timeout.
    silent.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = [0u8; 1];
    let closed = matches!(silent.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "silent client still connected");

    let p = probe(&server.rtmp_url("live/cam1"), 4);
    assert_source_stream(&p, 4, "RTMP after garbage");
    let p = probe(&server.http_url("live/cam1.flv"), 3);
    assert_source_stream(&p, 3, "HTTP-FLV after garbage");
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.to_lowercase().contains("timeout") || log.to_lowercase().contains("timed out"),
        "{log}"
    );
}

#[test]
fn print_config_and_check() {
    let exe = env!("CARGO_BIN_EXE_sluice");
    let out = Command::new(exe).arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[rtmp]") && text.contains("listen = \":1935\""),
        "{text}"
    );
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 20,
        "commented"
    );
    let dir = tmp_dir();
    let good = dir.join("good.toml");
    std::fs::write(&good, &text).unwrap();
    let out = Command::new(exe).arg("check").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[rtmp]\nenabled = true\nchunk_size = \"big\"\n").unwrap();
    let out = Command::new(exe).arg("check").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("line 3"), "{err}");

    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[hls]\nsegment_count = 5\nsegmnet_duration = \"2s\"\n").unwrap();
    let out = Command::new(exe).arg("check").arg(&unknown).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("segmnet_duration"),
        "{err}"
    );
}

#[test]
fn json_logs_and_clean_shutdown() {
    let mut server = Server::start_with(&[("SLUICE_LOG_FORMAT", "json")], None);
    assert!(server.wait_log("listening", Duration::from_secs(5)));
    let first = server.log().lines().next().unwrap().to_owned();
    let v: serde_json::Value = serde_json::from_str(&first).expect("log lines are JSON");
    assert!(v.get("level").is_some(), "{first}");
    let st = server.terminate();
    assert!(st.success(), "exit status {st:?}");
    assert!(server.log().contains("shutdown complete"));
}

#[test]
fn bad_config_file_refuses_to_start() {
    let dir = tmp_dir();
    let f = dir.join("bad-start.toml");
    std::fs::write(&f, "[http]\nlisten = 8888\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}
