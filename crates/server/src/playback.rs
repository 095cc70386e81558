//! The playback listener (9996, MediaMTX-compatible): lists what is recorded and serves ranges
//! of recordings. HTTP only; the catalog, the file reading and the cutting live in
//! `sluice-record`.
//!
//! - `GET /list?path=P[&start=RFC3339][&end=RFC3339]`: `[{"start", "duration", "url"}]`, the
//!   path's contiguous spans (segments merged), clipped to the window, from the in-memory catalog.
//! - `GET /get?path=P&start=RFC3339&duration=S[&format=fmp4|mp4]`: the range as one fragmented
//!   MP4 (one init, the fragments on one timeline from 0, a `sidx` when every fragment starts
//!   with a keyframe) or, with `format=mp4`, a progressive MP4 (`moov` first), from the keyframe
//!   at or before `start`, with its `Content-Length` upfront and `Range` requests answered; the
//!   media streamed from the files in chunks, never built in memory.
//! - `GET /vod.m3u8?path=P&start=&duration=`: an HLS VOD playlist of the range; its media are
//!   `GET /vod/ID/P/init.mp4` (a file's `ftyp`+`moov`) and `GET /vod/ID/P/I-J.m4s` (fragments
//!   `[I, J)` of that file), where `ID` is a catalog segment's start in microseconds. The path
//!   is in the URL's path and the extension last, as players that check extensions (ffmpeg's
//!   `allowed_segment_extensions`) need.
//!
//! Only files of the catalog are ever opened, never through a symlink (`O_NOFOLLOW`): a client
//! names a path and times, never a file.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_record::export::{self, Export, ExportError, Opener, Plan, Progressive};
use sluice_record::{format_time, parse_time, Recordings, SegmentEntry};

use crate::http_error::HttpError;

/// The listener's state: the recordings, and what was read of their files.
struct Playback {
    rec: Arc<Recordings>,
    probes: export::ProbeCache,
}

pub fn router(recordings: Arc<Recordings>) -> Router {
    let state = Arc::new(Playback {
        rec: recordings,
        probes: export::ProbeCache::new(),
    });
    Router::new()
        .route("/list", get(list))
        .route("/get", get(get_range))
        .route("/vod.m3u8", get(vod_playlist))
        .route("/vod/{*rest}", get(vod_file))
        .fallback(|| async { HttpError::not_found("no such endpoint: /list, /get, /vod.m3u8") })
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    path: String,
    start: Option<String>,
    end: Option<String>,
}

#[derive(Debug, Serialize)]
struct SpanJson {
    start: String,
    /// Seconds.
    duration: f64,
    url: String,
}

/// A path name as the core accepts it: no way out of the recording directory through it.
pub(crate) fn check_path(path: &str) -> Result<(), HttpError> {
    let ok = !path.is_empty()
        && path.len() <= 256
        && path.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(HttpError::bad_request(format!("{path:?} is not a path name")))
    }
}

pub(crate) fn opt_time(name: &str, v: &Option<String>) -> Result<Option<SystemTime>, HttpError> {
    v.as_deref()
        .map(|s| parse_time(s).map_err(|e| HttpError::bad_request(format!("{name}: {e}"))))
        .transpose()
}

/// `http://HOST` of the request, for the URLs in answers.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("127.0.0.1:9996");
    format!("http://{host}")
}

async fn list(
    State(pb): State<Arc<Playback>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let rec = &pb.rec;
    let Query(q) = q.map_err(|e| HttpError::bad_request(e.body_text()))?;
    check_path(&q.path)?;
    let start = opt_time("start", &q.start)?;
    let end = opt_time("end", &q.end)?;
    if let (Some(s), Some(e)) = (start, end) {
        if e <= s {
            return Err(HttpError::bad_request("end must be after start"));
        }
    }
    let spans = rec.catalog().spans(&q.path, start, end);
    if spans.is_empty() {
        return Err(HttpError::not_found(format!(
            "no recordings of {:?} in this range",
            q.path
        )));
    }
    let base = base_url(&headers);
    let out: Vec<SpanJson> = spans
        .into_iter()
        .map(|s| {
            let start = format_time(s.start);
            let duration = s.duration.as_secs_f64();
            SpanJson {
                url: format!("{base}/get?path={}&start={start}&duration={duration:.6}", q.path),
                start,
                duration,
            }
        })
        .collect();
    Ok(Json(out).into_response())
}

/// Longest range `/get` and `/vod.m3u8` serve.
const MAX_DURATION: f64 = 24.0 * 3600.0;
/// Longest range `format=mp4` serves: its moov (~25 bytes a sample) is built in memory.
const MAX_MP4_DURATION: f64 = 6.0 * 3600.0;
/// Bytes per chunk of a streamed answer.
const CHUNK: usize = 64 * 1024;
/// HLS media segments last at least this long (in whole fragments, from a keyframe).
const HLS_SEGMENT: f64 = 2.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    path: String,
    start: String,
    duration: String,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VodQuery {
    path: String,
    start: String,
    duration: String,
}

/// Opens a catalog file for reading: never through a symlink (the file itself with
/// `O_NOFOLLOW`, the directories between `root`, the recording directory, and the file checked),
/// only a regular file. A file or directory swapped for a symlink after it was listed is refused
/// with `PermissionDenied`.
pub(crate) fn open_file(root: Option<&std::path::Path>, path: &std::path::Path) -> std::io::Result<File> {
    let refused = || {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a regular file: refused",
        )
    };
    if let Some(root) = root {
        for dir in path.ancestors().skip(1) {
            if dir == root || !dir.starts_with(root) {
                break;
            }
            if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
                return Err(refused());
            }
        }
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refused()
            } else {
                e
            }
        })?;
    if !f.metadata()?.is_file() {
        return Err(refused());
    }
    Ok(f)
}

/// The opener of `path`'s recordings.
fn opener(rec: &Recordings, path: &str) -> Opener {
    let root = rec.settings(path).map(|c| c.pattern.root());
    Arc::new(move |file| open_file(root.as_deref(), file))
}

/// `duration` as seconds: a positive, finite number up to a day.
fn parse_duration(s: &str) -> Result<f64, HttpError> {
    let d: f64 = s
        .parse()
        .map_err(|_| HttpError::bad_request(format!("duration: {s:?} is not a number of seconds")))?;
    if !d.is_finite() || d <= 0.0 || d > MAX_DURATION {
        return Err(HttpError::bad_request(format!(
            "duration must be more than 0 and at most {MAX_DURATION} seconds"
        )));
    }
    Ok(d)
}

/// The validated `(path, start, end)` of a range query.
fn range_of(path: &str, start: &str, duration: &str) -> Result<(SystemTime, SystemTime), HttpError> {
    check_path(path)?;
    let from = parse_time(start).map_err(|e| HttpError::bad_request(format!("start: {e}")))?;
    let d = parse_duration(duration)?;
    Ok((from, from + Duration::from_secs_f64(d)))
}

fn export_error(e: ExportError) -> HttpError {
    match e {
        ExportError::NotFound(m) => HttpError::not_found(m),
        ExportError::Unsupported(m) => HttpError::bad_request(m),
        ExportError::Io { err, file } if err.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(%file, "playback: refused: {err}");
            HttpError::forbidden("the recording is not a regular file (a symlink?): refused")
        }
        e => {
            tracing::warn!("playback: {e}");
            HttpError::internal("the recording cannot be read")
        }
    }
}

/// Plans `[from, to)` of `path` (blocking file reads, off the runtime).
async fn plan_range(
    pb: &Arc<Playback>,
    path: &str,
    from: SystemTime,
    to: SystemTime,
) -> Result<Plan, HttpError> {
    let segments = pb.rec.catalog().segments(path, Some(from), Some(to));
    if segments.is_empty() {
        return Err(HttpError::not_found(format!(
            "no recording of {path:?} in this range"
        )));
    }
    let open = opener(&pb.rec, path);
    let pb = pb.clone();
    tokio::task::spawn_blocking(move || export::plan(&segments, from, to, &open, &pb.probes))
        .await
        .map_err(|_| HttpError::internal("planning failed"))?
        .map_err(export_error)
}

/// The one byte range of a `Range: bytes=...` header; `Ok(None)` when absent or not a single
/// range (then the whole body is sent), `Err` when unsatisfiable.
fn byte_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len)
    } else {
        let from: u64 = a.parse().map_err(|_| ())?;
        let to = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(len)
        };
        (from, to)
    };
    if range.0 >= len || range.0 >= range.1 {
        return Err(());
    }
    Ok(Some(range))
}

/// Streams `len` bytes of `reader` as a body, in chunks read on a blocking thread.
fn stream_body(mut reader: impl Read + Send + 'static, len: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; (left as usize).min(CHUNK)];
            let r = reader.read(&mut buf).and_then(|n| {
                if n == 0 {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "recording cut short",
                    ))
                } else {
                    Ok(n)
                }
            });
            let item = r.map(|n| {
                buf.truncate(n);
                left -= n as u64;
                Bytes::from(buf)
            });
            let failed = item.is_err();
            if let Err(e) = &item {
                tracing::warn!("playback: reading a recording: {e}");
            }
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A body of `len` bytes read from `open(from, to)`, as a 200 or, for a `Range` request, a 206.
fn ranged<R: Read + Send + 'static>(
    headers: &HeaderMap,
    len: u64,
    content_type: &'static str,
    open: impl FnOnce(u64, u64) -> R,
) -> Response {
    let (status, from, to) = match byte_range(headers, len) {
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                HttpError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable").body(),
            )
                .into_response();
        }
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, to - from)
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {from}-{}/{len}", to - 1));
    }
    resp.body(stream_body(open(from, to), to - from))
        .unwrap_or_else(|_| HttpError::internal("response").into_response())
}

async fn get_range(
    State(pb): State<Arc<Playback>>,
    headers: HeaderMap,
    q: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let rec = &pb.rec;
    let Query(q) = q.map_err(|e| HttpError::bad_request(e.body_text()))?;
    let (from, to) = range_of(&q.path, &q.start, &q.duration)?;
    let progressive = match q.format.as_deref() {
        None | Some("fmp4") => false,
        Some("mp4") => true,
        Some(f) => return Err(HttpError::bad_request(format!("format {f:?} is not fmp4 or mp4"))),
    };
    if progressive && to.duration_since(from).unwrap_or_default().as_secs_f64() > MAX_MP4_DURATION {
        return Err(HttpError::bad_request(format!(
            "format mp4 serves at most {MAX_MP4_DURATION} seconds (its index is built in memory): use fmp4"
        )));
    }
    let plan = plan_range(&pb, &q.path, from, to).await?;
    let open = opener(rec, &q.path);
    let init = plan.parts[0].info.init.clone();
    let export = tokio::task::spawn_blocking(move || {
        let export = Export::new(plan, open)?;
        let mp4 = progressive
            .then(|| Progressive::new(&export, &init))
            .transpose()?;
        Ok::<_, ExportError>((export, mp4))
    })
    .await
    .map_err(|_| HttpError::internal("export failed"))?
    .map_err(export_error)?;
    match export {
        (_, Some(mp4)) => {
            let mp4 = Arc::new(mp4);
            Ok(ranged(&headers, mp4.len(), "video/mp4", |a, b| mp4.reader(a, b)))
        }
        (export, None) => {
            let export = Arc::new(export);
            Ok(ranged(&headers, export.len(), "video/mp4", |a, b| {
                export.reader(a, b)
            }))
        }
    }
}

async fn vod_playlist(
    State(pb): State<Arc<Playback>>,
    headers: HeaderMap,
    q: Result<Query<VodQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let rec = &pb.rec;
    let Query(q) = q.map_err(|e| HttpError::bad_request(e.body_text()))?;
    let (from, to) = range_of(&q.path, &q.start, &q.duration)?;
    let mut plan = plan_range(&pb, &q.path, from, to).await?;
    let open = opener(rec, &q.path);
    let plan = tokio::task::spawn_blocking(move || plan.start_at_keyframe(&open).map(|()| plan))
        .await
        .map_err(|_| HttpError::internal("planning failed"))?
        .map_err(export_error)?;
    let base = base_url(&headers);
    let files: Vec<(u64, Vec<export::HlsSegment>, SystemTime)> = plan
        .parts
        .iter()
        .map(|p| {
            let at = p.fragments().first().map_or(0.0, |f| f.start.max(0.0));
            (
                export::segment_id(&p.entry),
                export::hls_segments(p, HLS_SEGMENT),
                p.entry.start + Duration::from_secs_f64(at),
            )
        })
        .collect();
    let target = files
        .iter()
        .flat_map(|(_, s, _)| s.iter().map(|s| s.duration))
        .fold(1.0f64, f64::max)
        .ceil() as u64;
    let mut m3u8 = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:{target}\n\
         #EXT-X-MEDIA-SEQUENCE:0\n"
    );
    let path = &q.path;
    for (i, (id, segs, start)) in files.iter().enumerate() {
        // Every file's timeline starts at 0.
        if i > 0 {
            m3u8.push_str("#EXT-X-DISCONTINUITY\n");
        }
        m3u8.push_str(&format!(
            "#EXT-X-MAP:URI=\"{base}/vod/{id}/{path}/init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:{}\n",
            format_time(*start)
        ));
        for s in segs {
            m3u8.push_str(&format!(
                "#EXTINF:{:.6},\n{base}/vod/{id}/{path}/{}-{}.m4s\n",
                s.duration, s.from, s.to
            ));
        }
    }
    m3u8.push_str("#EXT-X-ENDLIST\n");
    Ok(([(header::CONTENT_TYPE, "application/vnd.apple.mpegurl")], m3u8).into_response())
}

/// The catalog segment of `path` a `file` identifier names.
fn segment_of(rec: &Recordings, path: &str, file: &str) -> Result<SegmentEntry, HttpError> {
    check_path(path)?;
    let micros: u64 = file
        .parse()
        .map_err(|_| HttpError::bad_request(format!("file: {file:?} is not a segment identifier")))?;
    let t = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_micros(micros))
        .ok_or_else(|| HttpError::bad_request(format!("file: {file:?} is not a segment identifier")))?;
    // Starts are kept to the nanosecond; identifiers to the microsecond.
    rec.catalog()
        .segments(path, Some(t), Some(t + Duration::from_micros(1)))
        .into_iter()
        .find(|s| export::segment_id(s) == micros && s.format == sluice_record::Format::Fmp4)
        .ok_or_else(|| HttpError::not_found(format!("no fMP4 segment {file} of {path:?}")))
}

async fn probe_segment(
    pb: &Arc<Playback>,
    seg: SegmentEntry,
    open: Opener,
) -> Result<Arc<sluice_record::probe::FileInfo>, HttpError> {
    let pb = pb.clone();
    tokio::task::spawn_blocking(move || pb.probes.probe(&seg, &open))
        .await
        .map_err(|_| HttpError::internal("probe failed"))?
        .map_err(export_error)
}

/// `/vod/ID/P/init.mp4` or `/vod/ID/P/I-J.m4s`.
async fn vod_file(
    State(pb): State<Arc<Playback>>,
    headers: HeaderMap,
    rest: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    uri: axum::http::Uri,
) -> Result<Response, HttpError> {
    let rec = &pb.rec;
    let axum::extract::Path(rest) = rest.map_err(|e| HttpError::bad_request(e.body_text()))?;
    if uri.query().is_some() {
        return Err(HttpError::bad_request(
            "no query here: /vod/ID/PATH/init.mp4 or /vod/ID/PATH/I-J.m4s",
        ));
    }
    let (id, rest) = rest
        .split_once('/')
        .ok_or_else(|| HttpError::not_found("no such file: /vod/ID/PATH/init.mp4 or /vod/ID/PATH/I-J.m4s"))?;
    let (path, name) = rest
        .rsplit_once('/')
        .ok_or_else(|| HttpError::not_found("no such file: /vod/ID/PATH/init.mp4 or /vod/ID/PATH/I-J.m4s"))?;
    let seg = segment_of(rec, path, id)?;
    if name == "init.mp4" {
        let info = probe_segment(&pb, seg, opener(rec, path)).await?;
        return Ok(([(header::CONTENT_TYPE, "video/mp4")], info.init.clone()).into_response());
    }
    let (from, to) = name
        .strip_suffix(".m4s")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .ok_or_else(|| HttpError::not_found(format!("no such file {name:?}: init.mp4 or I-J.m4s")))?;
    let file_path = seg.file.clone();
    let open = opener(rec, path);
    let info = probe_segment(&pb, seg, open.clone()).await?;
    let (offset, len) = export::fragment_range(&info, from, to)
        .ok_or_else(|| HttpError::not_found(format!("fragments {from}..{to} are not in this file")))?;
    let file = open(&file_path).map_err(|err| {
        export_error(ExportError::Io {
            file: file_path.display().to_string(),
            err,
        })
    })?;
    Ok(ranged(&headers, len, "video/iso.segment", move |a, b| {
        FileRange {
            file,
            pos: offset + a,
            end: offset + b,
        }
    }))
}

/// Reads `[pos, end)` of a file.
struct FileRange {
    file: File,
    pos: u64,
    end: u64,
}

impl Read for FileRange {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = (self.end - self.pos).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
