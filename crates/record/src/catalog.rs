//! The recording catalog: every segment file of every path with its start, duration and size,
//! kept in memory (rebuilt from the directories at start) so listing weeks of footage never
//! reopens a file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;

use crate::pattern::Pattern;
use crate::probe::probe;
use crate::Format;

/// Segments closer than this are one span in `/list`.
const CONTIGUOUS: Duration = Duration::from_millis(100);

/// One segment file.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEntry {
    pub file: PathBuf,
    pub start: SystemTime,
    pub duration: Duration,
    pub bytes: u64,
    pub format: Format,
    /// The writer closed it (a file being written, or one a crash cut, is not complete).
    pub complete: bool,
    /// Being written now.
    pub writing: bool,
}

impl SegmentEntry {
    pub fn end(&self) -> SystemTime {
        self.start + self.duration
    }
}

/// A stretch of contiguous recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub start: SystemTime,
    pub duration: Duration,
}

/// Totals of one path.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSummary {
    pub path: String,
    pub segments: usize,
    pub bytes: u64,
    pub first: Option<SystemTime>,
    pub last_end: Option<SystemTime>,
}

/// What a scan found.
#[derive(Debug, Default, Clone)]
pub struct ScanReport {
    pub segments: usize,
    /// Files a crash had left mid-fragment, cut back to their last complete fragment.
    pub repaired: usize,
    /// Files matching a pattern that could not be read.
    pub unreadable: Vec<(PathBuf, String)>,
}

#[derive(Default)]
pub struct Catalog {
    paths: RwLock<HashMap<String, BTreeMap<SystemTime, SegmentEntry>>>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or updates a segment (keyed by its start).
    pub fn upsert(&self, path: &str, entry: SegmentEntry) {
        self.paths
            .write()
            .entry(path.to_owned())
            .or_default()
            .insert(entry.start, entry);
    }

    /// Updates the segment of `path` starting at `start`, if listed.
    pub fn update(&self, path: &str, start: SystemTime, f: impl FnOnce(&mut SegmentEntry)) {
        if let Some(e) = self.paths.write().get_mut(path).and_then(|m| m.get_mut(&start)) {
            f(e);
        }
    }

    /// Forgets a segment.
    pub fn remove(&self, path: &str, start: SystemTime) -> Option<SegmentEntry> {
        let mut paths = self.paths.write();
        let m = paths.get_mut(path)?;
        let e = m.remove(&start);
        if m.is_empty() {
            paths.remove(path);
        }
        e
    }

    /// Segments of `path` overlapping `[from, to)`, oldest first.
    pub fn segments(
        &self,
        path: &str,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
    ) -> Vec<SegmentEntry> {
        self.visit(path, from, to, |it| it.cloned().collect())
    }

    /// Runs `f` over the segments of `path` overlapping `[from, to)`, oldest first, under the
    /// catalog's read lock (nothing cloned).
    fn visit<R>(
        &self,
        path: &str,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        f: impl FnOnce(&mut dyn Iterator<Item = &SegmentEntry>) -> R,
    ) -> R {
        let paths = self.paths.read();
        let Some(m) = paths.get(path) else {
            return f(&mut std::iter::empty());
        };
        // The segment starting at or before `from` may overlap it: start the range there.
        let lo = from
            .and_then(|f| m.range(..=f).next_back().map(|(k, _)| *k))
            .or(from);
        let iter: Box<dyn Iterator<Item = &SegmentEntry>> = match (lo, to) {
            (Some(lo), Some(to)) if lo < to => Box::new(m.range(lo..to).map(|(_, v)| v)),
            (Some(_), Some(_)) => Box::new(std::iter::empty()),
            (Some(lo), None) => Box::new(m.range(lo..).map(|(_, v)| v)),
            (None, Some(to)) => Box::new(m.range(..to).map(|(_, v)| v)),
            (None, None) => Box::new(m.values()),
        };
        let mut it = iter.filter(|e| from.is_none_or(|f| e.end() > f) && e.duration > Duration::ZERO);
        f(&mut it)
    }

    /// Contiguous recording of `path` within `[from, to)`, clipped to it.
    pub fn spans(&self, path: &str, from: Option<SystemTime>, to: Option<SystemTime>) -> Vec<Span> {
        self.visit(path, from, to, |it| {
            let mut out: Vec<Span> = Vec::new();
            for e in it {
                let start = from.map_or(e.start, |f| e.start.max(f));
                let end = to.map_or(e.end(), |t| e.end().min(t));
                let Ok(d) = end.duration_since(start) else {
                    continue;
                };
                match out.last_mut() {
                    Some(last)
                        if start
                            .duration_since(last.start + last.duration)
                            .is_ok_and(|gap| gap <= CONTIGUOUS)
                            || start <= last.start + last.duration =>
                    {
                        let new_end = (start + d).max(last.start + last.duration);
                        last.duration = new_end.duration_since(last.start).unwrap_or_default();
                    }
                    _ => out.push(Span { start, duration: d }),
                }
            }
            out
        })
    }

    /// Every recorded path with its totals.
    pub fn summaries(&self) -> Vec<PathSummary> {
        let paths = self.paths.read();
        let mut v: Vec<PathSummary> = paths
            .iter()
            .map(|(p, m)| PathSummary {
                path: p.clone(),
                segments: m.len(),
                bytes: m.values().map(|e| e.bytes).sum(),
                first: m.values().next().map(|e| e.start),
                last_end: m.values().map(|e| e.end()).max(),
            })
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    pub fn summary(&self, path: &str) -> Option<PathSummary> {
        self.summaries().into_iter().find(|s| s.path == path)
    }

    /// Rebuilds the catalog from the files under the patterns' roots (no symlink followed),
    /// repairing files a crash cut mid-fragment: they are truncated to their last complete
    /// fragment and their header gets the duration, so every player reads them as whole files.
    pub fn scan(&self, patterns: &[Pattern]) -> ScanReport {
        let mut report = ScanReport::default();
        let mut seen = HashSet::new();
        for p in patterns {
            let root = p.root();
            if !seen.insert((root.clone(), p.as_str().to_owned())) {
                continue;
            }
            for entry in walkdir::WalkDir::new(&root)
                .follow_links(false)
                .into_iter()
                .filter_map(Result::ok)
            {
                if !entry.file_type().is_file() {
                    continue;
                }
                let file = entry.path();
                let Some((path, start, format)) = p.parse(file) else {
                    continue;
                };
                match read_entry(file, start, format) {
                    Ok((e, repaired)) => {
                        report.segments += 1;
                        report.repaired += repaired as usize;
                        self.upsert(&path, e);
                    }
                    Err(err) => report.unreadable.push((file.to_owned(), err)),
                }
            }
        }
        report
    }
}

/// Reads one file for the catalog, repairing it when a crash left it incomplete.
fn read_entry(file: &Path, start: SystemTime, format: Format) -> Result<(SegmentEntry, bool), String> {
    let mut f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let info = probe(&mut f, format, false).map_err(|e| e.to_string())?;
    let mut repaired = false;
    // Only a file whose header lacks its duration was cut by a crash; its fragments were walked,
    // so `good_len` is the end of its last whole fragment. A complete file was read for its
    // header only and is never touched.
    if format == Format::Fmp4 && !info.complete && info.good_len < info.file_len {
        repaired = repair(file, info.good_len, info.mehd_at, info.duration).is_ok();
    } else if format == Format::Fmp4 && !info.complete {
        // Whole fragments only, but no duration in the header yet: write it.
        repaired = repair(file, info.file_len, info.mehd_at, info.duration).is_ok();
    }
    Ok((
        SegmentEntry {
            file: file.to_owned(),
            start,
            duration: info.duration(),
            bytes: if info.complete {
                info.file_len
            } else {
                info.good_len
            },
            format,
            complete: true,
            writing: false,
        },
        repaired,
    ))
}

/// Cuts a file to `len` bytes and writes `duration` into its `mehd`.
pub fn repair(file: &Path, len: u64, mehd_at: Option<u64>, duration: f64) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(file)?;
    f.set_len(len)?;
    if let Some(at) = mehd_at {
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&((duration * 1000.0).round() as u64).max(1).to_be_bytes())?;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn seg(start_s: u64, dur_s: u64) -> SegmentEntry {
        SegmentEntry {
            file: PathBuf::from(format!("/r/{start_s}.mp4")),
            start: UNIX_EPOCH + Duration::from_secs(start_s),
            duration: Duration::from_secs(dur_s),
            bytes: 10,
            format: Format::Fmp4,
            complete: true,
            writing: false,
        }
    }

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    /// A restart's scan: a complete file is listed and never touched; a file a crash cut
    /// mid-fragment is cut back to its last whole fragment and gets its duration.
    #[test]
    fn scan_repairs_only_what_a_crash_cut() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = Pattern::new(&format!("{}/%path/%s-%f", dir.path().display()), false).unwrap();
        let (bytes, mehd) = crate::probe::tests::recording(3);
        std::fs::create_dir_all(dir.path().join("cam")).unwrap();
        let mut done = bytes.clone();
        done[mehd..mehd + 8].copy_from_slice(&3000u64.to_be_bytes());
        let complete = dir.path().join("cam/1700000000-000000.mp4");
        std::fs::write(&complete, &done).unwrap();
        let cut = dir.path().join("cam/1700000100-000000.mp4");
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let c = Catalog::new();
        let r = c.scan(std::slice::from_ref(&pattern));
        assert_eq!((r.segments, r.repaired), (2, 1), "{r:?}");
        assert_eq!(
            std::fs::read(&complete).unwrap(),
            done,
            "a complete file was modified"
        );
        let segs = c.segments("cam", None, None);
        assert_eq!(segs[0].bytes, done.len() as u64);
        assert_eq!(segs[0].duration, Duration::from_secs(3));
        // The cut file lost its torn last fragment, kept two, and says so in its header.
        assert!(
            (segs[1].duration.as_secs_f64() - 2.0).abs() < 0.05,
            "{:?}",
            segs[1].duration
        );
        let repaired = std::fs::read(&cut).unwrap();
        assert_eq!(segs[1].bytes, repaired.len() as u64);
        assert!(u64::from_be_bytes(repaired[mehd..mehd + 8].try_into().unwrap()) > 0);
        // A second scan changes nothing more.
        let again = Catalog::new().scan(&[pattern]);
        assert_eq!(again.repaired, 0);
        assert_eq!(std::fs::read(&cut).unwrap(), repaired);
    }

    #[test]
    fn spans_merge_contiguous_segments_and_clip() {
        let c = Catalog::new();
        for (s, d) in [(100, 10), (110, 10), (120, 5), (200, 10)] {
            c.upsert("a", seg(s, d));
        }
        let all = c.spans("a", None, None);
        assert_eq!(
            all,
            vec![
                Span {
                    start: t(100),
                    duration: Duration::from_secs(25)
                },
                Span {
                    start: t(200),
                    duration: Duration::from_secs(10)
                },
            ]
        );
        let clipped = c.spans("a", Some(t(105)), Some(t(205)));
        assert_eq!(
            clipped,
            vec![
                Span {
                    start: t(105),
                    duration: Duration::from_secs(20)
                },
                Span {
                    start: t(200),
                    duration: Duration::from_secs(5)
                },
            ]
        );
        assert!(c.spans("a", Some(t(300)), None).is_empty());
        assert!(c.spans("b", None, None).is_empty());
        assert_eq!(c.segments("a", Some(t(115)), Some(t(121))).len(), 2);
    }

    #[test]
    fn a_month_of_minute_segments_lists_as_one_span() {
        let c = Catalog::new();
        for i in 0..43_200u64 {
            c.upsert("cam", seg(i * 60, 60));
        }
        let spans = c.spans("cam", None, None);
        let day = c.spans("cam", Some(t(86_400 * 10)), Some(t(86_400 * 11)));
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].duration, Duration::from_secs(43_200 * 60));
        assert_eq!(day[0].duration, Duration::from_secs(86_400));
    }
}
