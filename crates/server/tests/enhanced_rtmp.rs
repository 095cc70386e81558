//! Enhanced RTMP ingest end to end: HEVC video and Opus audio published the way OBS 30 sends
//! them (ExHeader video with FourCC `hvc1`, SequenceStart then CodedFrames with composition
//! time; ExHeader audio with FourCC `Opus`). ffmpeg 5.1 cannot publish enhanced RTMP, so the
//! publisher is a small client of our own fed with frames x265/libopus made; what comes out is
//! checked with ffprobe over HLS.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::*;
use sluice_container::amf0::Amf0Value;
use sluice_container::ts_demux::{DemuxEvent, TsDemuxer};
use sluice_media::{CodecId, Frame, Track};
use sluice_rtmp::chunk::{types, ChunkDecoder, ChunkEncoder, Limits};
use sluice_rtmp::{control, handshake};

fn hevc_opus_source() -> (Vec<Track>, Vec<Frame>) {
    let path = tmp_dir().join("src-h265-opus-v1.ts");
    if !path.exists() {
        let tmp = tmp_dir().join(format!("src-h265-opus-v1.{}.tmp.ts", std::process::id()));
        let st = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=700:sample_rate=48000"])
            .args(["-t", "6", "-c:v", "libx265", "-preset", "ultrafast"])
            .args([
                "-x265-params",
                "log-level=error:bframes=2",
                "-g",
                "30",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "libopus", "-ac", "2", "-f", "mpegts"])
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::rename(&tmp, &path).unwrap();
    }
    let data = std::fs::read(&path).unwrap();
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    d.push(&data, &mut out).unwrap();
    let mut tracks = Vec::new();
    let mut frames = Vec::new();
    for ev in out {
        match ev {
            DemuxEvent::Tracks(t) => tracks = t,
            DemuxEvent::Frame(f) => frames.push(f),
        }
    }
    assert_eq!(
        tracks.iter().map(|t| t.codec).collect::<Vec<_>>(),
        [CodecId::H265, CodecId::Opus]
    );
    (tracks, frames)
}

struct Client {
    sock: TcpStream,
    enc: ChunkEncoder,
    dec: ChunkDecoder,
    buf: BytesMut,
}

impl Client {
    fn connect(addr: std::net::SocketAddr) -> Client {
        let mut sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut n = 0u8;
        let mut random = || {
            n = n.wrapping_mul(31).wrapping_add(7);
            n
        };
        sock.write_all(&handshake::client_c0c1(&mut random)).unwrap();
        let mut s = vec![0u8; 1 + 2 * 1536];
        sock.read_exact(&mut s).unwrap();
        sock.write_all(&handshake::client_c2(&s).unwrap()).unwrap();
        let enc = ChunkEncoder::new(4096);
        sock.write_all(&control::set_chunk_size(&enc, 4096)).unwrap();
        Client {
            sock,
            enc: ChunkEncoder::new(4096),
            dec: ChunkDecoder::new(Limits::default()),
            buf: BytesMut::new(),
        }
    }

    fn command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        let b = control::command(&self.enc, 3, stream_id, values);
        self.sock.write_all(&b).unwrap();
    }

    /// Reads messages until a command whose values contain `needle` arrives.
    fn wait_for(&mut self, needle: &str) -> Vec<Amf0Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            while let Some(m) = self.dec.decode(&mut self.buf).unwrap() {
                if m.type_id == types::SET_CHUNK_SIZE {
                    let n = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                    self.dec.set_chunk_size(n).unwrap();
                }
                if m.type_id == types::COMMAND_AMF0 {
                    let vals = sluice_container::amf0::decode_all(&m.payload).unwrap();
                    if format!("{vals:?}").contains(needle) {
                        return vals;
                    }
                }
            }
            let mut tmp = [0u8; 4096];
            let n = self.sock.read(&mut tmp).unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&tmp[..n]);
        }
        panic!("no {needle} from the server");
    }

    fn send(&mut self, csid: u32, ts: u32, type_id: u8, payload: &[u8]) {
        let b = self.enc.encode_to_bytes(csid, ts, type_id, 1, payload);
        self.sock.write_all(&b).unwrap();
    }
}

fn fourcc(s: &[u8; 4]) -> f64 {
    u32::from_be_bytes(*s) as f64
}

#[test]
fn enhanced_rtmp_hevc_and_opus_reach_hls() {
    if !require("ffmpeg") {
        return;
    }
    let (tracks, frames) = hevc_opus_source();
    let server = Server::start();
    let mut c = Client::connect(server.rtmp);
    let s = |v: &str| Amf0Value::String(v.into());
    let tc_url = format!("rtmp://{}/live", server.rtmp);
    c.command(
        0,
        &[
            s("connect"),
            Amf0Value::Number(1.0),
            Amf0Value::object([
                ("app", s("live")),
                ("type", s("nonprivate")),
                ("tcUrl", s(&tc_url)),
                (
                    "fourCcList",
                    Amf0Value::StrictArray(vec![s("hvc1"), s("av01"), s("Opus")]),
                ),
            ]),
        ],
    );
    c.wait_for("NetConnection.Connect.Success");
    c.command(0, &[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null]);
    c.wait_for("_result");
    c.command(
        1,
        &[
            s("publish"),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            s("enh"),
            s("live"),
        ],
    );
    c.wait_for("NetStream.Publish.Start");

    let meta = Amf0Value::EcmaArray(vec![
        ("width".into(), Amf0Value::Number(640.0)),
        ("height".into(), Amf0Value::Number(360.0)),
        ("framerate".into(), Amf0Value::Number(30.0)),
        ("videocodecid".into(), Amf0Value::Number(fourcc(b"hvc1"))),
        ("audiocodecid".into(), Amf0Value::Number(fourcc(b"Opus"))),
        ("audiosamplerate".into(), Amf0Value::Number(48000.0)),
        ("stereo".into(), Amf0Value::Boolean(true)),
    ]);
    let body = sluice_container::amf0::encode_all(&[s("@setDataFrame"), s("onMetaData"), meta]);
    c.send(5, 0, types::DATA_AMF0, &body);

    // Sequence starts: [ExHeader|FrameType 1|PacketType 0] "hvc1" hvcC; [9<<4|0] "Opus" OpusHead.
    let mut v = vec![0x80 | 0x10];
    v.extend_from_slice(b"hvc1");
    v.extend_from_slice(&tracks[0].config);
    c.send(6, 0, types::VIDEO, &v);
    let mut a = vec![0x90];
    a.extend_from_slice(b"Opus");
    a.extend_from_slice(&tracks[1].config);
    c.send(4, 0, types::AUDIO, &a);

    // Frames in decode order, paced in real time, looped for ~12 s with rising timestamps.
    let span_ms = frames.iter().map(|f| f.dts).max().unwrap() / 90 + 40;
    let reader = {
        let url = server.http_url("live/enh/index.m3u8");
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(3));
            probe(&url, 4)
        })
    };
    let start = Instant::now();
    'outer: for lap in 0..2i64 {
        for f in &frames {
            let ts_ms = (f.dts / 90 + lap * span_ms) as u32;
            let due = start + Duration::from_millis(ts_ms as u64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                thread::sleep(w);
            }
            if f.track == 0 {
                let mut b = BytesMut::with_capacity(f.data.len() + 8);
                b.put_u8(0x80 | if f.keyframe { 0x10 } else { 0x20 } | 1);
                b.put_slice(b"hvc1");
                let cts = (f.cts() / 90) as i32;
                b.put_slice(&cts.to_be_bytes()[1..]);
                b.put_slice(&f.data);
                c.send(6, ts_ms, types::VIDEO, &b);
            } else {
                let mut b = BytesMut::with_capacity(f.data.len() + 5);
                b.put_u8(0x91);
                b.put_slice(b"Opus");
                b.put_slice(&f.data);
                c.send(4, ts_ms, types::AUDIO, &b);
            }
            if start.elapsed() > Duration::from_secs(11) {
                break 'outer;
            }
        }
    }
    let p = reader.join().unwrap();
    assert_eq!(p.video().codec_name, "hevc", "{p:?}\nlog:\n{}", server.log());
    assert_eq!((p.video().width, p.video().height), (640, 360));
    // HLS takes AAC by rule: the publisher's Opus is converted once per path (a derived track).
    assert_eq!(p.audio().codec_name, "aac");
    assert!(p.count(true) >= 105, "{} video frames in 4 s", p.count(true));
    assert!(p.starts_with_keyframe());
    p.assert_monotonic();
}
