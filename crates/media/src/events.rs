//! The event bus: path and session lifecycle events, delivered to each consumer (logs, webhooks,
//! SSE) through its own bounded queue. Media never waits for it: a consumer that falls behind
//! loses events, and the loss is counted, logged and reported to it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::stats::Role;

/// Something that happened to a path or a session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A publisher started a stream on the path (first time, or back within the grace period).
    Published {
        path: Arc<str>,
        session: u64,
        protocol: &'static str,
    },
    /// The publisher left; readers are kept for the grace period.
    Unpublished { path: Arc<str>, session: u64 },
    /// The path has no publisher and its grace period is over; readers were closed.
    PathEnded { path: Arc<str> },
    SessionOpened {
        id: u64,
        protocol: &'static str,
        role: Role,
        path: Arc<str>,
        remote: Option<SocketAddr>,
    },
    SessionClosed {
        id: u64,
        protocol: &'static str,
        role: Role,
        path: Arc<str>,
        /// Why it ended, as the session told it (empty when it did not say).
        reason: String,
    },
    /// A path's health changed (audio present/absent/silent, stalled/flowing, ...): `what` names
    /// the check, `state` its new state, `detail` the figures behind it.
    Health {
        path: Arc<str>,
        what: &'static str,
        state: &'static str,
        detail: String,
    },
    /// A path output changed state (connecting, live, retrying with the last error, ...).
    Output {
        path: Arc<str>,
        name: String,
        state: &'static str,
        detail: String,
    },
    /// A recording segment of the path was created, completed or deleted, or recording failed
    /// or resumed: `state` is `created`, `completed`, `deleted`, `error` or `resumed`; `file` the
    /// segment's file; `detail` the error, or the duration and size of a completed segment.
    Recording {
        path: Arc<str>,
        state: &'static str,
        file: String,
        /// Seconds of media in the segment (completed and deleted segments).
        duration: f64,
        bytes: u64,
        detail: String,
    },
    /// An access request was refused.
    AccessDenied {
        action: &'static str,
        path: String,
        protocol: &'static str,
        remote: Option<SocketAddr>,
        /// The refusal's fixed code (`Reason::code`), a metrics label.
        code: &'static str,
        reason: String,
    },
}

/// One event with the time it happened.
#[derive(Debug, Clone)]
pub struct Stamped {
    pub at: SystemTime,
    pub event: ServerEvent,
}

/// What a consumer receives.
#[derive(Debug, Clone)]
pub enum Received {
    Event(Stamped),
    /// The consumer was too slow and this many events were dropped before the next one.
    Missed(u64),
}

struct Consumer {
    name: &'static str,
    tx: mpsc::Sender<Stamped>,
    missed: Arc<AtomicU64>,
}

/// Fans events out to consumers. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct EventBus {
    consumers: Mutex<Vec<Consumer>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("consumers", &self.consumers.lock().len())
            .finish()
    }
}

impl EventBus {
    /// Adds a consumer with a queue of `capacity` events.
    pub fn subscribe(&self, name: &'static str, capacity: usize) -> EventReceiver {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let missed = Arc::new(AtomicU64::new(0));
        self.consumers.lock().push(Consumer {
            name,
            tx,
            missed: missed.clone(),
        });
        EventReceiver { rx, missed }
    }

    /// Delivers `event` to every consumer that has room; never waits.
    pub fn emit(&self, event: ServerEvent) {
        let stamped = Stamped {
            at: SystemTime::now(),
            event,
        };
        let mut consumers = self.consumers.lock();
        consumers.retain(|c| match c.tx.try_send(stamped.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = c.missed.fetch_add(1, Relaxed) + 1;
                self.dropped.fetch_add(1, Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        consumer = c.name,
                        missed = n,
                        "event consumer is too slow: events dropped"
                    );
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Events dropped because a consumer's queue was full, over all consumers.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub fn consumers(&self) -> usize {
        self.consumers.lock().len()
    }
}

/// A consumer's end of the bus. Dropping it unsubscribes.
pub struct EventReceiver {
    rx: mpsc::Receiver<Stamped>,
    missed: Arc<AtomicU64>,
}

impl EventReceiver {
    /// The next event, or the count of events missed since the last call. `None` when the bus is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        let missed = self.missed.swap(0, Relaxed);
        if missed > 0 {
            return Some(Received::Missed(missed));
        }
        let ev = self.rx.recv().await?;
        Some(Received::Event(ev))
    }

    /// Like [`recv`](Self::recv) without waiting: `None` when nothing is queued.
    pub fn try_recv(&mut self) -> Option<Received> {
        let missed = self.missed.swap(0, Relaxed);
        if missed > 0 {
            return Some(Received::Missed(missed));
        }
        self.rx.try_recv().ok().map(Received::Event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> ServerEvent {
        ServerEvent::PathEnded {
            path: format!("p{i}").into(),
        }
    }

    #[tokio::test]
    async fn a_stalled_consumer_misses_events_and_is_told() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe("slow", 4);
        let mut fast = bus.subscribe("fast", 1024);
        let start = std::time::Instant::now();
        for i in 0..1000 {
            bus.emit(ev(i));
        }
        // Emitting never waits on the stalled consumer.
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let mut n = 0;
        while let Some(Received::Event(_)) = fast.try_recv() {
            n += 1;
        }
        assert_eq!(n, 1000);
        let mut got = Vec::new();
        while let Some(r) = slow.try_recv() {
            got.push(r);
        }
        // Four events fit; the loss is reported before the next delivery.
        assert!(matches!(got[0], Received::Missed(996)), "{got:?}");
        assert_eq!(got.len(), 5);
        assert_eq!(bus.dropped(), 996);
        drop(slow);
        bus.emit(ev(0));
        assert_eq!(bus.consumers(), 1);
    }
}
