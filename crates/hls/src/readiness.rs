//! Part readiness: how long after the frame that completes a part (the next frame of its
//! track, which gives the last frame's duration) the part can be served, measured from that
//! frame's arrival in the server. A fixed-bucket histogram of atomics, per stream.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last bucket, past 1 s, is unbounded).
pub const BUCKETS: [f64; 11] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The readiness of one stream's parts.
#[derive(Debug)]
pub struct Readiness {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// Every stream's parts since the server started (the metrics' histogram; a stream's own goes
/// with it when it ends).
pub static ALL_PARTS: Readiness = Readiness::new();

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    pub const fn new() -> Self {
        Readiness {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| s <= *b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> ReadinessSnapshot {
        let mut counts = [0; BUCKETS.len() + 1];
        for (c, a) in counts.iter_mut().zip(&self.counts) {
            *c = a.load(Relaxed);
        }
        ReadinessSnapshot {
            counts,
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// Counts per bucket (not cumulative) and the sum of the times.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadinessSnapshot {
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl ReadinessSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another stream's.
    pub fn add(&mut self, o: &ReadinessSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum_seconds += o.sum_seconds;
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in seconds; `None` without
    /// samples, infinity past the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }

    /// (upper bound, count in that bucket alone) per bucket, the last one unbounded: what
    /// prometheus-client's histogram encoder takes (it adds them up).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), *c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let r = Readiness::default();
        for _ in 0..98 {
            r.record(Duration::from_micros(300));
        }
        r.record(Duration::from_millis(7));
        r.record(Duration::from_secs(3));
        let s = r.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.quantile(0.5), Some(0.0005));
        assert_eq!(s.quantile(0.99), Some(0.01));
        assert_eq!(s.quantile(1.0), Some(f64::INFINITY));
        let b = s.buckets();
        assert_eq!(b[0], (0.0005, 98));
        assert_eq!(b.last().copied(), Some((f64::INFINITY, 1)));
        assert!((s.sum_seconds - (98.0 * 0.0003 + 0.007 + 3.0)).abs() < 1e-6);
        assert_eq!(ReadinessSnapshot::default().quantile(0.5), None);
    }
}
