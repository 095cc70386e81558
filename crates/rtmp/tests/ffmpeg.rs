//! The RTMP server against real ffmpeg: publish with ffmpeg, read back with ffprobe.

use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_media::Registry;
use tokio::net::TcpListener;

fn have_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("ffmpeg is required in CI");
    }
    ok
}

async fn start_server() -> (u16, Registry) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let registry = Registry::default();
    let reg = registry.clone();
    tokio::spawn(async move {
        loop {
            let (s, remote) = listener.accept().await.unwrap();
            let reg = reg.clone();
            tokio::spawn(async move {
                let _ = sluice_rtmp::serve(s, remote, reg, Default::default()).await;
            });
        }
    });
    (port, registry)
}

fn publish(port: u16, path: &str) -> std::process::Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "8",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "superfast",
            "-bf",
            "2",
            "-g",
            "60",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ])
        .arg(format!("rtmp://127.0.0.1:{port}/{path}"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_and_ffprobe_reads() {
    if !have_ffmpeg() {
        return;
    }
    let (port, registry) = start_server().await;
    let mut publisher = publish(port, "live/cam1");
    for _ in 0..100 {
        if registry.paths().iter().any(|p| p.online && !p.tracks.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tracks = &registry.paths()[0].tracks;
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    assert_eq!((tracks[0].width, tracks[0].height), (640, 360));

    // A second publisher on the same path is refused and ffmpeg exits with an error.
    let second = tokio::task::spawn_blocking(move || publish(port, "live/cam1").wait_with_output().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(15), second)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());

    let probe = tokio::task::spawn_blocking(move || {
        Command::new("ffprobe")
            .args(["-v", "error", "-read_intervals", "%+3", "-count_packets"])
            .args([
                "-show_entries",
                "stream=codec_name,width,height,sample_rate,nb_read_packets",
                "-of",
                "csv=p=0",
            ])
            .arg(format!("rtmp://127.0.0.1:{port}/live/cam1"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("h264,640,360")),
        "{text} {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(lines.iter().any(|l| l.starts_with("aac,48000")), "{text}");
    let video: usize = lines
        .iter()
        .find(|l| l.starts_with("h264"))
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(video >= 80, "{video} video packets in 3 s");
    assert!(
        publisher.try_wait().unwrap().is_none(),
        "first publisher still running"
    );
    let _ = publisher.kill();
}
