//! SRT end to end against libsrt peers: ffmpeg (libsrt) and srt-live-transmit publish and read;
//! credentials; bad input; loss recovery in both directions through a lossy relay.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;

fn require_srt() -> bool {
    require("ffmpeg") && require("srt-live-transmit")
}

/// SRT in (ffmpeg, H.264 + AAC), read back over SRT, RTMP, HTTP-FLV and HLS.
#[test]
fn srt_h264_publish_reads_on_every_protocol() {
    if !require_srt() {
        return;
    }
    let server = Server::start();
    let src = source_flv();
    let _p = Publisher::srt(&src, &server.srt_url("publish:live/cam1"));
    wait_stream(&server, "live/cam1");
    let urls = [
        ("SRT", server.srt_url("read:live/cam1")),
        ("RTMP", server.rtmp_url("live/cam1")),
        ("HTTP-FLV", server.http_url("live/cam1.flv")),
        ("HLS fMP4", server.http_url("live/cam1/index.m3u8")),
    ];
    let probes: Vec<_> = urls
        .iter()
        .map(|(what, url)| {
            let url = url.clone();
            (*what, thread::spawn(move || probe(&url, 5)))
        })
        .collect();
    for (what, h) in probes {
        // Audio start within 100 ms of video; where the window was cut, allow for ffmpeg's
        // MPEG-TS audio PES grouping.
        assert_source_stream_window(&h.join().unwrap(), 5, what, 0.3);
    }
    assert!(server.log().contains("SRT publisher started"), "{}", server.log());
}

/// An SRT publisher that leaves gets the path's grace period like any other: RTMP and HTTP-FLV
/// readers stay and go on with the next publisher (the session ends on its own thread, off the
/// async runtime: the grace period used to be skipped there, ending every reader at once).
#[test]
fn srt_publisher_restart_keeps_readers() {
    if !require_srt() {
        return;
    }
    let server = Server::start_with(&[("SLUICE_PATH_DEFAULTS_GRACE_PERIOD", "10s")], None);
    let src = source_flv();
    let mut first = Publisher::srt(&src, &server.srt_url("publish:live/srt"));
    wait_stream(&server, "live/srt");
    let url_rtmp = server.rtmp_url("live/srt");
    let url_flv = server.http_url("live/srt.flv");
    let rtmp_reader = thread::spawn(move || probe(&url_rtmp, 10));
    let flv_reader = thread::spawn(move || probe(&url_flv, 10));
    thread::sleep(Duration::from_secs(3));
    first.terminate();
    assert!(
        server.wait_log("publisher left", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    thread::sleep(Duration::from_secs(1));
    let _second = Publisher::srt(&src, &server.srt_url("publish:live/srt"));
    for (what, h) in [("RTMP", rtmp_reader), ("HTTP-FLV", flv_reader)] {
        let p = h.join().unwrap();
        p.assert_monotonic();
        // 10 s of media minus the gap while no one published.
        let v = p.count(true);
        assert!(
            v >= 180,
            "{what} reader got {v} video frames across the restart\n{}",
            server.log()
        );
    }
    assert!(!server.log().contains("reader ended"), "{}", server.log());
}

/// SRT in with H.265 + AAC; read back over SRT and both HLS variants (ffprobe 5.1 cannot read
/// HEVC in FLV, which needs enhanced RTMP).
#[test]
fn srt_h265_publish_reads_over_srt_and_hls() {
    if !require_srt() {
        return;
    }
    let config = "[paths.\"live/*\"]\n[paths.\"ts/*\".hls]\nvariant = \"mpegts\"\n";
    let server = Server::start_with(&[], Some(config));
    let src = source_hevc_ts();
    let _a = Publisher::srt(&src, &server.srt_url("publish:live/hevc"));
    let _b = Publisher::srt(&src, &server.srt_url("publish:ts/hevc"));
    wait_stream(&server, "live/hevc");
    wait_stream(&server, "ts/hevc");
    let urls = [
        ("SRT", server.srt_url("read:live/hevc")),
        ("HLS fMP4", server.http_url("live/hevc/index.m3u8")),
        ("HLS MPEG-TS", server.http_url("ts/hevc/index.m3u8")),
    ];
    let probes: Vec<_> = urls
        .iter()
        .map(|(what, url)| {
            let url = url.clone();
            (*what, thread::spawn(move || probe(&url, 5)))
        })
        .collect();
    for (what, h) in probes {
        let p = h.join().unwrap();
        assert_eq!(p.video().codec_name, "hevc", "{what}: {p:?}");
        assert_eq!((p.video().width, p.video().height), (640, 360), "{what}");
        assert_eq!(p.audio().codec_name, "aac", "{what}");
        assert!(
            p.count(true) >= 135,
            "{what}: {} video frames in 5 s",
            p.count(true)
        );
        assert!(
            p.count(false) >= 210,
            "{what}: {} audio frames in 5 s",
            p.count(false)
        );
        assert!(p.starts_with_keyframe(), "{what}");
        p.assert_monotonic();
        p.assert_av_sync_window(0.1, 0.3);
    }
}

/// srt-live-transmit (libsrt's own tool) as publisher and as reader.
#[test]
fn srt_live_transmit_publishes_and_reads() {
    if !require_srt() {
        return;
    }
    let server = Server::start();
    let src = source_flv();
    let url = server.srt_url("publish:live/slt");
    let publisher = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ffmpeg -hide_banner -v error -re -stream_loop -1 -i '{}' -c copy -f mpegts - | srt-live-transmit -q file://con '{url}'",
            src.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let _publisher = GroupGuard(Publisher::from_child(publisher));
    wait_stream(&server, "live/slt");
    // Read with srt-live-transmit for 5 s into a file, then check it like a user would.
    let out = tmp_dir().join(format!("slt-read-{}.ts", server.srt.port()));
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 6 srt-live-transmit -q '{}' file://con > '{}'",
            server.srt_url("read:live/slt"),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(
        st.code() == Some(124) || st.success(),
        "srt-live-transmit reader failed: {st:?}"
    );
    let p = probe(out.to_str().unwrap(), 30);
    assert_eq!(p.video().codec_name, "h264");
    assert_eq!((p.video().width, p.video().height), (640, 360));
    assert_eq!(p.audio().codec_name, "aac");
    assert!(
        p.count(true) >= 120,
        "{} video frames in about 5 s",
        p.count(true)
    );
    assert!(p.starts_with_keyframe());
    p.assert_monotonic();
}

struct GroupGuard(Publisher);
impl Drop for GroupGuard {
    fn drop(&mut self) {
        // The shell pipeline runs in its own process group: end all of it.
        let _ = Command::new("kill")
            .arg("--")
            .arg(format!("-{}", self.0.pid()))
            .status();
    }
}

use std::os::unix::process::CommandExt;

const SECURE: &str = r#"
[paths."secure/cam".srt]
publish_passphrase = "publisherpass1"
read_passphrase = "readerpass123"

[paths."secure/cam".access]
read_user = "alice"
read_pass = "wonderland"

[paths."live/*"]
"#;

/// Passphrases and streamid credentials: right ones in, wrong ones refused at the handshake
/// with a clear log line, and the session already running is not disturbed.
#[test]
fn srt_credentials_are_checked() {
    if !require_srt() {
        return;
    }
    let server = Server::start_with(&[], Some(SECURE));
    let src = source_flv();
    let refused = |url: String, needle: &str| {
        let mut p = Publisher::srt(&src, &url);
        let st = p
            .wait_exit(Duration::from_secs(15))
            .expect("refused publisher exits");
        assert!(!st.success(), "{url} was accepted");
        assert!(
            server.wait_log(needle, Duration::from_secs(5)),
            "no {needle:?} in log:\n{}",
            server.log()
        );
    };
    refused(
        server.srt_url("publish:secure/cam") + "&passphrase=wrongpass123",
        "Incorrect passphrase",
    );
    refused(server.srt_url("publish:secure/cam"), "Password required");

    let _good = Publisher::srt(
        &src,
        &(server.srt_url("publish:secure/cam") + "&passphrase=publisherpass1"),
    );
    wait_stream(&server, "secure/cam");

    // Readers: user and password in the streamid, and the read passphrase.
    let read = |sid: &str, pass: &str| probe(&(server.srt_url(sid) + "&passphrase=" + pass), 3);
    let bad_user = read("read:secure/cam:alice:nope", "readerpass123");
    assert!(bad_user.streams.is_empty(), "wrong password was let in");
    assert!(server.wait_log("SRT read refused: wrong user or password", Duration::from_secs(5)));
    let no_user = read("read:secure/cam", "readerpass123");
    assert!(no_user.streams.is_empty());
    assert!(server.wait_log(
        "SRT read refused: no user and password given",
        Duration::from_secs(5)
    ));
    let bad_pass = read("read:secure/cam:alice:wonderland", "publisherpass1");
    assert!(bad_pass.streams.is_empty(), "wrong passphrase was let in");
    let ok = read("#!::r=secure/cam,m=request,u=alice,s=wonderland", "readerpass123");
    assert_eq!(
        ok.video().codec_name,
        "h264",
        "right credentials refused; log:\n{}",
        server.log()
    );
    assert!(ok.count(true) >= 60);
}

/// Bad streamids and data that is not MPEG-TS end that one session with a clear log line; a
/// stream already running keeps going.
#[test]
fn srt_bad_input_ends_only_that_session() {
    if !require_srt() {
        return;
    }
    let server = Server::start();
    let src = source_flv();
    let _ok = Publisher::srt(&src, &server.srt_url("publish:live/ok"));
    wait_stream(&server, "live/ok");

    // Garbage UDP datagrams at the SRT port (not even an SRT handshake).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..2000usize {
        let len = 1 + (i * 37) % 1500;
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = udp.send_to(&pkt, server.srt);
    }

    let mut bad = Publisher::srt(&src, &server.srt_url("push:live/x"));
    assert!(!bad.wait_exit(Duration::from_secs(15)).expect("refused").success());
    assert!(
        server.wait_log("unknown mode", Duration::from_secs(5)),
        "{}",
        server.log()
    );

    // Random bytes over SRT instead of MPEG-TS, sent until the server refuses them (a sender
    // given a fixed few seconds could run out before it connects on a busy machine).
    let mut junk = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 30000000 /dev/urandom | exec timeout 60 srt-live-transmit -q file://con '{}'",
            server.srt_url("publish:live/junk")
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let refused = server.wait_log("not an MPEG-TS stream", Duration::from_secs(30));
    // The whole pipeline: the shell, head and the sender.
    let _ = Command::new("kill")
        .args(["-9", "--", &format!("-{}", junk.id())])
        .status();
    let _ = junk.wait();
    assert!(refused, "junk was not refused; log:\n{}", server.log());
    let p = probe(&server.srt_url("read:live/ok"), 4);
    assert_source_stream_window(&p, 4, "SRT reader of the good stream after bad input", 0.3);
}

/// 5% loss and 25 ms delay each way between publisher and server, and between server and
/// reader, at 5 Mb/s with 400 ms latency: every frame arrives, over SRT and HLS, and the
/// loss and retransmissions show in the link statistics.
#[test]
fn srt_recovers_loss_both_ways() {
    if !require_srt() {
        return;
    }
    let config = "[paths.\"live/*\".srt]\nlatency = \"400ms\"\n";
    let server = Server::start_with(&[], Some(config));
    let src = source_5mbps_ts();
    let inbound = LossyRelay::start(server.srt, 5, Duration::from_millis(25), 0x5eed_0001);
    let url = format!(
        "srt://{}?streamid=publish:live/lossy&pkt_size=1316&latency=400000",
        inbound.addr
    );
    let _p = Publisher::srt(&src, &url);
    wait_stream(&server, "live/lossy");
    thread::sleep(Duration::from_secs(2));

    let outbound = LossyRelay::start(server.srt, 5, Duration::from_millis(25), 0x5eed_0002);
    let read_url = format!("srt://{}?streamid=read:live/lossy&latency=400000", outbound.addr);
    let hls_url = server.http_url("live/lossy/index.m3u8");
    let srt_reader = thread::spawn(move || probe(&read_url, 6));
    let hls_reader = thread::spawn(move || probe(&hls_url, 6));
    let via_srt = srt_reader.join().unwrap();
    let via_hls = hls_reader.join().unwrap();
    assert_every_frame(&via_srt, 30.0, "SRT reader behind a lossy link");
    assert_every_frame(&via_hls, 30.0, "HLS reader of a lossy SRT publisher");
    assert_eq!((via_srt.video().width, via_srt.video().height), (1280, 720));
    assert!(
        inbound.dropped.load(std::sync::atomic::Ordering::Relaxed) > 100,
        "the relay dropped nothing"
    );
    assert!(
        outbound.dropped.load(std::sync::atomic::Ordering::Relaxed) > 100,
        "the relay dropped nothing"
    );

    // The server's read session reports the loss it saw and what it retransmitted.
    assert!(
        server.wait_log("SRT link stats", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let log = server.log();
    let reader_stats = log
        .lines()
        .find(|l| l.contains("SRT link stats") && l.contains("live/lossy"))
        .expect("reader link stats");
    let field = |name: &str| -> u64 {
        let at = reader_stats
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("{name} in {reader_stats}"));
        reader_stats[at + name.len() + 2..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Loss and its recovery are visible. (Packets still in flight when the reader hangs up are
    // counted as dropped, so `dropped` is not asserted: every frame of the window arrived.)
    assert!(field("lost") > 0, "{reader_stats}");
    assert!(field("retransmitted") > 0, "{reader_stats}");
    assert!(field("naks_received") > 0, "{reader_stats}");
}

/// A path with `source = "srt://..."` pulls from a remote SRT listener (here srt-live-transmit
/// fed by ffmpeg) and serves it like any published path.
#[test]
fn srt_caller_source_pulls_from_a_remote_listener() {
    if !require_srt() {
        return;
    }
    let port = free_udp_port();
    let src = source_flv();
    let remote = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ffmpeg -hide_banner -v error -re -stream_loop -1 -i '{}' -c copy -f mpegts - | srt-live-transmit -q file://con 'srt://127.0.0.1:{port}?mode=listener'",
            src.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let _remote = GroupGuard(Publisher::from_child(remote));
    let config = format!("[paths.\"pull/cam\"]\nsource = \"srt://127.0.0.1:{port}?latency=200000\"\n");
    let server = Server::start_with(&[], Some(&config));
    assert!(
        server.wait_log("SRT source connected", Duration::from_secs(20)),
        "{}",
        server.log()
    );
    wait_stream(&server, "pull/cam");
    let p = probe(&server.rtmp_url("pull/cam"), 4);
    assert_source_stream_window(&p, 4, "RTMP reader of an SRT-pulled path", 0.3);
}

/// Audio other than AAC passes through SRT (MPEG-TS) to SRT readers, and to the outputs whose
/// containers carry it: Opus to HLS fMP4, MP3 to RTMP.
#[test]
fn srt_carries_opus_mp3_and_ac3() {
    if !require_srt() {
        return;
    }
    let server = Server::start();
    let cases = [
        ("opus", "libopus", "48000"),
        ("mp3", "libmp3lame", "44100"),
        ("ac3", "ac3", "48000"),
    ];
    let mut pubs = Vec::new();
    for (name, encoder, rate) in cases {
        let url = server.srt_url(&format!("publish:audio/{name}"));
        let child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-v",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=30",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency=800:sample_rate={rate}"),
            ])
            .args([
                "-t",
                "30",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "30",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", encoder, "-ac", "2", "-f", "mpegts", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        pubs.push(Publisher::from_child(child));
        wait_stream(&server, &format!("audio/{name}"));
    }
    for (name, _, rate) in cases {
        let p = probe_packets(&server.srt_url(&format!("read:audio/{name}")), 300);
        assert_eq!(p.audio().codec_name, name, "SRT read of {name}: {p:?}");
        assert_eq!(p.audio().sample_rate.to_string(), rate, "{name}");
        assert!(p.count(false) > 20, "{name}: {} audio packets", p.count(false));
        assert_eq!(p.video().codec_name, "h264");
    }
    // HLS takes AAC by rule (what every HLS player decodes): the path's Opus is converted once,
    // as a derived track, while SRT readers above got the Opus as sent.
    let opus_hls = probe_packets(&server.http_url("audio/opus/index.m3u8"), 200);
    assert_eq!(opus_hls.audio().codec_name, "aac", "{opus_hls:?}");
    assert!(
        opus_hls.count(false) > 20,
        "HLS audio packets: {}",
        opus_hls.count(false)
    );
    let mp3_rtmp = probe_packets(&server.rtmp_url("audio/mp3"), 200);
    assert_eq!(mp3_rtmp.audio().codec_name, "mp3", "{mp3_rtmp:?}");
}
