//! Paced wake-ups of a path's readers. A reader that takes frames in batches (a recorder, a
//! push, an RTMP viewer coalescing its writes) sleeps until the first frame written at or after
//! a time of its choosing, and that write wakes it, in the publisher's own turn of the runtime.
//! A timer of the reader's own would wake the worker thread once more for each batch; on a
//! lightly loaded server that extra wake-up (a context switch, on a VM an exit from idle) costs
//! more than the batch.

use std::collections::HashMap;
use std::task::Waker;

use tokio::time::Instant;

/// The readers of one path waiting for a paced wake-up, by reader key.
#[derive(Default)]
pub(crate) struct Pacer {
    waiting: HashMap<u64, (Instant, Waker)>,
    /// The earliest time in `waiting`.
    next: Option<Instant>,
}

impl Pacer {
    /// `key` wants waking by the first write at or after `at`.
    pub(crate) fn register(&mut self, key: u64, at: Instant, waker: &Waker) {
        match self.waiting.get_mut(&key) {
            Some((when, w)) => {
                *when = at;
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => {
                self.waiting.insert(key, (at, waker.clone()));
            }
        }
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    pub(crate) fn is_waiting(&self, key: u64) -> bool {
        self.waiting.contains_key(&key)
    }

    pub(crate) fn remove(&mut self, key: u64) {
        if self.waiting.remove(&key).is_some() && self.waiting.is_empty() {
            self.next = None;
        }
    }

    /// A write happened: takes the readers whose time has come, to be woken once the path's
    /// lock is released. Reads the clock only when some reader waits.
    pub(crate) fn due(&mut self) -> Vec<Waker> {
        let Some(next) = self.next else {
            return Vec::new();
        };
        let now = Instant::now();
        if now < next {
            return Vec::new();
        }
        let mut earliest = None;
        let mut due = Vec::new();
        self.waiting.retain(|_, (at, w)| {
            if *at <= now {
                due.push(w.clone());
                false
            } else {
                earliest = Some(earliest.map_or(*at, |e: Instant| e.min(*at)));
                true
            }
        });
        self.next = earliest;
        due
    }

    /// The stream ended or its publisher left: every waiting reader looks now.
    pub(crate) fn wake_all(&mut self) {
        for (_, (_, w)) in self.waiting.drain() {
            w.wake();
        }
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_only_readers_whose_time_has_come() {
        let a = Arc::new(Count(AtomicUsize::new(0)));
        let b = Arc::new(Count(AtomicUsize::new(0)));
        let mut p = Pacer::default();
        let now = Instant::now();
        p.register(1, now, &Waker::from(a.clone()));
        p.register(2, now + Duration::from_secs(3600), &Waker::from(b.clone()));
        for w in p.due() {
            w.wake();
        }
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 0);
        assert!(!p.is_waiting(1));
        assert!(p.is_waiting(2));
        // Registering again replaces; removing forgets.
        p.register(2, now + Duration::from_secs(7200), &Waker::from(b.clone()));
        assert_eq!(p.waiting.len(), 1);
        p.remove(2);
        assert!(p.next.is_none());
        p.register(2, now + Duration::from_secs(3600), &Waker::from(b.clone()));
        p.wake_all();
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert!(!p.is_waiting(2));
    }
}
