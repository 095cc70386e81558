//! What HLS viewers do, without making them sessions (each request stands alone): requests,
//! bytes and distinct clients of a stream over the last minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const WINDOW: Duration = Duration::from_secs(60);
/// Distinct clients remembered at most (a flood of addresses cannot grow memory without bound).
const MAX_CLIENTS: usize = 100_000;

/// Requests, bytes and distinct client addresses over the last minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerCounts {
    pub requests: u64,
    pub bytes: u64,
    pub clients: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// One bucket per second: (second index, requests, bytes).
    buckets: Vec<(u64, u64, u64)>,
    /// Last request time of each client address.
    clients: HashMap<IpAddr, Instant>,
    last_prune: Option<Instant>,
}

/// Counts one stream's HLS requests.
#[derive(Debug)]
pub struct Viewers {
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl Default for Viewers {
    fn default() -> Self {
        Viewers {
            epoch: Instant::now(),
            inner: Mutex::default(),
        }
    }
}

impl Viewers {
    /// Records one request from `client` that was answered with `bytes` of body.
    pub fn record(&self, client: Option<IpAddr>, bytes: u64) {
        self.record_at(Instant::now(), client, bytes)
    }

    fn record_at(&self, now: Instant, client: Option<IpAddr>, bytes: u64) {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let mut st = self.inner.lock();
        let slot = (sec % 60) as usize;
        if st.buckets.len() < 60 {
            st.buckets.resize(60, (u64::MAX, 0, 0));
        }
        let b = &mut st.buckets[slot];
        if b.0 != sec {
            *b = (sec, 0, 0);
        }
        b.1 += 1;
        b.2 += bytes;
        if let Some(ip) = client {
            if st.clients.len() < MAX_CLIENTS || st.clients.contains_key(&ip) {
                st.clients.insert(ip, now);
            }
        }
        if st
            .last_prune
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            st.last_prune = Some(now);
            st.clients.retain(|_, seen| now.duration_since(*seen) < WINDOW);
        }
    }

    /// Whether a request came within `within` (to the second; at most a minute back).
    pub fn requested_within(&self, within: Duration) -> bool {
        let now = Instant::now().saturating_duration_since(self.epoch).as_secs();
        let window = within.as_secs().clamp(1, 60);
        self.inner
            .lock()
            .buckets
            .iter()
            .any(|&(s, n, _)| s != u64::MAX && n > 0 && s + window > now)
    }

    /// The counts over the last minute.
    pub fn counts(&self) -> ViewerCounts {
        self.counts_at(Instant::now())
    }

    fn counts_at(&self, now: Instant) -> ViewerCounts {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let st = self.inner.lock();
        let mut c = ViewerCounts::default();
        for &(s, requests, bytes) in &st.buckets {
            if s != u64::MAX && s + 60 > sec {
                c.requests += requests;
                c.bytes += bytes;
            }
        }
        c.clients = st
            .clients
            .values()
            .filter(|seen| now.duration_since(**seen) < WINDOW)
            .count() as u64;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_request_is_seen() {
        let v = Viewers::default();
        assert!(!v.requested_within(Duration::from_secs(10)));
        v.record(None, 100);
        assert!(v.requested_within(Duration::from_secs(10)));
    }

    #[test]
    fn counts_over_the_last_minute() {
        let v = Viewers::default();
        let t0 = v.epoch;
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        v.record_at(t0, Some(a), 100);
        v.record_at(t0 + Duration::from_secs(1), Some(a), 200);
        v.record_at(t0 + Duration::from_secs(30), Some(b), 300);
        let c = v.counts_at(t0 + Duration::from_secs(31));
        assert_eq!(
            c,
            ViewerCounts {
                requests: 3,
                bytes: 600,
                clients: 2
            }
        );
        // A minute later the first two requests and client a have left the window.
        let c = v.counts_at(t0 + Duration::from_secs(61));
        assert_eq!(
            c,
            ViewerCounts {
                requests: 1,
                bytes: 300,
                clients: 1
            }
        );
        let c = v.counts_at(t0 + Duration::from_secs(200));
        assert_eq!(c, ViewerCounts::default());
    }
}
