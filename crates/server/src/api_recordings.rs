//! The recordings endpoints of the API: what is recorded per path, the segment files of a path
//! with its recorder's status, and deleting a time range or one segment.
//!
//! - `GET /v1/recordings`: every recorded path with its segment count, bytes, first and last time;
//! - `GET /v1/recordings/{path}`: the path's segments (start, duration, bytes, file, complete,
//!   writing) and its recorder's status while one runs;
//! - `DELETE /v1/recordings/{path}?start=&end=`: the segments wholly inside `[start, end)`;
//!   `DELETE /v1/recordings/{path}?segment=START`: the one segment starting at `START`. A segment
//!   being written is never deleted: 409, and nothing is.
//!
//! Everything comes from the in-memory catalog; files are named relative to the path's recording
//! directory (the pattern's root), never given as absolute paths.

use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_record::{format_time, SegmentEntry};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{Api, ErrorBody};
use crate::http_error::HttpError;
use crate::playback::{check_path, opt_time};

#[derive(OpenApi)]
#[openapi(
    tags((name = "recordings", description = "Recorded segment files per path: list, status, delete")),
    // Registered by hand in `routes`: path names contain `/` (`{*path}` in axum).
    paths(get_recording, delete_recording)
)]
struct RecordingsDoc;

/// The recordings endpoints, to merge into the API's router.
pub fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(RecordingsDoc::openapi())
        .routes(routes!(list_recordings))
        .route(
            "/v1/recordings/{*path}",
            axum::routing::get(get_recording).delete(delete_recording),
        )
}

/// One recorded path.
#[derive(Serialize, ToSchema)]
struct RecordedPath {
    path: String,
    segments: usize,
    bytes: u64,
    /// Start of the oldest segment (RFC 3339).
    first: Option<String>,
    /// End of the newest segment (RFC 3339).
    last: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct RecordedPathList {
    items: Vec<RecordedPath>,
}

/// One segment file.
#[derive(Serialize, ToSchema)]
struct SegmentJson {
    /// Wall-clock start (RFC 3339, microseconds); also the segment's identifier for `?segment=`.
    start: String,
    /// Seconds.
    duration: f64,
    bytes: u64,
    /// The file, relative to the path's recording directory.
    file: String,
    /// `fmp4` or `mpegts`.
    format: &'static str,
    /// The writer closed it.
    complete: bool,
    /// Being written now (cannot be deleted).
    writing: bool,
}

/// A path's recorder while one runs.
#[derive(Serialize, ToSchema)]
struct RecorderJson {
    /// `recording`, `waiting` (for a keyframe or the publisher), `error` (retrying).
    state: &'static str,
    /// The file being written, relative to the path's recording directory.
    file: Option<String>,
    bytes_written: u64,
    segments_completed: u64,
    last_error: Option<String>,
    /// RFC 3339.
    last_error_at: Option<String>,
    dropped_fragments: u64,
}

#[derive(Serialize, ToSchema)]
struct PathRecordings {
    path: String,
    segments: Vec<SegmentJson>,
    bytes: u64,
    /// Null when no recorder runs for the path now.
    recorder: Option<RecorderJson>,
}

#[derive(Serialize, ToSchema)]
struct Deleted {
    /// Segments deleted.
    deleted: usize,
    bytes: u64,
}

/// `?start=&end=` (a range) or `?segment=` (one segment) of a delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Delete the segments wholly inside `[start, end)` (RFC 3339); with `end`.
    start: Option<String>,
    /// With `start`.
    end: Option<String>,
    /// Delete the one segment starting at this time (RFC 3339, as listed).
    segment: Option<String>,
}

fn relative(api: &Api, path: &str, file: &std::path::Path) -> String {
    let root = api.recordings.settings(path).map(|c| c.pattern.root());
    root.and_then(|r| file.strip_prefix(r).ok().map(|f| f.display().to_string()))
        .or_else(|| file.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

fn format_name(f: sluice_record::Format) -> &'static str {
    match f {
        sluice_record::Format::Fmp4 => "fmp4",
        sluice_record::Format::MpegTs => "mpegts",
    }
}

fn path_of(path: &str) -> Result<&str, HttpError> {
    let path = path.trim_start_matches('/');
    check_path(path)?;
    Ok(path)
}

/// Every recorded path.
#[utoipa::path(get, path = "/v1/recordings", tag = "recordings",
    responses((status = 200, description = "Recorded paths", body = RecordedPathList)))]
async fn list_recordings(State(api): State<Api>) -> Json<RecordedPathList> {
    let items = api
        .recordings
        .catalog()
        .summaries()
        .into_iter()
        .map(|s| RecordedPath {
            path: s.path,
            segments: s.segments,
            bytes: s.bytes,
            first: s.first.map(format_time),
            last: s.last_end.map(format_time),
        })
        .collect();
    Json(RecordedPathList { items })
}

/// A path's segment files and its recorder.
#[utoipa::path(get, path = "/v1/recordings/{path}", tag = "recordings",
    params(("path" = String, Path, description = "The path name, e.g. live/cam1")),
    responses(
        (status = 200, description = "The path's recordings", body = PathRecordings),
        (status = 400, description = "Not a path name", body = ErrorBody),
        (status = 404, description = "Nothing recorded for this path", body = ErrorBody)))]
async fn get_recording(
    State(api): State<Api>,
    Path(path): Path<String>,
) -> Result<Json<PathRecordings>, HttpError> {
    let path = path_of(&path)?;
    let segs = api.recordings.catalog().segments(path, None, None);
    let status = api.recordings.status(path);
    if segs.is_empty() && status.is_none() {
        return Err(HttpError::not_found(format!("nothing is recorded for {path:?}")));
    }
    let segments: Vec<SegmentJson> = segs
        .iter()
        .map(|s| SegmentJson {
            start: format_time(s.start),
            duration: s.duration.as_secs_f64(),
            bytes: s.bytes,
            file: relative(&api, path, &s.file),
            format: format_name(s.format),
            complete: s.complete,
            writing: s.writing,
        })
        .collect();
    Ok(Json(PathRecordings {
        path: path.to_owned(),
        bytes: segs.iter().map(|s| s.bytes).sum(),
        segments,
        recorder: status.map(|r| RecorderJson {
            state: r.state,
            file: r.file.map(|f| relative(&api, path, &f)),
            bytes_written: r.bytes_written,
            segments_completed: r.segments_completed,
            last_error: r.last_error,
            last_error_at: r.last_error_at.map(format_time),
            dropped_fragments: r.dropped_fragments,
        }),
    }))
}

/// Deletes a time range of a path's recordings, or one segment.
#[utoipa::path(delete, path = "/v1/recordings/{path}", tag = "recordings",
    params(("path" = String, Path, description = "The path name, e.g. live/cam1"), DeleteQuery),
    responses(
        (status = 200, description = "What was deleted", body = Deleted),
        (status = 400, description = "Bad path, times or query", body = ErrorBody),
        (status = 404, description = "No such segment, or nothing recorded in the range", body = ErrorBody),
        (status = 409, description = "A segment in the range is being written; nothing was deleted", body = ErrorBody)))]
async fn delete_recording(
    State(api): State<Api>,
    Path(path): Path<String>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<Deleted>, HttpError> {
    let Query(q) = q.map_err(|e| HttpError::bad_request(e.body_text()))?;
    let path = path_of(&path)?;
    let catalog = api.recordings.catalog();
    let targets: Vec<SegmentEntry> = match (&q.segment, &q.start, &q.end) {
        (Some(_), None, None) => {
            let at = opt_time("segment", &q.segment)?.unwrap_or(SystemTime::UNIX_EPOCH);
            // Listed starts have microseconds; the catalog keeps nanoseconds.
            let seg = catalog
                .segments(path, Some(at), Some(at + std::time::Duration::from_micros(1)))
                .into_iter()
                .find(|s| format_time(s.start) == format_time(at))
                .ok_or_else(|| {
                    HttpError::not_found(format!("no segment of {path:?} starts at {}", format_time(at)))
                })?;
            vec![seg]
        }
        (None, Some(_), Some(_)) => {
            let from = opt_time("start", &q.start)?.unwrap_or(SystemTime::UNIX_EPOCH);
            let to = opt_time("end", &q.end)?.unwrap_or(SystemTime::UNIX_EPOCH);
            if to <= from {
                return Err(HttpError::bad_request("end must be after start"));
            }
            let v: Vec<SegmentEntry> = catalog
                .segments(path, Some(from), Some(to))
                .into_iter()
                .filter(|s| s.start >= from && s.end() <= to)
                .collect();
            if v.is_empty() {
                return Err(HttpError::not_found(format!(
                    "no segment of {path:?} lies wholly inside this range"
                )));
            }
            v
        }
        _ => {
            return Err(HttpError::bad_request(
                "give start and end (a range), or segment (one segment's start)",
            ))
        }
    };
    if let Some(w) = targets.iter().find(|s| s.writing) {
        return Err(HttpError::conflict(format!(
            "the segment starting at {} is being written; nothing was deleted",
            format_time(w.start)
        )));
    }
    let mut out = Deleted { deleted: 0, bytes: 0 };
    for s in &targets {
        api.recordings
            .delete(path, s, "deleted through the API")
            .map_err(|e| HttpError::internal(format!("cannot delete a segment: {e}")))?;
        out.deleted += 1;
        out.bytes += s.bytes;
    }
    Ok(Json(out))
}
