//! Recording: the recorder path output (the publisher's own tracks into fMP4 or MPEG-TS
//! segment files, readable at every moment), the catalog of what is on disk, retention, and
//! reading recordings back for playback and export.
//!
//! Files are written fragment by fragment by a writer thread per recording path (a slow or
//! failing disk never blocks the async runtime or the live path); the header goes first, each
//! fragment is appended whole, and closing a segment only patches its duration into the header
//! and fsyncs. A crash leaves at worst a fragment cut short, which the next start's catalog scan
//! cuts off.

pub mod catalog;
pub mod export;
pub mod pattern;
pub mod probe;
mod recorder;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sluice_media::events::EventBus;
use sluice_media::events::ServerEvent;

pub use catalog::{Catalog, PathSummary, ScanReport, SegmentEntry, Span};
pub use pattern::Pattern;
pub use sluice_container::segmenter::Format;

/// File name extension of a format, with its dot.
pub fn extension(format: Format) -> &'static str {
    match format {
        Format::Fmp4 => ".mp4",
        Format::MpegTs => ".ts",
    }
}

/// How one path is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    pub format: Format,
    pub pattern: Pattern,
    /// A new file at the first keyframe past this.
    pub segment_duration: Duration,
    /// A fragment is written at least this often.
    pub part_duration: Duration,
    /// Delete segments older than this (`None`: keep).
    pub max_age: Option<Duration>,
    /// Keep the path's recordings under this many bytes, oldest deleted first (`None`: no cap).
    pub max_bytes: Option<u64>,
    /// After a write error, try again this long after it.
    pub retry_after: Duration,
}

/// What a recorder is doing now, for the API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderStatus {
    /// `recording`, `waiting` (for a keyframe or a stream), `error` (retrying).
    pub state: &'static str,
    pub file: Option<PathBuf>,
    /// Bytes written by this recorder since it started.
    pub bytes_written: u64,
    pub segments_completed: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Fragments dropped while the disk failed or fell behind.
    pub dropped_fragments: u64,
}

impl Default for RecorderStatus {
    fn default() -> Self {
        RecorderStatus {
            state: "waiting",
            file: None,
            bytes_written: 0,
            segments_completed: 0,
            last_error: None,
            last_error_at: None,
            dropped_fragments: 0,
        }
    }
}

/// Settings of a path now (the configuration may change while it records).
pub type Settings = Arc<dyn Fn(&str) -> Option<RecordConfig> + Send + Sync>;

/// Every recording of the server: the catalog, the running recorders' status, retention.
pub struct Recordings {
    catalog: Catalog,
    events: Arc<EventBus>,
    settings: Settings,
    status: Mutex<HashMap<String, Arc<Mutex<RecorderStatus>>>>,
    /// Writer threads running (each completes its file before it ends).
    writers: std::sync::atomic::AtomicUsize,
}

impl Recordings {
    pub fn new(events: Arc<EventBus>, settings: Settings) -> Arc<Self> {
        Arc::new(Recordings {
            catalog: Catalog::new(),
            events,
            settings,
            status: Mutex::new(HashMap::new()),
            writers: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The status of `path`'s recorder, while one runs.
    pub fn status(&self, path: &str) -> Option<RecorderStatus> {
        self.status.lock().get(path).map(|s| s.lock().clone())
    }

    /// Waits, at most `timeout`, for every writer to complete its file (at shutdown, after the
    /// recorders' sessions were ended); returns how many are still running.
    pub async fn wait_writers(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.writers.load(std::sync::atomic::Ordering::Acquire);
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every running recorder's status, by path.
    pub fn statuses(&self) -> Vec<(String, RecorderStatus)> {
        let mut v: Vec<(String, RecorderStatus)> = self
            .status
            .lock()
            .iter()
            .map(|(p, s)| (p.clone(), s.lock().clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The settings of `path` now.
    pub fn settings(&self, path: &str) -> Option<RecordConfig> {
        (self.settings)(path)
    }

    /// Rebuilds the catalog from disk (at start): files of these patterns.
    pub fn scan(&self, patterns: &[Pattern]) -> ScanReport {
        let r = self.catalog.scan(patterns);
        for (file, e) in &r.unreadable {
            tracing::warn!(file = %file.display(), "recording not readable, left out of the catalog: {e}");
        }
        if r.repaired > 0 {
            tracing::info!(
                "{} recording(s) cut short by a crash were repaired up to their last complete fragment",
                r.repaired
            );
        }
        r
    }

    /// Applies retention to `path`: segments older than `max_age`, then the oldest ones while the
    /// path holds more than `max_bytes`. A segment being written is never deleted.
    pub fn sweep(&self, path: &str) -> usize {
        let Some(cfg) = self.settings(path) else {
            return 0;
        };
        let now = SystemTime::now();
        let segs = self.catalog.segments(path, None, None);
        let mut total: u64 = segs.iter().map(|s| s.bytes).sum();
        let mut deleted = 0;
        for s in &segs {
            if s.writing {
                continue;
            }
            let too_old = cfg
                .max_age
                .is_some_and(|age| now.duration_since(s.end()).is_ok_and(|d| d > age));
            let too_big = cfg.max_bytes.is_some_and(|cap| total > cap);
            if !(too_old || too_big) {
                continue;
            }
            let reason = if too_old {
                "older than max_age"
            } else {
                "over max_size"
            };
            if self.delete(path, s, reason).is_ok() {
                total = total.saturating_sub(s.bytes);
                deleted += 1;
            }
        }
        deleted
    }

    /// Applies retention to every recorded path.
    pub fn sweep_all(&self) -> usize {
        self.catalog.summaries().iter().map(|s| self.sweep(&s.path)).sum()
    }

    /// Deletes one segment (its file and its catalog entry) with an event.
    pub fn delete(&self, path: &str, seg: &SegmentEntry, reason: &str) -> std::io::Result<()> {
        if seg.writing {
            return Err(std::io::Error::other("the segment is being written"));
        }
        match std::fs::remove_file(&seg.file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(%path, file = %seg.file.display(), "cannot delete recording: {e}");
                return Err(e);
            }
        }
        self.catalog.remove(path, seg.start);
        tracing::info!(%path, file = %seg.file.display(), "recording segment deleted ({reason})");
        self.events.emit(ServerEvent::Recording {
            path: path.into(),
            state: "deleted",
            file: seg.file.display().to_string(),
            duration: seg.duration.as_secs_f64(),
            bytes: seg.bytes,
            detail: reason.to_owned(),
        });
        Ok(())
    }

    /// Deletes the segments of `path` that lie wholly inside `[from, to)`; returns how many.
    pub fn delete_range(&self, path: &str, from: SystemTime, to: SystemTime) -> usize {
        self.catalog
            .segments(path, Some(from), Some(to))
            .into_iter()
            .filter(|s| s.start >= from && s.end() <= to)
            .filter(|s| self.delete(path, s, "deleted through the API").is_ok())
            .count()
    }

    fn status_of(&self, path: &str) -> Arc<Mutex<RecorderStatus>> {
        let s = Arc::new(Mutex::new(RecorderStatus::default()));
        self.status.lock().insert(path.to_owned(), s.clone());
        s
    }

    fn ended(&self, path: &str, status: &Arc<Mutex<RecorderStatus>>) {
        let mut map = self.status.lock();
        if map.get(path).is_some_and(|s| Arc::ptr_eq(s, status)) {
            map.remove(path);
        }
    }

    fn emit(&self, ev: ServerEvent) {
        self.events.emit(ev);
    }
}

pub use recorder::spawn;

/// Parses an RFC 3339 time (`2026-12-01T10:00:00Z`, `...+01:00`, fractions allowed).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|_| format!("{s:?} is not an RFC 3339 time (like 2026-12-01T10:00:00Z)"))?;
    let micros = ts.as_microsecond();
    if micros < 0 {
        return Err(format!("{s:?} is before 1970"));
    }
    Ok(SystemTime::UNIX_EPOCH + Duration::from_micros(micros as u64))
}

/// Formats a time as RFC 3339 in UTC with microseconds (`2026-12-01T10:00:00.123456Z`).
pub fn format_time(t: SystemTime) -> String {
    let micros = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    let ts = jiff::Timestamp::from_microsecond(micros).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{ts:.6}")
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = parse_time("2026-12-01T10:00:00.5+01:00").unwrap();
        assert_eq!(format_time(t), "2026-12-01T09:00:00.500000Z");
        assert_eq!(parse_time(&format_time(t)).unwrap(), t);
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "1960-01-01T00:00:00Z"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
