//! The `[auth]` methods end to end with real clients: internal users with argon2id hashes
//! (ffmpeg over RTMP and SRT, HLS and the API with plain HTTP), JWTs from a JWKS served by a
//! local server that rotates its key, the HTTP callback against a local receiver (caching and
//! failing closed), signed links made by `sluice sign-url` and read by ffprobe, address lists
//! behind a trusted proxy, and the slow-down of an address that keeps failing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// `sluice hash-password PASSWORD`.
fn hash(password: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["hash-password", password])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Basic credentials for a header.
fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{pass}").as_bytes(), false))
}

fn b64(data: &[u8], url: bool) -> String {
    let abc: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
        for i in 0..c.len() + 1 {
            out.push(abc[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            out.push_str(&"=".repeat(3 - c.len()));
        }
    }
    out
}

/// The value of one sample of the metrics text, by name and label fragment.
fn metric(server: &Server, name: &str, labels: &str) -> f64 {
    let (_, _, body) = http_get(
        server.metrics,
        "/metrics",
        &[("Authorization", &basic("ops", "ops"))],
    );
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether the metric reaches `min` within 5 s (refusals are counted from the event bus, a
/// moment after the answer).
fn metric_at_least(server: &Server, name: &str, labels: &str, min: f64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if metric(server, name, labels) >= min {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A publisher that must be refused: it exits unsuccessfully and the path never goes live.
fn assert_refused(server: &Server, mut p: Publisher, path: &str, what: &str) {
    let st = p
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{what}: still running"));
    assert!(!st.success(), "{what}: accepted");
    let live = format!("stream started path={path} ");
    assert!(
        !server.log().contains(&live),
        "{what}: went live\n{}",
        server.log()
    );
}

#[test]
fn internal_users_on_every_protocol() {
    if !require("ffmpeg") {
        return;
    }
    let config = format!(
        r#"
[[auth.users]]
user = "any"
permissions = [{{ action = "read", path = "public/*" }}]

[[auth.users]]
user = "alice"
pass = "{}"
permissions = [{{ action = "publish" }}, {{ action = "read", path = "live/*" }}]

[[auth.users]]
user = "ops"
pass = "ops"
ips = ["127.0.0.0/8"]
permissions = [{{ action = "api" }}, {{ action = "metrics" }}, {{ action = "playback" }}]
"#,
        hash("wonderland")
    );
    let server = Server::start_with(&[], Some(&config));
    let src = source_flv();

    // RTMP: the user and password in the stream key, as OBS sends them.
    let _rtmp = Publisher::rtmp(&src, &server.rtmp_url("live/cam?user=alice&pass=wonderland"));
    wait_stream(&server, "live/cam");
    for q in ["?user=alice&pass=nope", "", "?user=ops&pass=ops"] {
        let p = Publisher::rtmp(&src, &server.rtmp_url(&format!("live/x{}{q}", q.len())));
        assert_refused(&server, p, &format!("live/x{}", q.len()), &format!("RTMP {q:?}"));
    }

    // SRT: both streamid forms (and the access-control one percent-encoded).
    let _srt = Publisher::srt(&src, &server.srt_url("publish:live/srt1:alice:wonderland"));
    wait_stream(&server, "live/srt1");
    let _srt2 = Publisher::srt(
        &src,
        &server.srt_url("#!::r=live/srt2,m=publish,u=alice,s=wonderland"),
    );
    wait_stream(&server, "live/srt2");
    let _srt3 = Publisher::srt(
        &src,
        &server.srt_url("%23!::r=live/srt3,m=publish,u=alice,s=wonderland"),
    );
    wait_stream(&server, "live/srt3");
    let bad = Publisher::srt(&src, &server.srt_url("publish:live/srt4:alice:nope"));
    assert_refused(&server, bad, "live/srt4", "SRT wrong password");

    // HLS: Basic credentials (or ?user=&pass=); `any` reads only public/*.
    let (st, _, _) = http_get(server.http, "/live/cam/index.m3u8", &[]);
    assert_eq!(st, 401);
    let (st, _, _) = http_get(
        server.http,
        "/live/cam/index.m3u8",
        &[("Authorization", &basic("alice", "wonderland"))],
    );
    assert_eq!(st, 200);
    let p = probe(
        &server.http_url("live/cam/index.m3u8?user=alice&pass=wonderland"),
        3,
    );
    assert_eq!(p.video().codec_name, "h264", "{}", p.stderr);
    assert_eq!((p.video().width, p.video().height), (640, 360), "{}", p.stderr);
    // A path that does not exist answers like one that needs credentials.
    let (st, _, _) = http_get(server.http, "/nothing/here/index.m3u8", &[]);
    assert_eq!(st, 401);

    // HTTP-FLV (ffprobe) and WHEP (an offer with Basic credentials is let through to the SDP
    // check; without, 401 before it).
    let p = probe(&server.http_url("live/cam.flv?user=alice&pass=wonderland"), 2);
    assert_eq!(p.video().codec_name, "h264", "{}", p.stderr);
    let (st, _, _) = http_get(server.http, "/live/cam.flv", &[]);
    assert_eq!(st, 401);
    let whep = |auth: Option<String>| {
        let mut args = vec![
            "-o".to_owned(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "-X".into(),
            "POST".into(),
            "-H".into(),
            "Content-Type: application/sdp".into(),
            "--data-binary".into(),
            "v=0".into(),
        ];
        if let Some(a) = auth {
            args.extend(["-H".into(), format!("Authorization: {a}")]);
        }
        args.push(server.webrtc_url("live/cam/whep"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs).1
    };
    assert_eq!(whep(None), "401");
    assert_eq!(whep(Some(basic("alice", "nope"))), "401");
    assert_eq!(
        whep(Some(basic("alice", "wonderland"))),
        "400",
        "past the door, a bad offer"
    );

    // Playback: ops may list recordings; anyone else is asked for credentials.
    let (st, _, _) = http_get(server.playback, "/list?path=live/cam", &[]);
    assert_eq!(st, 401);
    let (st, _, body) = http_get(
        server.playback,
        "/list?path=live/cam",
        &[("Authorization", &basic("ops", "ops"))],
    );
    assert_eq!(
        st,
        404,
        "nothing recorded yet: {}",
        String::from_utf8_lossy(&body)
    );

    // The API and the metrics: ops only (the written users replace the built-in ones).
    let (st, h, _) = http_get(server.api, "/v1/paths", &[]);
    assert_eq!(st, 401);
    assert!(
        header(&h, "www-authenticate").is_some_and(|v| v.starts_with("Basic")),
        "{h:?}"
    );
    let (st, _, _) = http_get(
        server.api,
        "/v1/paths",
        &[("Authorization", &basic("alice", "wonderland"))],
    );
    assert_eq!(st, 403, "alice may not use the API");
    let (st, _, body) = http_get(
        server.api,
        "/v1/paths",
        &[("Authorization", &basic("ops", "ops"))],
    );
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("live/cam"));
    let (st, _, _) = http_get(server.metrics, "/metrics", &[]);
    assert_eq!(st, 401);

    // Refusals are counted by reason; the secret is never logged.
    assert!(metric_at_least(
        &server,
        "sluice_access_denied_total",
        "reason=\"wrong_credentials\"",
        2.0
    ));
    assert!(metric_at_least(
        &server,
        "sluice_access_denied_total",
        "reason=\"no_credentials\"",
        1.0
    ));
    assert!(!server.log().contains("wonderland"), "a password in the log");
}

/// A minimal HTTP/1.1 server on loopback: each request's method, path and body go to
/// `handle`, which answers a status and a body (and may take its time).
fn serve_http(handle: impl Fn(&str, &str, &str) -> (u16, String) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_owned(),
                    parts.next().unwrap_or("").to_owned(),
                );
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let (status, text) = handle(&method, &path, &String::from_utf8_lossy(&body));
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    addr
}

/// An ES256 key: its PKCS#8 document (to sign) and its JWK (to publish).
fn es256_key(kid: &str) -> (Vec<u8>, String) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    assert_eq!(point.len(), 65);
    let jwk = format!(
        r#"{{"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":"{kid}","x":"{}","y":"{}"}}"#,
        b64(&point[1..33], true),
        b64(&point[33..], true)
    );
    (pkcs8.as_ref().to_vec(), jwk)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn es256_token(pkcs8: &[u8], kid: &str, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(pkcs8)).unwrap()
}

#[test]
fn jwt_from_a_jwks_that_rotates() {
    if !require("ffmpeg") {
        return;
    }
    let (k1, jwk1) = es256_key("k1");
    let (k2, jwk2) = es256_key("k2");
    let jwks = Arc::new(Mutex::new(format!("{{\"keys\":[{jwk1}]}}")));
    let fetches = Arc::new(Mutex::new(0u32));
    let (j, f) = (jwks.clone(), fetches.clone());
    let addr = serve_http(move |_, _, _| {
        *f.lock().unwrap() += 1;
        (200, j.lock().unwrap().clone())
    });
    let config = format!(
        r#"
[auth]
method = "jwt"
[auth.jwt]
jwks_url = "http://{addr}/jwks.json"
jwks_refresh_min = "1s"
audience = "sluice-test"
"#
    );
    let server = Server::start_with(&[], Some(&config));
    let claims = |perms: serde_json::Value| serde_json::json!({"exp": now() + 300, "aud": "sluice-test", "sluice_permissions": perms});
    let publish = es256_token(
        &k1,
        "k1",
        claims(serde_json::json!([{"action": "publish", "path": "live/*"}])),
    );
    let read = es256_token(&k1, "k1", claims(serde_json::json!([{"action": "read"}])));
    let src = source_flv();

    // RTMP with ?jwt= in the stream key; the read token does not publish.
    let _p = Publisher::rtmp(&src, &server.rtmp_url(&format!("live/cam?jwt={publish}")));
    wait_stream(&server, "live/cam");
    let refused = Publisher::rtmp(&src, &server.rtmp_url(&format!("live/b?jwt={read}")));
    assert_refused(&server, refused, "live/b", "RTMP with a read-only token");

    // HLS with ?jwt= (ffprobe) and Bearer; without, 401.
    let p = probe(&server.http_url(&format!("live/cam/index.m3u8?jwt={read}")), 3);
    assert_eq!(p.video().codec_name, "h264", "{}", p.stderr);
    let bearer = format!("Bearer {read}");
    let (st, _, _) = http_get(server.http, "/live/cam/index.m3u8", &[("Authorization", &bearer)]);
    assert_eq!(st, 200);
    let (st, _, _) = http_get(server.http, "/live/cam/index.m3u8", &[]);
    assert_eq!(st, 401);

    // Refused: alg none, the wrong audience, expired, another key's signature under k1's kid.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#, true),
        b64(
            format!(
                r#"{{"exp":{},"aud":"sluice-test","sluice_permissions":[{{"action":"read"}}]}}"#,
                now() + 300
            )
            .as_bytes(),
            true
        )
    );
    let wrong_aud = es256_token(
        &k1,
        "k1",
        serde_json::json!({"exp": now() + 300, "aud": "other", "sluice_permissions": [{"action": "read"}]}),
    );
    let expired = es256_token(
        &k1,
        "k1",
        serde_json::json!({"exp": now() - 600, "aud": "sluice-test", "sluice_permissions": [{"action": "read"}]}),
    );
    let forged = es256_token(&k2, "k1", claims(serde_json::json!([{"action": "read"}])));
    for (what, t) in [
        ("alg none", &none),
        ("audience", &wrong_aud),
        ("expired", &expired),
        ("forged", &forged),
    ] {
        let (st, _, body) = http_get(server.http, &format!("/live/cam/index.m3u8?jwt={t}"), &[]);
        assert_eq!(st, 401, "{what}: {}", String::from_utf8_lossy(&body));
    }
    assert!(metric_at_least(
        &server,
        "sluice_access_denied_total",
        "reason=\"token_expired\"",
        1.0
    ));

    // Rotation: the JWKS now holds k2 only. A k2 token is unknown, so the JWKS is fetched
    // again and the token accepted; k1's tokens stop working once the new set is in.
    *jwks.lock().unwrap() = format!("{{\"keys\":[{jwk2}]}}");
    let fetched = *fetches.lock().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let read2 = es256_token(
        &k2,
        "k2",
        claims(serde_json::json!([{"action": "read", "path": "live/cam"}])),
    );
    let (st, _, body) = http_get(server.http, &format!("/live/cam/index.m3u8?jwt={read2}"), &[]);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        *fetches.lock().unwrap() > fetched,
        "the JWKS was not fetched again"
    );
    let (st, _, _) = http_get(server.http, &format!("/live/cam/index.m3u8?jwt={read}"), &[]);
    assert_eq!(st, 401, "a token of the retired key still reads");
    // An unknown kid does not fetch the JWKS more than once per jwks_refresh_min.
    let before = *fetches.lock().unwrap();
    let stranger = es256_token(&k1, "k9", claims(serde_json::json!([{"action": "read"}])));
    for _ in 0..5 {
        let (st, _, _) = http_get(server.http, &format!("/live/cam/index.m3u8?jwt={stranger}"), &[]);
        assert_eq!(st, 401);
    }
    assert!(
        *fetches.lock().unwrap() <= before + 1,
        "the JWKS was fetched for every request"
    );
    // Tokens are secrets: never in the log.
    for t in [&publish, &read, &read2] {
        let sig = t.rsplit('.').next().unwrap();
        assert!(
            !server.log().contains(sig),
            "a token in the log:\n{}",
            server.log()
        );
    }
}

#[test]
fn http_callback_decides_remembers_and_fails_closed() {
    if !require("ffmpeg") {
        return;
    }
    let seen = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let s = seen.clone();
    let addr = serve_http(move |method, _, body| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        s.lock().unwrap().push(v.clone());
        assert_eq!(method, "POST");
        if v["path"] == "slow/cam" {
            std::thread::sleep(Duration::from_secs(5));
        }
        let ok = v["user"] == "good" || (v["action"] == "publish" && v["password"] == "pub");
        (if ok { 200 } else { 403 }, "{}".into())
    });
    let config = format!(
        r#"
[auth]
method = "http"
[auth.http]
url = "http://{addr}/auth"
timeout = "500ms"
cache_allow = "30s"
cache_deny = "30s"
"#
    );
    let server = Server::start_with(&[], Some(&config));
    let src = source_flv();
    let _p = Publisher::rtmp(&src, &server.rtmp_url("live/cam?user=enc&pass=pub"));
    wait_stream(&server, "live/cam");
    {
        let seen = seen.lock().unwrap();
        let v = seen
            .iter()
            .find(|v| v["action"] == "publish")
            .expect("the publish was asked");
        assert_eq!(
            (v["protocol"].as_str(), v["path"].as_str()),
            (Some("rtmp"), Some("live/cam"))
        );
        assert_eq!(v["ip"], "127.0.0.1");
        assert_eq!(v["user"], "enc");
    }
    let bad = Publisher::rtmp(&src, &server.rtmp_url("live/b?user=enc&pass=nope"));
    assert_refused(&server, bad, "live/b", "RTMP refused by the callback");

    // HLS: allowed and refused answers are remembered (the receiver is asked once each).
    let asked = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|v| v["protocol"] == "hls")
            .count()
    };
    for _ in 0..3 {
        let (st, _, _) = http_get(server.http, "/live/cam/index.m3u8?user=good&pass=x", &[]);
        assert_eq!(st, 200);
        let (st, _, _) = http_get(server.http, "/live/cam/index.m3u8?user=evil&pass=x", &[]);
        assert_eq!(st, 401);
    }
    assert_eq!(asked(), 2, "{:?}", seen.lock().unwrap());
    let p = probe(&server.http_url("live/cam/index.m3u8?user=good&pass=x"), 2);
    assert_eq!(p.video().codec_name, "h264", "{}", p.stderr);

    // A receiver that does not answer in time: refused after the timeout, not remembered.
    let t = Instant::now();
    let (st, _, body) = http_get(server.http, "/slow/cam/index.m3u8?user=good&pass=x", &[]);
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("did not answer in time"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(metric_at_least(
        &server,
        "sluice_access_denied_total",
        "reason=\"callback_failed\"",
        1.0
    ));
}

#[test]
fn signed_links_open_one_path_until_they_expire() {
    if !require("ffmpeg") {
        return;
    }
    let config = r#"
[[auth.users]]
user = "any"
permissions = [{ action = "publish" }]
[auth.signed_urls]
secret = "link-secret-of-this-test"
"#;
    let server = Server::start_with(&[], Some(config));
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let sign = |path: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["sign-url", path, "--secret", "link-secret-of-this-test", "--base"])
            .arg(format!("http://{}", server.http))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let url = sign("live/cam", &["--expires-in", "10m"]);
    let p = probe(&url, 3);
    assert_eq!(p.video().codec_name, "h264", "{url}: {}", p.stderr);
    assert!(p.count(true) >= 30, "{} video packets", p.count(true));
    // The media playlists carry the link on; segments need none.
    let rel = url.split_once(&server.http.to_string()).unwrap().1;
    let (st, _, body) = http_get(server.http, rel, &[]);
    assert_eq!(st, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        text.lines().any(|l| l.ends_with(".m3u8") || l.contains("&sig=")),
        "{text}"
    );
    let (st, _, _) = http_get(server.http, "/live/cam/index.m3u8", &[]);
    assert_eq!(st, 401, "without the link");
    // Another path, an altered expiry, an expired link, a link bound to another address.
    let other = sign("live/other", &[]);
    let other_rel = other
        .split_once(&server.http.to_string())
        .unwrap()
        .1
        .replace("live/other", "live/cam");
    let (st, _, _) = http_get(server.http, &other_rel, &[]);
    assert_eq!(st, 401);
    let altered = rel.replace("expires=", "expires=9");
    let (st, _, _) = http_get(server.http, &altered, &[]);
    assert_eq!(st, 401);
    let short = sign("live/cam", &["--expires-in", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let (st, _, body) = http_get(
        server.http,
        short.split_once(&server.http.to_string()).unwrap().1,
        &[],
    );
    assert_eq!(st, 401);
    assert!(String::from_utf8_lossy(&body).contains("expired"));
    let bound = sign("live/cam", &["--ip", "192.0.2.1"]);
    let (st, _, _) = http_get(
        server.http,
        bound.split_once(&server.http.to_string()).unwrap().1,
        &[],
    );
    assert_eq!(st, 403);
    let mine = sign("live/cam", &["--ip", "127.0.0.1"]);
    let (st, _, _) = http_get(
        server.http,
        mine.split_once(&server.http.to_string()).unwrap().1,
        &[],
    );
    assert_eq!(st, 200);

    // The API makes the same links (the built-in users were replaced: the API is refused to
    // anonymous callers, so this configuration's API is reached with none; 401).
    let (ok, out, err) = curl(&[
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"path": "live/cam", "expires_in": 60}"#,
        &format!("http://{}/v1/signed-links", server.api),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "401");
}

#[test]
fn the_api_makes_signed_links() {
    let config = r#"
[auth.signed_urls]
secret = "api-link-secret"
[paths."live/*".access]
read_token = "not-this"
"#;
    let server = Server::start_with(&[], Some(config));
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let post = |body: &str| {
        let (ok, out, err) = curl(&[
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("http://{}/v1/signed-links", server.api),
        ]);
        assert!(ok, "{err}");
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let (code, body) = post(r#"{"path": "live/cam", "expires_in": 600}"#);
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hls = v["hls"].as_str().unwrap();
    assert!(hls.starts_with("/live/cam/index.m3u8?expires="), "{v}");
    let (st, _, _) = http_get(server.http, hls, &[]);
    assert_eq!(st, 200);
    let p = probe(&server.http_url(hls.trim_start_matches('/')), 2);
    assert_eq!(p.video().codec_name, "h264", "{}", p.stderr);
    for bad in [
        r#"{"path": "live/cam", "expires_in": 0}"#,
        r#"{"path": "../x", "expires_in": 5}"#,
        r#"{"path": "live/cam", "expires_in": 5, "ip": "nope"}"#,
        r#"{"path": "live/cam"}"#,
        "not json",
    ] {
        assert_eq!(post(bad).0, "400", "{bad}");
    }
}

/// hls.js in Chromium plays a stream that needs a token, through an nginx cache: the token is
/// on the playlists only, segments and parts carry none, so nginx answers a second viewer's
/// requests for them from its cache.
#[test]
fn hls_js_plays_a_protected_stream_through_an_nginx_cache() {
    if !require("ffmpeg") || !require("node") || !require("nginx") || !have_hlsjs_browser() {
        return;
    }
    let config = r#"
[paths."live/*".access]
read_token = "viewer-token"
"#;
    let server = Server::start_with(&[], Some(config));
    let _p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let nginx = NginxCache::start(server.http);
    let url = format!(
        "http://127.0.0.1:{}/live/cam/index.m3u8?token=viewer-token",
        nginx.port
    );
    let r = run_web_script("llhls.mjs", &[url.as_str(), "12"], &[], 90);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert!(r["played"].as_f64().unwrap() >= 10.0, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );

    // What hls.js asked nginx for: playlists with the token, media without.
    let log = nginx.access_log();
    let media: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|u| !u.contains(".m3u8"))
        .collect();
    assert!(
        media.len() > 20,
        "hls.js loaded {} media objects:\n{log}",
        media.len()
    );
    assert!(
        media.iter().all(|u| !u.contains("token")),
        "a secret in a media URL:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(".m3u8?") && l.contains("token=viewer-token") && l.contains(" 200 ")),
        "{log}"
    );
    // A second viewer (without the first one's token) gets those objects from the cache.
    let mut hits = 0;
    for u in media.iter().rev().take(10) {
        let (st, h, body) = http_get(format!("127.0.0.1:{}", nginx.port).parse().unwrap(), u, &[]);
        assert_eq!(st, 200, "{u}");
        assert!(!body.is_empty());
        if header(&h, "x-cache-status") == Some("HIT") {
            hits += 1;
        }
    }
    assert_eq!(
        hits,
        10,
        "media served from nginx's cache:\n{}",
        nginx.access_log()
    );
    // Without the token, the playlist is refused through the cache too.
    let (st, _, _) = http_get(
        format!("127.0.0.1:{}", nginx.port).parse().unwrap(),
        "/live/cam/index.m3u8",
        &[],
    );
    assert_eq!(st, 401);
}

#[test]
fn addresses_behind_a_trusted_proxy_and_the_slow_down() {
    let config = r#"
[auth]
deny_ips = ["203.0.113.9"]
trusted_proxies = ["127.0.0.1"]
fail_limit = 5
fail_delay = "1s"
[paths."live/*".access]
read_token = "t"
"#;
    let server = Server::start_with(&[], Some(config));
    // Through the trusted proxy (127.0.0.1), the forwarded client is the one decided on.
    let (st, _, _) = http_get(
        server.http,
        "/live/cam/index.m3u8?token=t",
        &[("X-Forwarded-For", "203.0.113.9")],
    );
    assert_eq!(st, 403);
    let (st, _, _) = http_get(
        server.http,
        "/live/cam/index.m3u8?token=t",
        &[("X-Forwarded-For", "203.0.113.10")],
    );
    assert_ne!(st, 403);
    // From another address (not a trusted proxy) the header is not believed.
    let (st, _, _) = http_get_from(
        "127.0.0.2",
        server.http,
        "/live/cam/index.m3u8?token=t",
        &[("X-Forwarded-For", "203.0.113.9")],
    );
    assert_ne!(st, 403);

    // An address that keeps failing has its refusals answered later; what it may do is still
    // answered at once, and other addresses are not slowed.
    for _ in 0..5 {
        let (st, _, _) = http_get_from("127.0.0.3", server.http, "/live/cam/index.m3u8?token=x", &[]);
        assert_eq!(st, 401);
    }
    let t = Instant::now();
    let (st, _, _) = http_get_from("127.0.0.3", server.http, "/live/cam/index.m3u8?token=x", &[]);
    assert_eq!(st, 401);
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
    let t = Instant::now();
    let (st, _, _) = http_get_from("127.0.0.3", server.http, "/live/cam/index.m3u8?token=t", &[]);
    assert_ne!(st, 401);
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
    let t = Instant::now();
    let (st, _, _) = http_get_from("127.0.0.4", server.http, "/live/cam/index.m3u8?token=x", &[]);
    assert_eq!(st, 401);
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
}

/// `http_get` from a chosen local address (any of 127.0.0.0/8).
fn http_get_from(
    local: &str,
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut args = vec![
        "-s".to_owned(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "--interface".into(),
        local.into(),
    ];
    for (k, v) in extra {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args.push(format!("http://{addr}{path}"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, out, err) = curl(&refs);
    (
        out.trim().parse().unwrap_or_else(|_| panic!("curl: {out} {err}")),
        Vec::new(),
        Vec::new(),
    )
}

/// Every method on every door: for the internal users, an HS256 JWT and the HTTP callback, the
/// right credentials open RTMP and SRT publishing (ffmpeg), HLS and HTTP-FLV reading (ffprobe),
/// the WHEP door, the API and playback (curl); wrong ones get each protocol's own refusal.
#[test]
fn every_method_on_every_door() {
    if !require("ffmpeg") {
        return;
    }
    // The callback allows the user "good" (any password) for everything.
    let addr = serve_http(|_, _, body| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        (
            if v["user"] == "good" || v["token"] == "good" {
                200
            } else {
                403
            },
            "{}".into(),
        )
    });
    let all = r#"[{ action = "publish" }, { action = "read" }, { action = "api" }, { action = "playback" }]"#;
    let jwt_good = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"exp": now() + 600, "sluice_permissions": [
            {"action": "publish"}, {"action": "read"}, {"action": "api"}, {"action": "playback"}]}),
        &jsonwebtoken::EncodingKey::from_secret(b"matrix-secret"),
    )
    .unwrap();
    let jwt_bad = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"exp": now() + 600, "sluice_permissions": [{"action": "read"}]}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let methods = [
        (
            "internal",
            format!(
                "[[auth.users]]\nuser = \"good\"\npass = \"{}\"\npermissions = {all}\n",
                hash("pw")
            ),
            ("good", "pw"),
            ("good", "nope"),
        ),
        (
            "jwt",
            // No anonymous API from this machine either (the built-in users are replaced).
            "[auth]\nmethod = \"jwt\"\n[[auth.users]]\nuser = \"any\"\npermissions = []\n\
             [auth.jwt]\nsecret = \"matrix-secret\"\n"
                .to_owned(),
            ("jwt", jwt_good.as_str()),
            ("jwt", jwt_bad.as_str()),
        ),
        (
            "http",
            format!(
                "[auth]\nmethod = \"http\"\n[[auth.users]]\nuser = \"any\"\npermissions = []\n\
                 [auth.http]\nurl = \"http://{addr}/\"\n"
            ),
            ("good", "x"),
            ("evil", "x"),
        ),
    ];
    let src = source_flv();
    for (method, config, good, bad) in &methods {
        let server = Server::start_with(&[], Some(config));
        // Credentials as each client sends them: a user and password, or a token where the
        // client can only send one thing (RTMP ?jwt=, SRT's password place, Bearer).
        let query = |(u, p): (&str, &str)| match u {
            "jwt" => format!("jwt={p}"),
            _ => format!("user={u}&pass={p}"),
        };
        let header = |(u, p): (&str, &str)| match u {
            "jwt" => format!("Bearer {p}"),
            _ => basic(u, p),
        };
        let what = |door: &str| format!("{method}: {door}");
        // RTMP publish.
        let _rtmp = Publisher::rtmp(&src, &server.rtmp_url(&format!("live/cam?{}", query(*good))));
        wait_stream(&server, "live/cam");
        let p = Publisher::rtmp(&src, &server.rtmp_url(&format!("live/r?{}", query(*bad))));
        assert_refused(&server, p, "live/r", &what("RTMP wrong"));
        // SRT publish: user and password (a token in the password place).
        let sid = |(u, p): (&str, &str), path: &str| format!("publish:{path}:{u}:{p}");
        let _srt = Publisher::srt(&src, &server.srt_url(&sid(*good, "live/srt")));
        wait_stream(&server, "live/srt");
        let p = Publisher::srt(&src, &server.srt_url(&sid(*bad, "live/srt2")));
        assert_refused(&server, p, "live/srt2", &what("SRT wrong"));
        // HLS and HTTP-FLV reading.
        for file in ["live/cam/index.m3u8", "live/cam.flv"] {
            let p = probe(&server.http_url(&format!("{file}?{}", query(*good))), 1);
            assert_eq!(p.video().codec_name, "h264", "{}: {}", what(file), p.stderr);
            let (st, _, _) = http_get(server.http, &format!("/{file}?{}", query(*bad)), &[]);
            assert_eq!(st, 401, "{}", what(file));
        }
        // The WHEP door (an offer is let through to its check with the right credentials).
        let whep = |auth: String| {
            let h = format!("Authorization: {auth}");
            let url = server.webrtc_url("live/cam/whep");
            curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/sdp",
                "-H",
                &h,
                "--data-binary",
                "v=0",
                &url,
            ])
            .1
        };
        assert_eq!(whep(header(*good)), "400", "{}", what("WHEP"));
        assert_eq!(whep(header(*bad)), "401", "{}", what("WHEP wrong"));
        // The API and playback.
        let (st, _, _) = http_get(server.api, "/v1/paths", &[("Authorization", &header(*good))]);
        assert_eq!(st, 200, "{}", what("API"));
        let (st, _, _) = http_get(server.api, "/v1/paths", &[("Authorization", &header(*bad))]);
        assert_eq!(st, 401, "{}", what("API wrong"));
        let (st, _, _) = http_get(
            server.playback,
            "/list?path=live/cam",
            &[("Authorization", &header(*good))],
        );
        assert_eq!(st, 404, "{}: playback (nothing recorded)", method);
        let (st, _, _) = http_get(
            server.playback,
            "/list?path=live/cam",
            &[("Authorization", &header(*bad))],
        );
        assert_eq!(st, 401, "{}", what("playback wrong"));
    }
}
