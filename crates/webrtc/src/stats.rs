//! Link statistics of a session: str0m's stats events folded into the core's [`LinkStats`],
//! written to the session's [`SessionStats::link`] about once a second and when it ends.

use std::sync::Arc;
use std::time::Instant;

use sluice_media::stats::{LinkStats, SessionStats};
use str0m::Event;

pub(crate) struct Link {
    pub link: LinkStats,
    stats: Arc<SessionStats>,
    /// (when, peer bytes sent, peer bytes received) at the previous peer stats event.
    last: (Instant, u64, u64),
}

impl Link {
    pub fn new(stats: Arc<SessionStats>, now: Instant) -> Self {
        Link {
            link: LinkStats {
                state: "new",
                ..Default::default()
            },
            stats,
            last: (now, 0, 0),
        }
    }

    /// Takes a stats event; false (and nothing done) for any other event.
    pub fn event(&mut self, e: &Event) -> bool {
        let l = &mut self.link;
        match e {
            Event::PeerStats(s) => {
                if let Some(rtt) = s.rtt {
                    l.rtt_ms = rtt.as_secs_f64() * 1000.0;
                }
                if let Some(p) = &s.selected_candidate_pair {
                    l.candidate_pair = format!("{:?} {:?} -> {:?}", p.protocol, p.local, p.remote);
                }
                let secs = s
                    .timestamp
                    .saturating_duration_since(self.last.0)
                    .as_secs_f64()
                    .max(0.001);
                let (tx, rx) = (s.peer_bytes_tx, s.peer_bytes_rx);
                l.send_mbps = tx.saturating_sub(self.last.1) as f64 * 8.0 / 1e6 / secs;
                l.recv_mbps = rx.saturating_sub(self.last.2) as f64 * 8.0 / 1e6 / secs;
                self.last = (s.timestamp, tx, rx);
                self.publish();
            }
            Event::MediaEgressStats(s) => {
                l.packets_sent = s.packets;
                l.naks_received = s.nacks;
                l.plis = s.plis + s.firs;
                if let Some(r) = &s.remote {
                    l.jitter_ms = r.jitter as f64 / 90.0;
                    l.packets_lost = r.packets_lost;
                }
            }
            Event::MediaIngressStats(s) => {
                l.packets_received = s.packets;
                l.naks_sent = s.nacks;
                l.jitter_ms = s.jitter as f64 / 90.0;
                if let Some(loss) = s.loss {
                    l.packets_lost = (loss as f64 * s.packets as f64) as u64;
                }
            }
            _ => return false,
        }
        true
    }

    /// A connection state as the API shows it.
    pub fn set_state(&mut self, state: &'static str) {
        self.link.state = state;
    }

    /// Writes the current figures to the session's stats.
    pub fn publish(&self) {
        *self.stats.link.lock() = Some(self.link.clone());
    }
}
