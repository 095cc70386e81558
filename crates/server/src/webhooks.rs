//! Webhooks: every event of the bus POSTed as JSON ([`crate::events::EventJson`]) to each URL
//! of `[webhooks] urls`, signed, retried with exponential backoff.
//!
//! Each URL is its own consumer of the event bus with its own bounded queue (`queue` events)
//! and its own task and HTTP client, so a receiver that hangs or fails costs nothing but its
//! own deliveries: media never waits (the bus only ever `try_send`s), other URLs go on, and
//! when the queue is full new events for that URL are dropped, counted and logged (the bus logs
//! at each power of two; the worker logs each gap it finds), and the receiver gets a `resync`
//! event with the count.
//!
//! A request carries `Content-Type: application/json`, `X-Sluice-Event: <type>` and, when a
//! secret is set, `X-Sluice-Signature: sha256=<hex HMAC-SHA256 of the body keyed with the
//! secret>` (aws-lc-rs, the one crypto provider). Each attempt is bounded by `timeout`
//! (connecting included); timeouts, connection errors, 5xx, 408 and 429 are retried after
//! `retry_backoff`, doubled each time up to a minute, `retries` times; other answers than 2xx
//! are not retried. Delivery is at least once and in order per URL.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_lc_rs::hmac;
use bytes::Bytes;
use sluice_media::events::Received;
use sluice_media::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::WebhooksConfig;
use crate::events::EventJson;

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Counters of one receiver.
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Events the receiver answered with 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Events given up on (retries exhausted, or refused with a 4xx).
    pub abandoned: AtomicU64,
    /// Events dropped because the URL's queue was full.
    pub dropped: AtomicU64,
}

/// One receiver: where, and its client.
struct Target {
    url: reqwest::Url,
    /// The URL without credentials or query, for logs.
    label: String,
    client: reqwest::Client,
    key: Option<hmac::Key>,
    cfg: WebhooksConfig,
    stats: Arc<TargetStats>,
}

/// Starts one delivery task per configured URL, subscribed to the bus before this returns.
/// They end with `stop`, abandoning what was queued (events of the shutdown itself included).
pub fn spawn(cfg: &WebhooksConfig, registry: &Registry, stop: CancellationToken) -> anyhow::Result<()> {
    if cfg.urls.is_empty() {
        return Ok(());
    }
    if cfg.secret.is_empty() {
        tracing::warn!("webhooks have no secret: requests are not signed (set [webhooks] secret)");
    }
    let key = (!cfg.secret.is_empty()).then(|| hmac::Key::new(hmac::HMAC_SHA256, cfg.secret.as_bytes()));
    for (i, url) in cfg.urls.iter().enumerate() {
        let url = reqwest::Url::parse(url).with_context(|| format!("webhooks.urls[{i}]: {url:?}"))?;
        let label = label(&url);
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .with_context(|| format!("webhooks.urls[{i}]: cannot set up an HTTP client"))?;
        let rx = registry.events().subscribe("webhook", cfg.queue);
        let target = Target {
            url,
            label,
            client,
            key: key.clone(),
            cfg: cfg.clone(),
            stats: Arc::default(),
        };
        tracing::info!(url = %target.label, "webhook receiver");
        tokio::spawn(run(target, rx, stop.clone()));
    }
    Ok(())
}

/// Scheme, host, port and path: no user info, no query (either may hold a credential).
fn label(url: &reqwest::Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// `sha256=` and the lower-case hex HMAC-SHA256 of `body`.
pub fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256=");
    for b in tag.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

async fn run(target: Target, mut rx: sluice_media::events::EventReceiver, stop: CancellationToken) {
    loop {
        let r = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = rx.recv() => r,
        };
        let Some(r) = r else { break };
        if let Received::Missed(n) = r {
            let total = target.stats.dropped.fetch_add(n, Relaxed) + n;
            tracing::warn!(
                url = %target.label,
                missed = n,
                total,
                "webhook queue full: events dropped (the receiver is slow or failing)"
            );
        }
        let Some(ev) = EventJson::from_received(&r) else {
            continue;
        };
        let kind = ev.kind();
        // A resync always goes: it tells the receiver its picture is incomplete.
        if kind != "resync" && !target.cfg.events.is_empty() && !target.cfg.events.iter().any(|e| e == kind) {
            continue;
        }
        let body = Bytes::from(ev.to_json());
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = deliver(&target, kind, body) => {}
        }
    }
    let s = &target.stats;
    tracing::debug!(
        url = %target.label,
        delivered = s.delivered.load(Relaxed),
        failed_attempts = s.failed_attempts.load(Relaxed),
        abandoned = s.abandoned.load(Relaxed),
        dropped = s.dropped.load(Relaxed),
        "webhook receiver stopped"
    );
}

/// Whether an answer is worth another attempt.
fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// Delivers one event: attempts, then retries with backoff; gives up after `retries`.
async fn deliver(t: &Target, kind: &'static str, body: Bytes) {
    let signature = t.key.as_ref().map(|k| signature(k, &body));
    let mut backoff = t.cfg.retry_backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut req = t
            .client
            .post(t.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-sluice-event", kind)
            .body(body.clone());
        if let Some(sig) = &signature {
            req = req.header("x-sluice-signature", sig.as_str());
        }
        let error = match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                t.stats.delivered.fetch_add(1, Relaxed);
                return;
            }
            Ok(resp) if !retryable(resp.status()) => {
                t.stats.abandoned.fetch_add(1, Relaxed);
                tracing::warn!(
                    url = %t.label,
                    event = kind,
                    status = resp.status().as_u16(),
                    "webhook refused the event; not retried"
                );
                return;
            }
            Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
            Err(e) if e.is_timeout() => format!("no answer within {:?}", t.cfg.timeout),
            Err(e) => error_chain(&e),
        };
        t.stats.failed_attempts.fetch_add(1, Relaxed);
        if attempt > t.cfg.retries {
            t.stats.abandoned.fetch_add(1, Relaxed);
            tracing::warn!(url = %t.label, event = kind, attempts = attempt, "webhook failed, giving up on the event: {error}");
            return;
        }
        if attempt == 1 {
            tracing::info!(url = %t.label, event = kind, "webhook failed, retrying in {backoff:?}: {error}");
        } else {
            tracing::debug!(url = %t.label, event = kind, attempt, "webhook failed, retrying in {backoff:?}: {error}");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn labels_hide_credentials() {
        let u = reqwest::Url::parse("https://user:pw@hooks.example:8443/a/b?token=x").unwrap();
        assert_eq!(label(&u), "https://hooks.example:8443/a/b");
    }

    #[test]
    fn what_is_retried() {
        assert!(retryable(reqwest::StatusCode::BAD_GATEWAY));
        assert!(retryable(reqwest::StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(reqwest::StatusCode::NOT_FOUND));
    }
}
