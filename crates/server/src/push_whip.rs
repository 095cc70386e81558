//! WHIP push destinations: an `http://` or `https://` URL in a path's `[..push] urls` is a WHIP
//! endpoint (RFC 9725) that the path is published to over WebRTC. This module owns the HTTP
//! side (the POST of the offer with `Authorization: Bearer` when `bearer_token` is set, the
//! `Location` of the session's resource, its DELETE when the connection ends), the supervision
//! (connect while the path has a stream, retry with backoff and jitter, refuse what WebRTC
//! cannot carry), and the checking and masking of WHIP URLs. The WebRTC side is
//! `sluice_webrtc::WhipPush`; the state goes to push.rs's store through the same report as SRT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::Url;
use sluice_media::{Event, ReadError, Reader, StreamInfo};
use sluice_srt::PushReport;
use sluice_webrtc::{PushProgress, SessionError, WhipPush};

use crate::config::PathPush;

/// A live connection this long has its backoff reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// A connected WHIP server silent for this long (no STUN answer, no RTCP) is dropped and retried.
const ICE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest SDP answer taken.
const MAX_ANSWER: usize = 64 * 1024;
/// The part of an error answer's body quoted in the push's `last_error`.
const QUOTED_BODY: usize = 200;
/// How long the DELETE of a finished session's resource may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a push URL is a WHIP endpoint.
pub fn is_whip(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// A WHIP URL as logs and the API show it: no user info, no query (`?****`), and path segments
/// long enough to be a key (16 characters or more) cut to their first four.
pub fn masked_url(url: &str) -> String {
    let Ok(u) = Url::parse(url) else {
        let scheme = url.split_once("://").map_or("http", |(s, _)| s);
        return format!("{scheme}://****");
    };
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    for seg in u.path_segments().into_iter().flatten() {
        out.push('/');
        if seg.chars().count() >= 16 {
            out.extend(seg.chars().take(4));
            out.push_str("****");
        } else {
            out.push_str(seg);
        }
    }
    if u.query().is_some() {
        out.push_str("?****");
    }
    out
}

/// Checks a WHIP URL; the error shows it masked.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = masked_url(url);
    let u = Url::parse(url).map_err(|e| format!("bad WHIP push URL {shown}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("bad WHIP push URL {shown}: http:// or https:// expected"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("bad WHIP push URL {shown}: no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "bad WHIP push URL {shown}: credentials do not go in the URL; set the push's bearer_token"
        ));
    }
    if u.fragment().is_some() {
        return Err(format!("bad WHIP push URL {shown}: a URL with a #fragment"));
    }
    Ok(())
}

/// Starts pushing `reader`'s path to the WHIP endpoint `url`; it runs until the reader ends
/// (the path is over, the destination removed, a kick, shutdown).
pub(crate) fn spawn(
    url: String,
    reader: Reader,
    settings: PathPush,
    report: Arc<dyn PushReport>,
    rt: &tokio::runtime::Handle,
) {
    rt.spawn(async move {
        let mut reader = reader;
        let mut push = Supervisor {
            path: reader.path().to_owned(),
            shown: masked_url(&url),
            url,
            settings,
            report,
            info: None,
        };
        push.run(&mut reader).await;
    });
}

/// How one attempt ended.
enum End {
    /// The path's stream is over or the output was removed: stop.
    Done(String),
    /// The stream cannot go to this destination: wait for another stream (or `retry_max`).
    Refused(String),
    /// The destination failed: retry after the backoff.
    Retry(String),
}

struct Supervisor {
    path: String,
    url: String,
    /// The URL masked, for logs.
    shown: String,
    settings: PathPush,
    report: Arc<dyn PushReport>,
    /// The stream being pushed.
    info: Option<Arc<StreamInfo>>,
}

impl Supervisor {
    async fn run(&mut self, reader: &mut Reader) {
        let client = match self.http_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(path = %self.path, dest = %self.shown, "WHIP push not started: {e}");
                self.report.state("refused", Some(e));
                // Stays listed with its reason until the output ends.
                let _ = self.drain(reader, None, false).await;
                return;
            }
        };
        let mut backoff = self.settings.retry_min;
        loop {
            if self.info.is_none() {
                if let Err(e) = self.drain(reader, None, true).await {
                    self.log_end(&e);
                    return;
                }
            }
            let Some(info) = self.info.clone() else { continue };
            self.report.state("connecting", None);
            let started = Instant::now();
            match self.attempt(&client, reader, info).await {
                End::Done(why) => {
                    self.log_end(&why);
                    return;
                }
                End::Refused(why) => {
                    tracing::warn!(path = %self.path, dest = %self.shown, "push refused: {why}");
                    self.report.state("refused", Some(why));
                    // Until the publisher's codecs change (a new stream), or retry_max.
                    let until = Instant::now() + self.settings.retry_max;
                    if let Err(e) = self.drain(reader, Some(until), true).await {
                        self.log_end(&e);
                        return;
                    }
                }
                End::Retry(why) => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = self.settings.retry_min;
                    }
                    let wait = crate::push::jitter(backoff);
                    tracing::warn!(path = %self.path, dest = %self.shown,
                        "push failed: {why}; retrying in {:.1} s", wait.as_secs_f64());
                    self.report.state("retrying", Some(why));
                    if let Err(e) = self.drain(reader, Some(Instant::now() + wait), false).await {
                        self.log_end(&e);
                        return;
                    }
                    backoff = (backoff * 2).min(self.settings.retry_max);
                }
            }
        }
    }

    fn log_end(&self, why: &str) {
        tracing::info!(path = %self.path, dest = %self.shown, "push ended: {why}");
    }

    fn http_client(&self) -> Result<reqwest::Client, String> {
        let t = self.settings.connect_timeout;
        let mut b = reqwest::Client::builder()
            .connect_timeout(t)
            .timeout(t)
            // RFC 9725 section 4.5: a WHIP endpoint may redirect (307) to another one.
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
        if !self.settings.ca_file.is_empty() && self.url.starts_with("https://") {
            let pem = std::fs::read(&self.settings.ca_file)
                .map_err(|e| format!("push.ca_file {}: {e}", self.settings.ca_file))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("push.ca_file {}: {e}", self.settings.ca_file))?;
            b = b.tls_certs_only(certs);
        }
        b.build()
            .map_err(|e| format!("cannot set up an HTTP client: {e}"))
    }

    /// Reads the path (a reader left unread would fall behind) until `until` (with `None`, for
    /// as long as it lasts), or up to the next stream's start when `at_start`. Ok(true) when it
    /// stopped at a new stream; Err when the path's stream is over.
    async fn drain(
        &mut self,
        reader: &mut Reader,
        until: Option<Instant>,
        at_start: bool,
    ) -> Result<bool, String> {
        let deadline = until.map(tokio::time::Instant::from_std);
        loop {
            let ev = match deadline {
                Some(d) => match tokio::time::timeout_at(d, reader.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => return Ok(false),
                },
                None => reader.recv().await,
            };
            match ev {
                Ok(Event::Start(i)) => {
                    self.info = Some(i);
                    if at_start {
                        return Ok(true);
                    }
                }
                Ok(Event::Frame(_)) => {}
                Err(e) => return Err(read_end(e)),
            }
        }
    }

    /// One connection: offer, POST, answer, ICE and DTLS, media until it fails; then DELETE.
    async fn attempt(&mut self, client: &reqwest::Client, reader: &mut Reader, info: Arc<StreamInfo>) -> End {
        let endpoint = match Url::parse(&self.url) {
            Ok(u) => u,
            Err(e) => return End::Refused(format!("bad WHIP URL: {e}")),
        };
        let server = match self.resolve(&endpoint).await {
            Ok(a) => a,
            Err(e) => return End::Retry(e),
        };
        let (mut push, offer) = match WhipPush::offer(info, server, Instant::now()).await {
            Ok(o) => o,
            Err(e @ sluice_webrtc::Error::NoUsableCodec(_)) => return End::Refused(e.to_string()),
            Err(e) => return End::Retry(e.to_string()),
        };
        let (resource, answer) = match self.post(client, endpoint, offer).await {
            Ok(r) => r,
            Err(e) => return End::Retry(e),
        };
        if let Err(e) = push.accept_answer(&answer) {
            self.delete(client, resource).await;
            return match e {
                sluice_webrtc::Error::NoUsableCodec(_) => End::Refused(e.to_string()),
                e => End::Retry(format!("the WHIP server's answer: {e}")),
            };
        }
        tracing::debug!(path = %self.path, dest = %self.shown, "WHIP push: offer answered, connecting");
        let (path, shown, report) = (self.path.clone(), self.shown.clone(), self.report.clone());
        let mut progress = move |p: PushProgress| match p {
            PushProgress::Connected => {
                tracing::info!(path = %path, dest = %shown, "push live");
                report.state("live", None);
            }
            PushProgress::Sent(n) => report.sent(n),
        };
        let (end, stream) = push
            .run(reader, self.settings.connect_timeout, ICE_TIMEOUT, &mut progress)
            .await;
        // A new stream may have started while connected (the next offer is made for it).
        self.info = Some(stream);
        self.delete(client, resource).await;
        match end {
            SessionError::Stream(e) => End::Done(read_end(e)),
            SessionError::Ended(why) => End::Done(why),
            e => End::Retry(e.to_string()),
        }
    }

    /// The WHIP server's address, for the UDP socket's address family and route.
    async fn resolve(&self, endpoint: &Url) -> Result<std::net::SocketAddr, String> {
        let host = endpoint
            .host_str()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_owned();
        let port = endpoint.port_or_known_default().unwrap_or(80);
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let found = tokio::time::timeout(self.settings.connect_timeout, lookup).await;
        match found {
            Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| format!("{host} has no address")),
            Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
            Err(_) => Err(format!("resolving {host} timed out")),
        }
    }

    /// POSTs the offer; gives the session's resource URL (from `Location`) and the answer.
    async fn post(
        &self,
        client: &reqwest::Client,
        endpoint: Url,
        offer: String,
    ) -> Result<(Option<Url>, String), String> {
        let mut req = client
            .post(endpoint)
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer);
        if !self.settings.bearer_token.is_empty() {
            req = req.header(AUTHORIZATION, format!("Bearer {}", self.settings.bearer_token));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the WHIP server: {}", chain(e)))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_bounded(&mut resp, QUOTED_BODY * 4).await.unwrap_or_default();
            let quoted: String = body
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(QUOTED_BODY)
                .collect();
            let quoted = if quoted.is_empty() {
                String::new()
            } else {
                format!(": {quoted}")
            };
            return Err(format!("the WHIP server refused the offer with {status}{quoted}"));
        }
        let resource = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| resp.url().join(l).ok());
        if resource.is_none() {
            tracing::info!(path = %self.path, dest = %self.shown,
                "the WHIP server's answer has no Location: the session cannot be deleted when the push ends");
        }
        let answer = read_bounded(&mut resp, MAX_ANSWER)
            .await
            .map_err(|e| format!("the WHIP server's answer: {e}"))?;
        Ok((resource, answer))
    }

    /// Ends the session on the WHIP server (best effort: it times the session out anyway).
    async fn delete(&self, client: &reqwest::Client, resource: Option<Url>) {
        let Some(url) = resource else { return };
        let mut req = client.delete(url).timeout(DELETE_TIMEOUT);
        if !self.settings.bearer_token.is_empty() {
            req = req.header(AUTHORIZATION, format!("Bearer {}", self.settings.bearer_token));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::debug!(path = %self.path, dest = %self.shown, "WHIP DELETE answered {}", r.status())
            }
            Err(e) => {
                tracing::debug!(path = %self.path, dest = %self.shown, "WHIP DELETE failed: {}", chain(e))
            }
        }
    }
}

/// A response body as text, refused past `max` bytes.
async fn read_bounded(resp: &mut reqwest::Response, max: usize) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(chain)? {
        if body.len() + chunk.len() > max {
            return Err(format!("larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "not UTF-8".to_owned())
}

/// An HTTP client error with its causes ("error sending request: ...: invalid peer certificate:
/// UnknownIssuer"), without the URL (its query may hold a secret).
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn read_end(e: ReadError) -> String {
    match e {
        ReadError::Ended | ReadError::NoStream { .. } => "the path's stream ended".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whip_urls_are_masked() {
        assert_eq!(
            masked_url("http://127.0.0.1:8889/live/x/whip"),
            "http://127.0.0.1:8889/live/x/whip"
        );
        assert_eq!(
            masked_url("https://customer-ab.example.com/0123456789abcdef0123/webRTC/publish?token=s3cret"),
            "https://customer-ab.example.com/0123****/webRTC/publish?****"
        );
        assert_eq!(masked_url("https://[::1]/whip"), "https://[::1]/whip");
        assert_eq!(masked_url("http://user:pw@h:1/whip"), "http://h:1/whip");
        assert_eq!(masked_url("http://"), "http://****");
    }

    #[tokio::test]
    async fn http_errors_carry_their_cause() {
        // A "TLS server" that answers with plain text: the handshake fails, and the error says why.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let e = reqwest::Client::new()
            .post(format!("https://127.0.0.1:{port}/whip?token=secret"))
            .send()
            .await
            .unwrap_err();
        let text = chain(e);
        assert!(text.len() > "error sending request".len() + 5, "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn bad_whip_urls_are_refused_masked() {
        assert!(check_url("http://127.0.0.1:8889/live/x/whip").is_ok());
        assert!(check_url("https://whip.example.com/whip?x=1").is_ok());
        let e = check_url("http://u:secretsecret@h/whip").unwrap_err();
        assert!(e.contains("bearer_token") && !e.contains("secretsecret"), "{e}");
        assert!(check_url("http://:80/whip").is_err());
        assert!(check_url("http://h/whip#frag").is_err());
        let e = check_url("http://h:99999/0123456789abcdef0123").unwrap_err();
        assert!(!e.contains("0123456789abcdef0123"), "{e}");
    }
}
