//! Readers: a bounded cursor over a path's frames that starts at the latest keyframe.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::Instant;

use crate::path::PathShared;
use crate::stats::{SessionGuard, SessionStats};
use crate::{Frame, MediaKind, ReadError, Track};

/// What a publisher's stream carries, from one [`start`](crate::Publisher::start) to the next.
#[derive(Debug)]
pub struct StreamInfo {
    pub tracks: Vec<Track>,
    /// 0 for the path's first stream, then 1, 2, ... for each restart or codec change.
    pub epoch: u64,
    /// True when this stream follows an earlier one on the same path (HLS marks a discontinuity).
    pub discontinuity: bool,
    pub started_at: SystemTime,
}

impl StreamInfo {
    pub fn track(&self, id: crate::TrackId) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }
    pub fn video(&self) -> Option<&Track> {
        self.tracks.iter().find(|t| t.kind() == MediaKind::Video)
    }
    pub fn audio(&self) -> Option<&Track> {
        self.tracks.iter().find(|t| t.kind() == MediaKind::Audio)
    }
}

/// What a reader receives.
#[derive(Debug, Clone)]
pub enum Event {
    /// The tracks of the frames that follow. Always the first event; again after a restart.
    Start(Arc<StreamInfo>),
    Frame(Arc<Frame>),
}

const LAG_WINDOW: Duration = Duration::from_secs(10);

/// One reader of a path. Dropping it leaves the path.
pub struct Reader {
    shared: Arc<PathShared>,
    rx: broadcast::Receiver<Event>,
    backlog: VecDeque<Event>,
    guard: SessionGuard,
    video_track: Option<crate::TrackId>,
    skip_to_keyframe: bool,
    lags: u32,
    lag_window_start: Option<Instant>,
    max_lags: u32,
}

impl Reader {
    pub(crate) fn open(shared: Arc<PathShared>, guard: SessionGuard) -> Option<Reader> {
        let (rx, backlog, video_track, skip, max_lags) = {
            let mut st = shared.state.lock();
            let rx = st.subscribe()?;
            let mut backlog = VecDeque::new();
            let mut video_track = None;
            if let Some(info) = &st.info {
                video_track = info.video().map(|t| t.id);
                backlog.push_back(Event::Start(info.clone()));
                if st.gop_valid {
                    backlog.extend(st.gop.iter().cloned().map(Event::Frame));
                }
            }
            (
                rx,
                backlog,
                video_track,
                video_track.is_some() && !st.gop_valid,
                st.max_lags(),
            )
        };
        Some(Reader {
            shared,
            rx,
            backlog,
            guard,
            video_track,
            skip_to_keyframe: skip,
            lags: 0,
            lag_window_start: None,
            max_lags,
        })
    }

    pub fn path(&self) -> &str {
        &self.shared.name
    }

    pub fn stats(&self) -> &Arc<SessionStats> {
        self.guard.stats()
    }

    /// Waits for the next event. `Err(Ended)` when the stream is over; `Err(TooSlow)` when this
    /// reader fell behind too often.
    pub async fn recv(&mut self) -> Result<Event, ReadError> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                if let Some(ev) = self.filter(ev) {
                    return Ok(ev);
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    if let Some(ev) = self.filter(ev) {
                        return Ok(ev);
                    }
                }
                Err(RecvError::Lagged(n)) => self.lagged(n)?,
                Err(RecvError::Closed) => return Err(ReadError::Ended),
            }
        }
    }

    /// Returns the next event if one is ready now, for draining a batch before one write.
    pub fn try_recv(&mut self) -> Option<Result<Event, ReadError>> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                if let Some(ev) = self.filter(ev) {
                    return Some(Ok(ev));
                }
                continue;
            }
            match self.rx.try_recv() {
                Ok(ev) => {
                    if let Some(ev) = self.filter(ev) {
                        return Some(Ok(ev));
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(n)) => {
                    if let Err(e) = self.lagged(n) {
                        return Some(Err(e));
                    }
                }
                Err(TryRecvError::Closed) => return Some(Err(ReadError::Ended)),
            }
        }
    }

    fn lagged(&mut self, n: u64) -> Result<(), ReadError> {
        let stats = self.guard.stats();
        let dropped = stats.frames_dropped.fetch_add(n, Relaxed) + n;
        let now = Instant::now();
        match self.lag_window_start {
            Some(start) if now.duration_since(start) < LAG_WINDOW => self.lags += 1,
            _ => {
                self.lag_window_start = Some(now);
                self.lags = 1;
            }
        }
        if self.lags > self.max_lags {
            return Err(ReadError::TooSlow {
                lags: self.lags,
                dropped,
            });
        }
        tracing::debug!(path = %self.shared.name, session = stats.id, skipped = n, "reader fell behind; skipping to the next keyframe");
        self.skip_to_keyframe = self.video_track.is_some();
        Ok(())
    }

    fn filter(&mut self, ev: Event) -> Option<Event> {
        match &ev {
            Event::Start(info) => {
                self.video_track = info.video().map(|t| t.id);
                // Frames after a start begin with a keyframe; anything else would not decode.
                self.skip_to_keyframe = self.video_track.is_some();
                Some(ev)
            }
            Event::Frame(f) => {
                if self.skip_to_keyframe {
                    if !f.keyframe || Some(f.track) != self.video_track {
                        self.guard.stats().frames_dropped.fetch_add(1, Relaxed);
                        return None;
                    }
                    self.skip_to_keyframe = false;
                }
                self.guard.stats().frames_out.fetch_add(1, Relaxed);
                Some(ev)
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.state.lock().reader_left();
    }
}
