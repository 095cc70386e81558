//! Access decisions per second on one core: the policy (`sluice_server::auth::Auth`) answering
//! the same kind of request in a loop, for each way a request is allowed (open, a path token,
//! an internal user with an argon2id hash, an HS256 JWT, a signed link) and for a refusal.
//!
//! Run: `cargo bench -p sluice --bench auth` (release profile). Prints one line per case;
//! asserts only that each case is answered as expected (timing depends on the machine).

use std::time::{Duration, Instant};

use sluice_media::access::{AccessRequest, Action, Policy};
use sluice_server::auth::{hash_password, signed, Auth};
use sluice_server::config::Config;
use sluice_server::reload::LiveConfig;

fn policy(text: &str) -> Auth {
    Auth::new(LiveConfig::new(Config::parse(text, Vec::new()).unwrap()))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Decisions per second over about a second, after a warm-up (which also verifies and
/// remembers an argon2 hash through the asynchronous path).
fn measure(name: &str, auth: &Auth, req: &AccessRequest, allowed: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = rt.block_on(auth.check(req));
    assert_eq!(first.is_ok(), allowed, "{name}: {first:?}");
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1000 {
            let r = auth.check_now(req).expect("answered at once");
            assert_eq!(r.is_ok(), allowed);
        }
        n += 1000;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name:<38} {:>10.0} decisions/s  ({:.2} us each)",
        rate,
        1e6 / rate
    );
}

fn main() {
    // Test runners list every target (`cargo nextest --all-targets` runs `--list`): this bench
    // has no test to list, and only measures when run as a benchmark (`cargo bench`).
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") || !args.iter().any(|a| a == "--bench") {
        return;
    }
    let from = Some("198.51.100.7:40000".parse().unwrap());
    let read = |path: &str, q: &str| AccessRequest::new(Action::Read, path, "hls", from).with_query(q);

    measure(
        "open (default configuration)",
        &policy(""),
        &read("live/cam", ""),
        true,
    );

    let token = policy("[paths.\"live/*\".access]\nread_token = \"viewer-token\"\n");
    measure(
        "per-path read token",
        &token,
        &read("live/cam", "token=viewer-token"),
        true,
    );

    let hash = hash_password("wonderland").unwrap();
    let users = policy(&format!(
        "[auth]\nfail_limit = 0\n[[auth.users]]\nuser = \"any\"\npermissions = [{{ action = \"read\", path = \"public/*\" }}]\n\
         [[auth.users]]\nuser = \"alice\"\npass = \"{hash}\"\npermissions = [{{ action = \"read\", path = \"live/*\" }}]\n"
    ));
    measure(
        "internal user, argon2id (remembered)",
        &users,
        &read("live/cam", "user=alice&pass=wonderland"),
        true,
    );
    measure(
        "internal: anonymous refused",
        &users,
        &read("live/cam", ""),
        false,
    );

    let jwt = policy("[auth]\nmethod = \"jwt\"\nfail_limit = 0\n[auth.jwt]\nsecret = \"bench-secret\"\n");
    let claims = serde_json::json!({"exp": now() + 3600, "sluice_permissions": [{"action": "read", "path": "live/*"}]});
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"bench-secret"),
    )
    .unwrap();
    measure("jwt HS256", &jwt, &read("live/cam", &format!("jwt={t}")), true);
    measure(
        "jwt HS256, wrong path (refused)",
        &jwt,
        &read("other", &format!("jwt={t}")),
        false,
    );

    let links = policy("[auth.signed_urls]\nsecret = \"link-secret\"\n[[auth.users]]\nuser = \"any\"\npermissions = [{ action = \"publish\" }]\n");
    let q = signed::sign("link-secret", "live/cam", now() + 3600, None);
    measure("signed link", &links, &read("live/cam", &q), true);
}
