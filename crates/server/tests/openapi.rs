//! The API against its own OpenAPI document: schemathesis (PyPI) generates requests from
//! `/v1/openapi.json` — valid and invalid ones — and checks that no answer is a server error or
//! violates the document (status codes, content types, response schemas).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// schemathesis as `scripts/install-test-deps.sh` installs it, in the project's own venv.
fn schemathesis() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-venv/bin/schemathesis");
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("schemathesis is required in CI; run scripts/install-test-deps.sh");
    }
    eprintln!("skipping: schemathesis not installed (run scripts/install-test-deps.sh)");
    None
}

fn get(server: &Server, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(server.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The document is served, describes every endpoint, and the reference page is there.
#[test]
fn openapi_document_and_reference_page() {
    let server = Server::start();
    let (st, head, body) = get(&server, "/v1/openapi.json");
    assert_eq!(st, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for p in [
        "/v1/server",
        "/v1/paths",
        "/v1/paths/{name}",
        "/v1/sessions",
        "/v1/sessions/{id}",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing from the document");
    }
    assert!(doc["paths"]["/v1/sessions/{id}"]["delete"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let (st, head, body) = get(&server, "/v1/docs");
    assert_eq!(st, 200);
    assert!(head.contains("text/html"));
    assert!(body.contains("/v1/openapi.json"));
    let (st, _, body) = get(&server, "/v1/server");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["listeners"]["rtmp"], server.rtmp.to_string());
    assert!(v["uptime_seconds"].is_u64());
    // Bad queries are 400 with the JSON error, never a 500.
    for q in [
        "/v1/paths?limit=0",
        "/v1/paths?limit=abc",
        "/v1/paths?bogus=1",
        "/v1/sessions?offset=-1",
    ] {
        let (st, head, body) = get(&server, q);
        assert_eq!(st, 400, "{q}: {body}");
        assert!(head.contains("application/json"), "{q}: {head}");
        assert!(body.contains("\"error\""), "{q}: {body}");
    }
}

/// schemathesis finds no server error and no answer that violates the document, with a live
/// stream and its sessions in the API.
#[test]
fn schemathesis_finds_no_violation() {
    let Some(st) = schemathesis() else { return };
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let _pub = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/oa"));
    wait_stream(&server, "live/oa");
    let out = Command::new("timeout")
        .arg("240")
        .arg(&st)
        .args(["run", &format!("http://{}/v1/openapi.json", server.api)])
        .args(["--checks", "all"])
        // A random but valid path name or session id is rightly 404: not a defect.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args([
            "--max-examples",
            "25",
            "--request-timeout",
            "5",
            "--workers",
            "1",
            "--seed",
            "1",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .env("SCHEMATHESIS_HOOKS", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis reported failures:\n{text}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
