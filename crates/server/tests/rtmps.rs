//! RTMPS: ffmpeg publishes and ffprobe reads over TLS (verifying with the test's CA), the same
//! stream is read over plain RTMP, clients that do not speak TLS to the RTMPS port are refused
//! without touching the running session, and a certificate replaced on disk is served to new
//! connections while the publisher keeps streaming.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Sluice with RTMPS on a free port, serving `live.pem`/`live.key` of `pki`.
fn start(pki: &TestCa) -> (Server, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    let server = Server::start_with(
        &[
            ("SLUICE_RTMP_TLS_LISTEN", &listen),
            ("SLUICE_RTMP_TLS_CERT", cert.to_str().unwrap()),
            ("SLUICE_RTMP_TLS_KEY", key.to_str().unwrap()),
            ("SLUICE_RTMP_HANDSHAKE_TIMEOUT", "2s"),
        ],
        None,
    );
    assert!(
        server.wait_log(&format!("RTMPS listening on {listen}"), Duration::from_secs(10)),
        "RTMPS did not start:\n{}",
        server.log()
    );
    (server, port)
}

/// ffmpeg publishing the test source over RTMPS, verifying the server with `ca`.
fn publish_rtmps(url: &str, ca: &Path) -> Publisher {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "warning", "-re", "-stream_loop", "-1", "-i"])
        .arg(source_flv())
        .args(["-c", "copy", "-f", "flv", "-tls_verify", "1", "-ca_file"])
        .arg(ca)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg");
    Publisher::from_child(child)
}

/// ffprobe's codec names of `url`, verifying the server against `ca`; Err with its stderr.
fn probe_verified(url: &str, ca: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("timeout")
        .args([
            "20",
            "ffprobe",
            "-hide_banner",
            "-v",
            "error",
            "-tls_verify",
            "1",
            "-ca_file",
        ])
        .arg(ca)
        .args(["-show_entries", "stream=codec_name", "-of", "csv=p=0", url])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn rtmps_publish_read_refuse_and_reload() {
    if !require("ffmpeg") || !require("ffprobe") || !require("openssl") {
        return;
    }
    let pki = TestCa::new("main");
    pki.server_cert("live", "localhost", 1);
    let (server, port) = start(&pki);
    let ca = pki.path("ca.pem");

    // The listener is listed by the API.
    let (st, _, body) = http_get(server.api, "/v1/server", &[]);
    let body = String::from_utf8_lossy(&body);
    assert!(
        st == 200 && body.contains(&format!("\"rtmps\":\"127.0.0.1:{port}\"")),
        "{st} {body}"
    );

    // ffmpeg publishes over RTMPS, checking the certificate against our CA.
    let url = format!("rtmps://localhost:{port}/live/x");
    let mut publisher = publish_rtmps(&url, &ca);
    wait_stream(&server, "live/x");
    // Shown as what it is.
    let v = path_json(&server, "live/x");
    assert_eq!(v["publisher"]["protocol"], "rtmps", "{v}");

    // Read back over RTMPS and over plain RTMP.
    let p = probe(&format!("rtmps://127.0.0.1:{port}/live/x"), 4);
    assert_source_stream(&p, 4, "RTMPS reader");
    let p = probe(&server.rtmp_url("live/x"), 3);
    assert_source_stream(&p, 3, "RTMP reader of an RTMPS publisher");
    assert_eq!(
        probe_verified(&url, &ca).unwrap(),
        ["aac", "h264"],
        "a verifying RTMPS reader"
    );
    // A client that trusts another CA refuses the server.
    let other = TestCa::new("other");
    let e = probe_verified(&url, &other.path("ca.pem")).unwrap_err();
    assert!(e.contains("verif") || e.contains("certificate"), "{e}");

    // Plain RTMP to the RTMPS port, and a client that never starts TLS: refused, logged with
    // the remote, nothing else disturbed.
    let out = Command::new("timeout")
        .args(["15", "ffprobe", "-v", "error", "-rw_timeout", "5000000"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/x"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain RTMP on the RTMPS port was served");
    assert!(
        server.wait_log("RTMPS: TLS handshake failed", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    let idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(
        server.wait_log("RTMPS: TLS handshake timed out", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    drop(idle);
    assert!(publisher.is_running(), "the publisher was disturbed");

    // Renewal: a new certificate and key replace the files (written beside, renamed over, as
    // certbot and friends do). New connections get it; the publisher goes on.
    assert_eq!(
        served_cert(port, &ca),
        ("serial=01".into(), "subject=CN = localhost".into())
    );
    pki.server_cert("next", "sluice-renewed", 2);
    std::fs::rename(pki.path("next.key"), pki.path("live.key")).unwrap();
    std::fs::rename(pki.path("next.pem"), pki.path("live.pem")).unwrap();
    wait_until("the renewed certificate", Duration::from_secs(10), || {
        served_cert(port, &ca).0 == "serial=02"
    });
    assert_eq!(served_cert(port, &ca).1, "subject=CN = sluice-renewed");
    assert!(server.log().contains("TLS certificate reloaded"));
    assert!(publisher.is_running(), "the publisher was dropped by the reload");
    let p = probe(&format!("rtmps://127.0.0.1:{port}/live/x"), 3);
    assert_source_stream(&p, 3, "RTMPS reader after the reload");

    // A broken certificate file: logged, the renewed one stays in force.
    std::fs::write(pki.path("live.pem"), "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    assert!(
        server.wait_log("TLS certificate not reloaded", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert_eq!(served_cert(port, &ca).0, "serial=02");
    assert!(publisher.is_running());
    assert_eq!(
        server.log().matches("stream started").count(),
        1,
        "the publisher's session never restarted"
    );
    publisher.stop();
}

#[test]
fn rtmps_needs_both_cert_and_key() {
    let pki = TestCa::new("half");
    pki.server_cert("live", "localhost", 1);
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_RTMP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SLUICE_RTMP_TLS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SLUICE_RTMP_TLS_CERT", pki.path("live.pem"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("set both to serve RTMPS"), "{err}");
    // `sluice check` says so too, before anything is started.
    let file = pki.path("half.toml");
    std::fs::write(&file, format!("[rtmp]\ntls_cert = {:?}\n", pki.path("live.pem"))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("set both to serve RTMPS"), "{err}");

    // A key that is not the certificate's: refused at start with both files named.
    pki.server_cert("other", "localhost", 2);
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_RTMP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SLUICE_RTMP_TLS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SLUICE_RTMP_TLS_CERT", pki.path("live.pem"))
        .env("SLUICE_RTMP_TLS_KEY", pki.path("other.key"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot start RTMPS") && err.contains("other.key") && err.contains("live.pem"),
        "{err}"
    );
}

/// The path JSON of `path` from the API.
fn path_json(server: &Server, path: &str) -> serde_json::Value {
    let (_, _, body) = http_get(server.api, &format!("/v1/paths/{path}"), &[]);
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

/// Sluice pushes to a second Sluice's RTMPS port: with the right CA the stream arrives; a
/// destination checked against another CA is refused with a clear error in the API.
#[test]
fn push_to_a_second_sluice_over_rtmps() {
    if !require("ffmpeg") || !require("ffprobe") || !require("openssl") {
        return;
    }
    let pki = TestCa::new("push");
    pki.server_cert("live", "localhost", 1);
    let other = TestCa::new("push-other");
    let (target, port) = start(&pki);
    let config = format!(
        "[paths.\"live/good\".push]\nurls = [\"rtmps://localhost:{port}/live/relayed\"]\n\
         ca_file = {:?}\nretry_min = \"500ms\"\nretry_max = \"2s\"\n\
         [paths.\"live/bad\".push]\nurls = [\"rtmps://localhost:{port}/live/nope\"]\n\
         ca_file = {:?}\nretry_min = \"500ms\"\nretry_max = \"2s\"\n",
        pki.path("ca.pem"),
        other.path("ca.pem"),
    );
    let origin = Server::start_with(&[], Some(&config));
    let _good = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/good"));
    let _bad = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/bad"));

    wait_stream(&target, "live/relayed");
    let p = probe(&format!("rtmps://127.0.0.1:{port}/live/relayed"), 3);
    assert_source_stream(&p, 3, "pushed over RTMPS");

    wait_until(
        "the wrong CA's refusal in the API",
        Duration::from_secs(20),
        || {
            path_json(&origin, "live/bad")["pushes"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("certificate verify failed: UnknownIssuer for host localhost"))
        },
    );
    assert!(
        !target.log().contains("path=live/nope"),
        "a refused destination reached the target"
    );
}
