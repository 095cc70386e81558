//! Readers: a bounded cursor over a path's frames that starts at the latest keyframe.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::path::{PathShared, DERIVED_TRACK_BASE};
use crate::stats::{SessionGuard, SessionState, SessionStats};
use crate::{CodecId, Frame, MediaKind, ReadError, Track, TrackId};

/// Which tracks a reader takes. Each output takes one video and one audio track by rule: the
/// audio codec it carries best, derived from the publisher's when needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Every track the publisher sends, as they are (the recorder). No derived track.
    Original,
    /// The first video track, plus the publisher's audio if its codec is in `accept`, else the
    /// audio derived in `convert_to` (when set and a transformer can make it), else no audio.
    Audio {
        accept: &'static [CodecId],
        convert_to: Option<CodecId>,
    },
}

impl Select {
    /// For outputs that carry AAC best (RTMP, HTTP-FLV, HLS): AAC or MP3 as sent, else AAC.
    pub const AAC: Select = Select::Audio {
        accept: &[CodecId::Aac, CodecId::Mp3],
        convert_to: Some(CodecId::Aac),
    };
    /// For MPEG-TS over SRT: what TS carries as sent (AAC, MP3, AC-3, Opus), else AAC.
    pub const TS: Select = Select::Audio {
        accept: &[CodecId::Aac, CodecId::Mp3, CodecId::Ac3, CodecId::Opus],
        convert_to: Some(CodecId::Aac),
    };
    /// For WebRTC: Opus or G.711 as sent, else Opus.
    pub const OPUS: Select = Select::Audio {
        accept: &[CodecId::Opus, CodecId::Pcma, CodecId::Pcmu],
        convert_to: Some(CodecId::Opus),
    };
}

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

/// Keys of readers in their path's [`Pacer`](crate::pace::Pacer).
static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One reader of a path. Dropping it leaves the path.
pub struct Reader {
    shared: Arc<PathShared>,
    rx: broadcast::Receiver<Event>,
    backlog: VecDeque<Event>,
    guard: SessionGuard,
    cancel: CancellationToken,
    select: Select,
    /// With [`Select::Audio`]: the tracks this reader takes (video, audio).
    taken: [Option<TrackId>; 2],
    /// The derived track this reader holds (its codec), if any.
    derived: Option<(CodecId, Track)>,
    video_track: Option<crate::TrackId>,
    skip_to_keyframe: bool,
    lags: u32,
    lag_window_start: Option<Instant>,
    max_lags: u32,
    /// This reader in the path's pacer.
    key: u64,
}

impl Reader {
    pub(crate) fn open(shared: Arc<PathShared>, guard: SessionGuard, select: Select) -> Option<Reader> {
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
        let cancel = guard.stats().cancel_token().clone();
        Some(Reader {
            shared,
            rx,
            backlog,
            guard,
            cancel,
            select,
            taken: [None; 2],
            derived: None,
            video_track,
            skip_to_keyframe: skip,
            lags: 0,
            lag_window_start: None,
            max_lags,
            key: NEXT_KEY.fetch_add(1, Relaxed),
        })
    }

    pub fn path(&self) -> &str {
        &self.shared.name
    }

    pub fn stats(&self) -> &Arc<SessionStats> {
        self.guard.stats()
    }

    /// Resolves when the session is asked to end (kick, shutdown).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Asks whoever publishes on the path now for a keyframe (a WebRTC publisher as PLI/FIR,
    /// an encoder); made while nobody publishes, it reaches the next publisher.
    pub fn request_keyframe(&self) {
        self.guard.stats().keyframe_requests.fetch_add(1, Relaxed);
        self.shared.request_keyframe();
    }

    /// How many events the path queues for each reader (`reader_queue`): a reader that sleeps
    /// between batches must wake before that many arrive.
    pub fn queue_frames(&self) -> usize {
        self.shared.state.lock().queue_frames()
    }

    /// Whether a publisher is connected to the path now (false during the grace period).
    pub fn publisher_present(&self) -> bool {
        self.shared.state.lock().has_publisher()
    }

    fn closed(&self) -> ReadError {
        let reason = self.guard.stats().reason();
        ReadError::Closed {
            reason: if reason.is_empty() {
                "asked to end".to_owned()
            } else {
                reason
            },
        }
    }

    /// Waits for the next event. `Err(Ended)` when the stream is over; `Err(TooSlow)` when this
    /// reader fell behind too often; `Err(Closed)` when the session was kicked or the server
    /// shuts down.
    pub async fn recv(&mut self) -> Result<Event, ReadError> {
        loop {
            if self.cancel.is_cancelled() {
                return Err(self.closed());
            }
            if let Some(ev) = self.pop_backlog() {
                if let Some(ev) = self.filter(ev) {
                    return Ok(ev);
                }
                continue;
            }
            // What is queued already needs no wait: registering with the cancel token (a lock)
            // is only worth it when the reader is about to sleep.
            let r = match self.rx.try_recv() {
                Ok(ev) => {
                    // What `recv` would do: yield now and then, however full the queue.
                    tokio::task::coop::consume_budget().await;
                    Ok(ev)
                }
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => match self.wait().await {
                    Some(r) => r,
                    None => return Err(self.closed()),
                },
            };
            match r {
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

    /// Sleeps until the next event, or `None` when the cancel token fires.
    async fn wait(&mut self) -> Option<Result<Event, RecvError>> {
        let cancel = self.cancel.clone();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            r = self.rx.recv() => Some(r),
        }
    }

    /// Sleeps until the publisher writes at or after `at` (that write wakes this reader: no
    /// timer of its own wakes the thread), the stream ends or its publisher leaves, the session
    /// is asked to end, or at the latest until `latest` (a publisher gone quiet). For readers
    /// that take frames in batches: what is written meanwhile waits in the path's queue, so
    /// `at` must come before the queue can fill. Returns at once when `at` has passed.
    pub async fn wait_paced(&self, at: Instant, latest: Instant) {
        if Instant::now() >= at {
            return;
        }
        /// Takes the reader out of the pacer however the wait ends, unless a write took it.
        struct Registered<'a>(&'a PathShared, u64, AtomicBool);
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                if !self.2.load(Relaxed) {
                    self.0.state.lock().pacer.remove(self.1);
                }
            }
        }
        let entry = Registered(&self.shared, self.key, AtomicBool::new(false));
        let mut registered = false;
        let woken = std::future::poll_fn(|cx| {
            let mut st = self.shared.state.lock();
            if st.ended() || (registered && !st.pacer.is_waiting(self.key)) {
                entry.2.store(true, Relaxed);
                return std::task::Poll::Ready(());
            }
            st.pacer.register(self.key, at, cx.waker());
            registered = true;
            std::task::Poll::Pending
        });
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => {}
            _ = woken => {}
            _ = tokio::time::sleep_until(latest) => {}
        }
    }

    /// Returns the next event if one is ready now, for draining a batch before one write.
    pub fn try_recv(&mut self) -> Option<Result<Event, ReadError>> {
        if self.cancel.is_cancelled() {
            return Some(Err(self.closed()));
        }
        loop {
            if let Some(ev) = self.pop_backlog() {
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

    /// The next event of the GOP handed over at open. The deque's room (a GOP of events) is
    /// released once it is empty: a thousand viewers would otherwise each keep it for good.
    fn pop_backlog(&mut self) -> Option<Event> {
        let ev = self.backlog.pop_front()?;
        if self.backlog.is_empty() {
            self.backlog = VecDeque::new();
        }
        Some(ev)
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

    /// This reader's view of a new stream: the tracks its [`Select`] takes, deriving audio if needed.
    fn view(&mut self, info: Arc<StreamInfo>) -> Arc<StreamInfo> {
        let Select::Audio { accept, convert_to } = self.select else {
            return info;
        };
        let video = info.video().cloned();
        let mut audio = None;
        let mut wants_derived = None;
        if let Some(a) = info.audio() {
            if accept.contains(&a.codec) {
                audio = Some(a.clone());
            } else if let Some(to) = convert_to {
                wants_derived = Some((a.clone(), to));
            }
        }
        match (&self.derived, &wants_derived) {
            (Some((held, track)), Some((_, to))) if held == to => audio = Some(track.clone()),
            _ => {
                if let Some((held, _)) = self.derived.take() {
                    self.shared.release_derived(held);
                }
                if let Some((from, to)) = wants_derived {
                    if let Some(track) = self.shared.acquire_derived(&from, to) {
                        self.derived = Some((to, track.clone()));
                        audio = Some(track);
                    } else {
                        tracing::info!(path = %self.shared.name, session = self.guard.stats().id,
                            "{} audio is not carried by this reader and cannot be converted to {}; it gets no audio",
                            from.codec, to);
                    }
                }
            }
        }
        self.taken = [video.as_ref().map(|t| t.id), audio.as_ref().map(|t| t.id)];
        let same = info.tracks.len() == video.is_some() as usize + audio.is_some() as usize
            && audio.as_ref().is_none_or(|a| a.id < DERIVED_TRACK_BASE);
        if same {
            return info;
        }
        Arc::new(StreamInfo {
            tracks: video.into_iter().chain(audio).collect(),
            epoch: info.epoch,
            discontinuity: info.discontinuity,
            started_at: info.started_at,
        })
    }

    fn takes(&self, track: TrackId) -> bool {
        match self.select {
            Select::Original => track < DERIVED_TRACK_BASE,
            Select::Audio { .. } => self.taken.contains(&Some(track)),
        }
    }

    fn filter(&mut self, ev: Event) -> Option<Event> {
        match ev {
            Event::Start(info) => {
                let info = self.view(info);
                self.video_track = info.video().map(|t| t.id);
                // Frames after a start begin with a keyframe; anything else would not decode.
                self.skip_to_keyframe = self.video_track.is_some();
                self.guard.stats().set_state(SessionState::Live);
                Some(Event::Start(info))
            }
            Event::Frame(f) => {
                if !self.takes(f.track) {
                    return None;
                }
                if self.skip_to_keyframe {
                    if !f.keyframe || Some(f.track) != self.video_track {
                        self.guard.stats().frames_dropped.fetch_add(1, Relaxed);
                        return None;
                    }
                    self.skip_to_keyframe = false;
                }
                self.guard.stats().frames_out.fetch_add(1, Relaxed);
                Some(Event::Frame(f))
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some((codec, _)) = self.derived.take() {
            self.shared.release_derived(codec);
        }
        self.shared.state.lock().reader_left();
    }
}
