//! The recorder output of one path: an async task that reads the path (the publisher's own
//! tracks), cuts segments and fragments with the shared segmenter, and hands them to a writer
//! thread that owns the files. The task never waits on the disk: when the writer falls behind
//! or fails, fragments are dropped, the file is closed at its last whole fragment, and a new
//! file starts at a keyframe once writing works again.
//!
//! Files are written with direct I/O where the filesystem allows it, without passing through
//! the page cache (the kernel's buffered write, page allocation and copy, costs about ten times
//! the CPU): an fMP4 fragment as one write padded to a block boundary with a `free` box, an
//! MPEG-TS fragment's whole blocks with the partial ones through the ordinary descriptor (see
//! [`Direct`]); every byte written is readable at once. Where direct I/O is refused (tmpfs,
//! some network filesystems), everything goes through the page cache.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use sluice_container::segmenter::{Format, Segmenter, SegmenterConfig, SegmenterOutput};
use sluice_media::events::ServerEvent;
use sluice_media::{Event, ReadError, Reader, StreamInfo, Track};
use tokio::sync::mpsc;

use crate::catalog::SegmentEntry;
use crate::probe::is_disk_error;
use crate::{RecordConfig, RecorderStatus, Recordings};

/// Fragments the writer may have queued (about this many seconds of media with 1 s parts);
/// past it the disk is too slow and the file is closed rather than memory growing.
const QUEUE: usize = 32;

/// The longest the reading task sleeps between batches of frames (the path's queue holds them
/// meanwhile; the publisher's first write after the nap wakes it); see [`nap`].
const COALESCE: Duration = Duration::from_millis(250);

/// How long the reading task of a path sleeps between batches of frames: at most a quarter of a
/// part (a fragment reaches the disk at most that late), [`COALESCE`], and the time a quarter of
/// the path's queue takes to fill at 240 events a second (60 fps video and audio, with room
/// to spare); none for queues under 64 frames. Fewer wake-ups is most of what a recorder costs
/// the runtime besides the copy of its bytes.
fn nap(queue_frames: usize, part: Duration) -> Option<Duration> {
    if queue_frames < 64 {
        return None;
    }
    let fill = Duration::from_millis(queue_frames as u64 * 1000 / 4 / 240);
    Some(fill.min(part / 4).min(COALESCE))
}

enum Op {
    Open {
        file: PathBuf,
        start: SystemTime,
        /// fMP4: the init segment and the offset of its `mehd` duration.
        init: Option<(Bytes, usize)>,
        format: Format,
    },
    /// A fragment: these bytes one after the other.
    Write {
        pieces: Vec<Bytes>,
        duration: Duration,
    },
    Close,
}

/// Starts recording `reader`'s path with the settings it has now.
pub fn spawn(recordings: &Arc<Recordings>, reader: Reader, rt: &tokio::runtime::Handle) {
    let path = reader.path().to_owned();
    let Some(cfg) = recordings.settings(&path) else {
        return;
    };
    let status = recordings.status_of(&path);
    let failed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = Writer {
        recordings: recordings.clone(),
        path: path.clone(),
        status: status.clone(),
        failed: failed.clone(),
        open: None,
        gathered: Vec::new(),
        scratch: Scratch::default(),
    };
    let count = recordings.clone();
    count.writers.fetch_add(1, Ordering::AcqRel);
    let thread = std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            writer.run(rx);
            count.writers.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = thread {
        recordings.writers.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(%path, "recording cannot start: {e}");
        return;
    }
    let mut task = Task {
        recordings: recordings.clone(),
        path,
        cfg: cfg.clone(),
        segmenter: Segmenter::new(segmenter_config(&cfg)),
        current: None,
        init: None,
        next_init: None,
        tx,
        open: false,
        failed,
        retry_at: None,
        status,
    };
    rt.spawn(async move {
        let mut reader = reader;
        let mut batch = Vec::new();
        let nap = nap(reader.queue_frames(), task.cfg.part_duration);
        'read: loop {
            // Frames are taken in batches, a nap apart: a few wake-ups a second per path
            // instead of one per frame (fragments are a second long anyway).
            batch.push(reader.recv().await);
            // Up to the first error (an ended reader keeps answering it).
            while batch.last().is_some_and(|e| e.is_ok()) {
                match reader.try_recv() {
                    Some(ev) => batch.push(ev),
                    None => break,
                }
            }
            // Each frame's wall-clock time: now, less how far it is behind the newest frame.
            let now = SystemTime::now();
            let newest = batch
                .iter()
                .filter_map(|e| match e {
                    Ok(Event::Frame(f)) => Some(f.dts),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            for ev in batch.drain(..) {
                match ev {
                    Ok(Event::Start(info)) => task.start(&info),
                    Ok(Event::Frame(f)) => {
                        let behind = (newest - f.dts).max(0) as f64 / sluice_media::CLOCK_RATE as f64;
                        let at = now
                            .checked_sub(Duration::from_secs_f64(behind.min(1.0)))
                            .unwrap_or(now);
                        task.segmenter.push_frame(&f, at);
                        task.drain();
                    }
                    Err(ReadError::Ended) | Err(ReadError::NoStream { .. }) => break 'read,
                    Err(e) => {
                        tracing::info!(path = %task.path, "recording stopped: {e}");
                        break 'read;
                    }
                }
            }
            if let Some(nap) = nap {
                // Woken by the publisher's first write after the nap, not by a timer.
                let now = tokio::time::Instant::now();
                reader.wait_paced(now + nap, now + 2 * nap).await;
            }
        }
        task.segmenter.finish();
        task.drain();
        task.close();
        task.recordings.ended(&task.path, &task.status);
        tracing::debug!(path = %task.path, "recorder ended");
    });
}

fn segmenter_config(cfg: &RecordConfig) -> SegmenterConfig {
    let mut sc = SegmenterConfig::new(cfg.format, cfg.segment_duration).with_parts(cfg.part_duration);
    sc.segment_bytes = false;
    sc.zero_based = true;
    // Segments are written part by part: their size needs no cap; a stream without keyframes
    // still gets a new file every ten segment durations.
    sc.max_bytes = usize::MAX;
    // The writer copies the samples once, into its direct-I/O blocks: none before.
    sc.gather = true;
    sc
}

struct Task {
    recordings: Arc<Recordings>,
    path: String,
    cfg: RecordConfig,
    segmenter: Segmenter,
    /// Epoch and tracks being recorded.
    current: Option<(u64, Vec<Track>)>,
    /// fMP4: the init of the files of the current stream, with its `mehd` offset.
    init: Option<(Bytes, usize)>,
    next_init: Option<(Bytes, usize)>,
    tx: mpsc::Sender<Op>,
    /// A file is open in the writer.
    open: bool,
    failed: Arc<AtomicBool>,
    /// After a failure: when to try again.
    retry_at: Option<Instant>,
    status: Arc<Mutex<RecorderStatus>>,
}

impl Task {
    /// A stream (re)starts: a new segment with the publisher's own tracks. The same stream
    /// announced again (a derived track came or went) changes nothing.
    fn start(&mut self, info: &StreamInfo) {
        let tracks: Vec<Track> = info
            .tracks
            .iter()
            .filter(|t| t.id < sluice_media::DERIVED_TRACK_BASE)
            .cloned()
            .collect();
        if !info.discontinuity
            && self
                .current
                .as_ref()
                .is_some_and(|(epoch, t)| *epoch == info.epoch && *t == tracks)
        {
            return;
        }
        // The file init of these tracks, taken when the segmenter announces their stream (after
        // what the previous stream left is output).
        self.next_init = match self.cfg.format {
            Format::Fmp4 => sluice_container::fmp4::Fmp4Writer::new(&tracks)
                .ok()
                .map(|w| w.file_init()),
            Format::MpegTs => None,
        };
        if let Err(e) = self.segmenter.start(&tracks) {
            tracing::warn!(path = %self.path, "this stream cannot be recorded: {e}");
        }
        self.drain();
        self.current = Some((info.epoch, tracks));
    }

    fn drain(&mut self) {
        while let Some(out) = self.segmenter.poll_output() {
            match out {
                SegmenterOutput::Init(_) => self.init = self.next_init.take(),
                SegmenterOutput::Part(p) => {
                    if self.failed.swap(false, Ordering::AcqRel) {
                        // The writer gave up on its file: try again after a while, at a keyframe.
                        self.open = false;
                        self.retry_at = Some(Instant::now() + self.cfg.retry_after);
                    }
                    if let Some(at) = self.retry_at {
                        if Instant::now() < at {
                            self.status.lock().dropped_fragments += 1;
                            continue;
                        }
                        self.retry_at = None;
                        self.segmenter.cut_at_next_keyframe();
                    }
                    if p.part == 0 {
                        self.close();
                        if self.retry_pending() {
                            continue;
                        }
                        let file = self
                            .cfg
                            .pattern
                            .render(&self.path, p.program_date_time, self.cfg.format);
                        let op = Op::Open {
                            file,
                            start: p.program_date_time,
                            init: self.init.clone(),
                            format: self.cfg.format,
                        };
                        if self.send(op) {
                            self.open = true;
                        }
                    }
                    if !self.open {
                        self.status.lock().dropped_fragments += 1;
                        continue;
                    }
                    let duration = Duration::from_secs_f64(p.duration().max(0.0));
                    let mut pieces = Vec::with_capacity(1 + p.media.len());
                    pieces.push(p.bytes);
                    pieces.extend(p.media);
                    if !self.send(Op::Write { pieces, duration }) {
                        self.open = false;
                    }
                }
                SegmenterOutput::Segment(_) => self.close(),
            }
        }
    }

    fn retry_pending(&self) -> bool {
        self.retry_at.is_some()
    }

    fn close(&mut self) {
        if self.open {
            self.open = false;
            let _ = self.send(Op::Close);
        }
    }

    /// Hands an operation to the writer; false when the writer is behind by a full queue (the
    /// disk is too slow): the file is then given up like a failed one.
    fn send(&mut self, op: Op) -> bool {
        match self.tx.try_send(op) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let msg = "the disk does not keep up: fragments dropped, a new file starts when it does";
                let mut st = self.status.lock();
                if st.state != "error" {
                    tracing::warn!(path = %self.path, "recording: {msg}");
                    self.recordings.emit(ServerEvent::Recording {
                        path: self.path.as_str().into(),
                        state: "error",
                        file: st
                            .file
                            .as_ref()
                            .map(|f| f.display().to_string())
                            .unwrap_or_default(),
                        duration: 0.0,
                        bytes: 0,
                        detail: msg.into(),
                    });
                }
                st.state = "error";
                st.last_error = Some(msg.into());
                st.last_error_at = Some(SystemTime::now());
                st.dropped_fragments += 1;
                drop(st);
                self.open = false;
                self.retry_at = Some(Instant::now() + self.cfg.retry_after);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The file a segment goes to, refused if the path would lead it out of the pattern's root.
fn safe_file(file: &Path) -> io::Result<()> {
    if file.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the recording file name would leave the recording directory",
        ));
    }
    Ok(())
}

/// Direct I/O writes whole blocks of this size, at offsets and from addresses aligned to it
/// (4 KiB: the largest logical block size in common use).
const BLOCK: usize = 4096;

/// Direct I/O goes through a buffer of this many aligned bytes per writer: a fragment larger
/// than it is written in several calls. Fixed, so that a writer's memory never grows with the
/// bitrate; large enough that a second of 8 Mb/s is one write (each direct write waits for
/// the device: fewer of them is less of the writer's CPU).
const CHUNK: usize = 1024 * 1024;

/// A writer's aligned buffer for direct I/O, allocated at its first use and kept across files.
#[derive(Default)]
struct Scratch(Vec<u8>);

impl Scratch {
    /// `CHUNK` bytes starting at a `BLOCK` boundary.
    fn blocks(&mut self) -> &mut [u8] {
        if self.0.is_empty() {
            self.0 = vec![0; CHUNK + BLOCK];
        }
        let off = self.0.as_ptr().align_offset(BLOCK);
        &mut self.0[off..off + CHUNK]
    }
}

/// The direct-I/O side of an open file: whole blocks go through `f`, opened with `O_DIRECT`;
/// the partial block after them (`tail`, starting at `tail_at`) is kept here too.
///
/// fMP4 (`padded`): each fragment is one direct write from the start of that partial block
/// (its bytes again, then the fragment's) to the next block boundary, the gap filled by a
/// `free` box that the next fragment's write overwrites; the file is cut to its exact length
/// when it closes. Between fragments the file is its fragments and one `free` box, which
/// every MP4 reader skips. One system call and one disk write per fragment, none through
/// the page cache.
///
/// MPEG-TS has no box to pad with: the partial block is written through the ordinary
/// descriptor until it fills, then sent to the disk at once ([`start_writeback`]).
struct Direct {
    f: File,
    tail: Vec<u8>,
    tail_at: u64,
    padded: bool,
}

impl Direct {
    #[cfg(target_os = "linux")]
    fn open(name: &Path, len: u64, head: &[u8], padded: bool) -> Option<Direct> {
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(name)
            .ok()?;
        let tail_at = len / BLOCK as u64 * BLOCK as u64;
        let in_head = (len - tail_at) as usize;
        Some(Direct {
            f,
            tail: head[head.len() - in_head..].to_vec(),
            tail_at,
            padded,
        })
    }

    /// Direct I/O as Linux has it: elsewhere, the page cache.
    #[cfg(not(target_os = "linux"))]
    fn open(_name: &Path, _len: u64, _head: &[u8], _padded: bool) -> Option<Direct> {
        None
    }

    /// Appends `pieces` (`len` bytes in all). The bytes that complete the partial block
    /// already in the file go after it through the page cache; the whole blocks after those
    /// with direct I/O, through `scratch` `CHUNK` bytes at a time (the one copy of the data);
    /// what is left, less than a block, through the page cache again. Direct I/O never
    /// rewrites a block the page cache holds: that would make the kernel write the cached
    /// block out and wait for it before each direct write (a second disk write per fragment,
    /// synchronous).
    fn append(
        &mut self,
        buffered: &File,
        scratch: &mut Scratch,
        pieces: &[Bytes],
        len: usize,
    ) -> io::Result<()> {
        if self.padded {
            return self.append_padded(scratch, pieces, len);
        }
        let mut src = Cursor::new(pieces);
        // The partial block, completed as far as these bytes go.
        if !self.tail.is_empty() {
            let from = self.tail.len();
            src.take_into(&mut self.tail, (BLOCK - from).min(len));
            buffered.write_all_at(&self.tail[from..], self.tail_at + from as u64)?;
            if self.tail.len() < BLOCK {
                return Ok(());
            }
            // The completed block goes to the disk now, as the direct writes after it do, not
            // at the kernel's writeback some 30 s later: a power cut must not leave a hole
            // in the middle of the file.
            start_writeback(buffered, self.tail_at, BLOCK);
            self.tail_at += BLOCK as u64;
            self.tail.clear();
        }
        // Whole blocks.
        let mut whole = src.remaining() / BLOCK * BLOCK;
        if whole > 0 {
            let buf = scratch.blocks();
            while whole > 0 {
                let n = whole.min(CHUNK);
                src.copy_to(&mut buf[..n]);
                self.f.write_all_at(&buf[..n], self.tail_at)?;
                self.tail_at += n as u64;
                whole -= n;
            }
        }
        // The new partial block.
        let rest = src.remaining();
        if rest > 0 {
            src.take_into(&mut self.tail, rest);
            buffered.write_all_at(&self.tail, self.tail_at)?;
        }
        Ok(())
    }

    /// fMP4's append: the partial block's bytes again, the fragment's, then a `free` box to
    /// the next block boundary, all with direct I/O (`CHUNK` bytes per call at most).
    fn append_padded(&mut self, scratch: &mut Scratch, pieces: &[Bytes], len: usize) -> io::Result<()> {
        let buf = scratch.blocks();
        let mut src = Cursor::new(pieces);
        let end = self.tail_at + (self.tail.len() + len) as u64;
        let mut at = self.tail_at;
        let mut fill = self.tail.len();
        buf[..fill].copy_from_slice(&self.tail);
        loop {
            let n = src.remaining().min(CHUNK - fill);
            src.copy_to(&mut buf[fill..fill + n]);
            fill += n;
            if src.remaining() == 0 {
                break;
            }
            self.f.write_all_at(&buf[..CHUNK], at)?;
            at += CHUNK as u64;
            fill = 0;
        }
        // The box needs its 8-byte header: a gap shorter than that takes the next block too.
        let mut padded = (fill + 8).div_ceil(BLOCK) * BLOCK;
        if padded > CHUNK {
            let whole = fill / BLOCK * BLOCK;
            self.f.write_all_at(&buf[..whole], at)?;
            at += whole as u64;
            buf.copy_within(whole..fill, 0);
            fill -= whole;
            padded = (fill + 8).div_ceil(BLOCK) * BLOCK;
        }
        let pad = padded - fill;
        buf[fill..fill + 4].copy_from_slice(&(pad as u32).to_be_bytes());
        buf[fill + 4..fill + 8].copy_from_slice(b"free");
        buf[fill + 8..padded].fill(0);
        self.f.write_all_at(&buf[..padded], at)?;
        debug_assert_eq!(at + fill as u64, end);
        let in_tail = (end % BLOCK as u64) as usize;
        self.tail.clear();
        self.tail.extend_from_slice(&buf[fill - in_tail..fill]);
        self.tail_at = end - in_tail as u64;
        Ok(())
    }
}

/// Starts writing `len` bytes of `f` at `at` from the page cache to the disk, without waiting.
/// Failures show at the segment's fsync.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(f: &File, at: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor `f` keeps open for its duration; no memory
    // is passed.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), at as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_f: &File, _at: u64, _len: usize) {}

/// Reads a fragment's pieces front to back.
struct Cursor<'a> {
    pieces: &'a [Bytes],
    /// Bytes of `pieces[0]` already taken.
    at: usize,
    remaining: usize,
}

impl<'a> Cursor<'a> {
    fn new(pieces: &'a [Bytes]) -> Self {
        Cursor {
            pieces,
            at: 0,
            remaining: pieces.iter().map(Bytes::len).sum(),
        }
    }

    fn remaining(&self) -> usize {
        self.remaining
    }

    /// Fills `out` (at most `remaining` bytes long) with the next bytes.
    fn copy_to(&mut self, out: &mut [u8]) {
        let mut fill = 0;
        while fill < out.len() {
            let Some(p) = self.pieces.first() else { break };
            let n = (p.len() - self.at).min(out.len() - fill);
            out[fill..fill + n].copy_from_slice(&p[self.at..self.at + n]);
            fill += n;
            self.at += n;
            if self.at == p.len() {
                self.pieces = &self.pieces[1..];
                self.at = 0;
            }
        }
        self.remaining -= fill;
    }

    /// Appends the next `n` bytes to `out`.
    fn take_into(&mut self, out: &mut Vec<u8>, n: usize) {
        let from = out.len();
        out.resize(from + n, 0);
        self.copy_to(&mut out[from..]);
    }
}

struct OpenFile {
    f: File,
    /// `None` where the filesystem takes no direct I/O, or after it failed once.
    direct: Option<Direct>,
    name: PathBuf,
    start: SystemTime,
    /// Bytes written and known good (whole fragments).
    len: u64,
    duration: Duration,
    mehd_at: Option<usize>,
}

struct Writer {
    recordings: Arc<Recordings>,
    path: String,
    status: Arc<Mutex<RecorderStatus>>,
    failed: Arc<AtomicBool>,
    open: Option<OpenFile>,
    /// Reused to join a fragment's pieces for buffered writes.
    gathered: Vec<u8>,
    /// Direct I/O's aligned blocks.
    scratch: Scratch,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        // Fragments after a failure are ignored until the next Open.
        let mut skipping = false;
        while let Some(op) = rx.blocking_recv() {
            match op {
                Op::Open {
                    file,
                    start,
                    init,
                    format,
                } => {
                    self.close();
                    skipping = false;
                    if let Err(e) = self.open(&file, start, init, format) {
                        self.fail(&file, e);
                        skipping = true;
                    }
                }
                Op::Write { pieces, duration } => {
                    if skipping {
                        continue;
                    }
                    if let Err(e) = self.write(&pieces, duration) {
                        let name = self.open.as_ref().map(|o| o.name.clone()).unwrap_or_default();
                        self.abandon();
                        self.fail(&name, e);
                        skipping = true;
                    }
                }
                Op::Close => self.close(),
            }
        }
        self.close();
    }

    fn open(
        &mut self,
        file: &Path,
        start: SystemTime,
        init: Option<(Bytes, usize)>,
        format: Format,
    ) -> io::Result<()> {
        safe_file(file)?;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Never overwrite: a name taken (a restart within the same microsecond, a clock set
        // back) gets a "-N" suffix.
        let mut name = file.to_owned();
        let mut n = 0;
        let f = loop {
            match OpenOptions::new().write(true).create_new(true).open(&name) {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 99 => {
                    n += 1;
                    let stem = file.with_extension("");
                    name = PathBuf::from(format!("{}-{n}{}", stem.display(), crate::extension(format)));
                }
                Err(e) => return Err(e),
            }
        };
        let mut of = OpenFile {
            f,
            direct: None,
            name: name.clone(),
            start,
            len: 0,
            duration: Duration::ZERO,
            mehd_at: None,
        };
        let mut head = Bytes::new();
        if let Some((bytes, at)) = init {
            of.f.write_all(&bytes)?;
            of.len = bytes.len() as u64;
            of.mehd_at = (at > 0).then_some(at);
            head = bytes;
        }
        of.direct = Direct::open(&name, of.len, &head, format == Format::Fmp4);
        // The header (and the directory entry) durable before any media.
        of.f.sync_data()?;
        if let Some(dir) = name.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.recordings.catalog.upsert(
            &self.path,
            SegmentEntry {
                file: name.clone(),
                start,
                duration: Duration::ZERO,
                bytes: of.len,
                format,
                complete: false,
                writing: true,
            },
        );
        {
            let mut st = self.status.lock();
            if st.state == "error" {
                tracing::info!(path = %self.path, file = %name.display(), "recording resumed");
                self.recordings.emit(ServerEvent::Recording {
                    path: self.path.as_str().into(),
                    state: "resumed",
                    file: name.display().to_string(),
                    duration: 0.0,
                    bytes: 0,
                    detail: String::new(),
                });
            }
            st.state = "recording";
            st.file = Some(name.clone());
            st.bytes_written += of.len;
        }
        tracing::info!(path = %self.path, file = %name.display(), "recording segment created");
        self.recordings.emit(ServerEvent::Recording {
            path: self.path.as_str().into(),
            state: "created",
            file: name.display().to_string(),
            duration: 0.0,
            bytes: 0,
            detail: String::new(),
        });
        self.open = Some(of);
        Ok(())
    }

    fn write(&mut self, pieces: &[Bytes], duration: Duration) -> io::Result<()> {
        let Some(of) = &mut self.open else {
            return Ok(());
        };
        let len: usize = pieces.iter().map(Bytes::len).sum();
        let gathered = &mut self.gathered;
        let mut buffered = |f: &File, at: u64| -> io::Result<()> {
            if let [one] = pieces {
                return f.write_all_at(one, at);
            }
            gathered.clear();
            for p in pieces {
                gathered.extend_from_slice(p);
            }
            f.write_all_at(gathered, at)
        };
        let direct = match &mut of.direct {
            Some(d) => d.append(&of.f, &mut self.scratch, pieces, len),
            None => buffered(&of.f, of.len),
        };
        if let Err(e) = direct {
            if of.direct.take().is_none() {
                return Err(e);
            }
            // Direct I/O failed (a device that wants a larger alignment than `BLOCK`, a
            // filesystem that opens with O_DIRECT but will not write so, a full disk): the whole
            // fragment again through the page cache, from now on. A full disk fails there too.
            tracing::debug!(path = %self.path, "direct I/O failed ({e}); buffered writes");
            buffered(&of.f, of.len)?;
            // A padded direct write may have left a `free` box or part of this fragment past
            // its end.
            of.f.set_len(of.len + len as u64)?;
        }
        of.len += len as u64;
        of.duration += duration;
        let (file_len, dur, start) = (of.len, of.duration, of.start);
        self.recordings.catalog.update(&self.path, start, |e| {
            e.bytes = file_len;
            e.duration = dur;
        });
        self.status.lock().bytes_written += len as u64;
        Ok(())
    }

    /// Completes the open file: its duration into the header, then fsync.
    fn close(&mut self) {
        let Some(of) = self.open.take() else {
            return;
        };
        let res = (|| -> io::Result<()> {
            if of.direct.as_ref().is_some_and(|d| d.padded) {
                // The `free` box after the last fragment goes: the file ends with its media.
                of.f.set_len(of.len)?;
            }
            if let Some(at) = of.mehd_at {
                let ms = (of.duration.as_millis() as u64).max(1);
                of.f.write_all_at(&ms.to_be_bytes(), at as u64)?;
            }
            of.f.sync_all()
        })();
        let entry_start = of.start;
        if let Err(e) = res {
            // The media is written; only the header's duration or the fsync failed. The file
            // stays listed; the next start's scan completes its header.
            tracing::warn!(path = %self.path, file = %of.name.display(), "recording segment not finalized: {e}");
        }
        self.recordings.catalog.update(&self.path, entry_start, |e| {
            e.complete = true;
            e.writing = false;
        });
        if of.len == 0 || of.duration.is_zero() {
            // Nothing but a header: not a recording.
            let _ = std::fs::remove_file(&of.name);
            self.recordings.catalog.remove(&self.path, entry_start);
            return;
        }
        {
            let mut st = self.status.lock();
            st.segments_completed += 1;
            st.file = None;
            if st.state == "recording" {
                st.state = "waiting";
            }
        }
        tracing::info!(
            path = %self.path,
            file = %of.name.display(),
            "recording segment completed: {:.3} s, {} bytes",
            of.duration.as_secs_f64(),
            of.len
        );
        self.recordings.emit(ServerEvent::Recording {
            path: self.path.as_str().into(),
            state: "completed",
            file: of.name.display().to_string(),
            duration: of.duration.as_secs_f64(),
            bytes: of.len,
            detail: String::new(),
        });
        self.recordings.sweep(&self.path);
    }

    /// After a write error: the file is cut back to its last whole fragment and completed.
    fn abandon(&mut self) {
        if let Some(of) = &mut self.open {
            let _ = of.f.set_len(of.len);
        }
        self.close();
    }

    fn fail(&mut self, file: &Path, e: io::Error) {
        let what = if is_disk_error(&e) {
            "the disk is full or failing"
        } else {
            "cannot write"
        };
        let msg = format!("{what}: {e}");
        tracing::warn!(path = %self.path, file = %file.display(), "recording stopped, retrying: {msg}");
        {
            let mut st = self.status.lock();
            st.state = "error";
            st.file = None;
            st.last_error = Some(msg.clone());
            st.last_error_at = Some(SystemTime::now());
        }
        self.recordings.emit(ServerEvent::Recording {
            path: self.path.as_str().into(),
            state: "error",
            file: file.display().to_string(),
            duration: 0.0,
            bytes: 0,
            detail: msg,
        });
        self.failed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_leave_the_queue_room_and_the_disk_current() {
        let s = Duration::from_secs(1);
        assert_eq!(nap(512, s), Some(Duration::from_millis(250)));
        assert_eq!(
            nap(512, Duration::from_millis(200)),
            Some(Duration::from_millis(50))
        );
        assert_eq!(nap(64, s), Some(Duration::from_millis(66)));
        assert_eq!(nap(32, s), None);
    }

    /// Fragments of every size, appended through the direct-I/O path, give the file exactly
    /// the bytes appended, readable at its exact length after each append (MPEG-TS).
    #[test]
    fn direct_appends_keep_the_exact_bytes() {
        appends(false);
    }

    /// The same for fMP4's padded appends: after each one the file is exactly the bytes
    /// appended, then one `free` box to a block boundary.
    #[test]
    fn padded_direct_appends_end_with_one_free_box() {
        appends(true);
    }

    fn appends(padded: bool) {
        // Under target/ (a real disk; /tmp may be a tmpfs, which takes O_DIRECT without
        // alignment rules, so it would prove nothing).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/tmp")
            .join(format!("sluice-direct-{}-{padded}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name = dir.join("a.mp4");
        let head: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&name)
            .unwrap();
        f.write_all_at(&head, 0).unwrap();
        let mut d =
            Direct::open(&name, head.len() as u64, &head, padded).expect("O_DIRECT on the test directory");
        let mut scratch = Scratch::default();
        let mut expect = head.clone();
        let mut seed = 7u32;
        for i in 0..60 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = match i % 4 {
                0 => (seed % 100) as usize,
                1 => BLOCK - expect.len() % BLOCK,
                2 => (seed % 70_000) as usize,
                // Larger than the direct-I/O buffer: several writes.
                _ => (seed % (3 * CHUNK as u32)) as usize,
            };
            let chunk: Vec<u8> = (0..n).map(|k| (k as u32 ^ seed) as u8).collect();
            // In pieces, as a gathered fragment comes: a header, then samples of any size
            // (empty ones too).
            let mut pieces = Vec::new();
            let mut rest = Bytes::from(chunk.clone());
            let mut cut = seed;
            while !rest.is_empty() {
                cut = cut.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let take = ((cut >> 8) as usize % 9_000).min(rest.len());
                pieces.push(rest.split_to(take));
            }
            d.append(&f, &mut scratch, &pieces, n).unwrap();
            expect.extend_from_slice(&chunk);
            let got = std::fs::read(&name).unwrap();
            if padded {
                assert_eq!(got.len() % BLOCK, 0, "after append {i}");
                let pad = &got[expect.len().min(got.len())..];
                assert!(pad.len() >= 8, "no room for the free box after append {i}");
                assert_eq!(&pad[4..8], b"free", "after append {i}");
                assert_eq!(
                    u32::from_be_bytes(pad[..4].try_into().unwrap()) as usize,
                    pad.len()
                );
                assert!(
                    got[..expect.len()] == expect[..],
                    "content differs after append {i}"
                );
            } else {
                assert_eq!(got.len(), expect.len(), "after append {i}");
                assert!(got == expect, "content differs after append {i}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
