//! A path's push destinations as API resources, over the configuration's `[paths."NAME".push]
//! urls` and the running push outputs:
//!
//! - `GET /v1/paths/{name}/pushes`: the destinations the path's configuration pushes to, each
//!   with its id and its state (`idle` while the path has no publisher);
//! - `POST /v1/paths/{name}/pushes` `{"url": "rtmp://..."}`: adds one (201, `Location` of the
//!   new resource); it starts at once on a live path;
//! - `GET`, `DELETE /v1/paths/{name}/pushes/{id}`: one destination; removing it ends only it;
//! - `POST /v1/paths/{name}/pushes/{id}/restart`: drops its connection and reconnects now.
//!
//! Adding and removing are changes of the path's table, made like `PUT /v1/config/paths/...`
//! (validated, written to the state file, applied by hot reload). They act on the table named
//! exactly `name`; a path governed by a pattern (`live/*`) gets its own table, a copy of the
//! pattern's with the change, so the pattern's other paths are untouched (`name` may be the
//! pattern itself to change all of them). The id is a digest of the whole URL: no key shows.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::api::{Api, ErrorBody};
use crate::http_error::HttpError;
use crate::push::{self, PushStatus};
use crate::reload::{self, Applied, Layers, Reloader};

/// What a request under `/v1/paths/{*name}` is about, when it is about pushes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `NAME/pushes`
    List(&'a str),
    /// `NAME/pushes/ID`
    One(&'a str, &'a str),
    /// `NAME/pushes/ID/restart`
    Restart(&'a str, &'a str),
}

/// Recognises the pushes resources at the end of a path name (a live path whose own name ends
/// in `/pushes`, `/pushes/X` or `/pushes/X/restart` cannot be read through
/// `GET /v1/paths/{name}`: the pushes resource answers instead).
pub fn route(name: &str) -> Option<Route<'_>> {
    let name = name.trim_start_matches('/');
    if let Some(path) = name.strip_suffix("/pushes") {
        return (!path.is_empty()).then_some(Route::List(path));
    }
    // Any id is routed here (an unknown one is answered 404 by the handler).
    let (rest, last) = name.rsplit_once('/')?;
    if last == "restart" {
        if let Some((rest, id)) = rest.rsplit_once('/') {
            if let Some(path) = rest
                .strip_suffix("/pushes")
                .filter(|p| !p.is_empty() && !id.is_empty())
            {
                return Some(Route::Restart(path, id));
            }
        }
    }
    let path = rest.strip_suffix("/pushes")?;
    (!last.is_empty() && !path.is_empty()).then_some(Route::One(path, last))
}

impl Route<'_> {
    /// The methods the resource takes, for `Allow`.
    pub fn allow(route: Option<&Route<'_>>) -> &'static str {
        match route {
            None => "GET, HEAD",
            Some(Route::List(_)) => "GET, HEAD, POST",
            Some(Route::One(..)) => "GET, HEAD, DELETE",
            Some(Route::Restart(..)) => "POST",
        }
    }
}

/// One push destination.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushJson {
    /// `idle` (the path has no publisher), or the running push's state (`connecting`, `live`,
    /// `retrying`, `refused`), with its counters.
    #[serde(flatten)]
    pub status: PushStatus,
}

/// The push destinations of a path.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushList {
    pub path: String,
    /// The configuration table they come from (the path's own, or the pattern that governs it);
    /// `null` when no table governs this path.
    pub table: Option<String>,
    pub items: Vec<PushJson>,
}

/// The body of `POST /v1/paths/{name}/pushes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPush {
    /// `rtmp://`, `rtmps://` or `srt://` URL (with its key: it is masked in every answer).
    pub url: String,
}

/// A push added.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushAdded {
    pub id: String,
    /// The URL, its key masked.
    pub url: String,
    /// The configuration table it was added to.
    pub table: String,
    pub applied: Applied,
}

#[derive(OpenApi)]
#[openapi(
    tags((name = "pushes", description = "A path's push destinations: list, add, remove, restart one")),
    // Dispatched by hand from `/v1/paths/{*name}` (path names contain `/`).
    paths(list_doc, add_doc, get_doc, delete_doc, restart_doc),
    components(schemas(PushJson, PushList, NewPush, PushAdded))
)]
struct PushesDoc;

/// The pushes endpoints' documentation, to merge into the API's (their requests arrive through
/// the `/v1/paths/{*name}` route, see [`route`]).
pub fn doc() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(PushesDoc::openapi())
}

/// The URLs `name`'s configuration pushes to, and the table they come from.
fn configured(layers: &Layers, name: &str) -> (Option<String>, Vec<String>) {
    let tables = layers.path_tables();
    let table = crate::config::best_match_name(&tables, name).map(str::to_owned);
    let urls = layers
        .config
        .path(name)
        .map(|p| p.push.urls.clone())
        .unwrap_or_default();
    (table, urls)
}

fn item(api: &Api, path: &str, url: &str) -> PushJson {
    let status = api.pushes.get(path, url).unwrap_or_else(|| PushStatus {
        id: push::push_id(url),
        url: push::masked_url(url),
        state: "idle",
        last_error: None,
        last_error_at: None,
        bytes_sent: 0,
        bitrate: 0,
        reconnects: 0,
        uptime_seconds: None,
        dropped_frames: 0,
    });
    PushJson { status }
}

fn find<'a>(urls: &'a [String], path: &str, id: &str) -> Result<&'a String, HttpError> {
    urls.iter()
        .find(|u| push::push_id(u) == id)
        .ok_or_else(|| HttpError::not_found(format!("path {path:?} has no push destination {id}")))
}

/// `GET` of a pushes resource.
pub async fn get(api: Api, r: Arc<Reloader>, route: Route<'_>) -> Result<Response, HttpError> {
    let layers = r.current();
    match route {
        Route::List(path) => {
            let (table, urls) = configured(&layers, path);
            let items = urls.iter().map(|u| item(&api, path, u)).collect();
            Ok(Json(PushList {
                path: path.to_owned(),
                table,
                items,
            })
            .into_response())
        }
        Route::One(path, id) => {
            let (_, urls) = configured(&layers, path);
            let url = find(&urls, path, id)?;
            Ok(Json(item(&api, path, url)).into_response())
        }
        Route::Restart(..) => Err(HttpError::method_not_allowed("restart is a POST")),
    }
}

/// `POST` of a pushes resource: add (on the list), restart (on one).
pub async fn post(
    api: Api,
    r: Arc<Reloader>,
    route: Route<'_>,
    body: Result<Json<NewPush>, JsonRejection>,
) -> Result<Response, HttpError> {
    match route {
        Route::List(path) => add(r, path, body).await,
        Route::Restart(path, id) => {
            let (_, urls) = configured(&r.current(), path);
            let url = find(&urls, path, id)?.clone();
            if !api.pushes.restart(path, &url, &api.registry).await {
                return Err(HttpError::conflict(format!(
                    "push {id} of {path:?} is not running (the path has no publisher)"
                )));
            }
            Ok(Json(item(&api, path, &url)).into_response())
        }
        Route::One(..) => Err(HttpError::method_not_allowed(
            "POST to .../pushes adds a destination; POST to .../pushes/{id}/restart restarts one",
        )),
    }
}

async fn add(
    r: Arc<Reloader>,
    path: &str,
    body: Result<Json<NewPush>, JsonRejection>,
) -> Result<Response, HttpError> {
    // Every unreadable body (no JSON content type, bad JSON, wrong shape) is a 400.
    let url = body
        .map_err(|e| {
            HttpError::bad_request(format!(
                "the body must be {{\"url\": \"...\"}}: {}",
                e.body_text()
            ))
        })?
        .0
        .url;
    crate::api_config::path_name(path)?;
    push::check_url(&url).map_err(|e| HttpError::bad_request(format!("url: {e}")))?;
    let id = push::push_id(&url);
    let mut table_name = String::new();
    let applied = r
        .change(|state, layers| {
            let mut table = own_table(state, layers, path)?;
            let urls = urls_of(&mut table);
            if urls.iter().any(|u| u.as_str() == Some(&url)) {
                return Err(HttpError::conflict(format!(
                    "path {path:?} already pushes to {} (id {id})",
                    push::masked_url(&url)
                )));
            }
            urls.push(toml::Value::String(url.clone()));
            reload::state_set_path(state, path, table);
            table_name = path.to_owned();
            Ok(())
        })
        .await?;
    let location = format!("/v1/paths/{path}/pushes/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(PushAdded {
            id,
            url: push::masked_url(&url),
            table: table_name,
            applied,
        }),
    )
        .into_response())
}

/// `DELETE` of one push destination.
pub async fn delete(r: Arc<Reloader>, route: Route<'_>) -> Result<Response, HttpError> {
    let Route::One(path, id) = route else {
        return Err(HttpError::method_not_allowed(
            "DELETE takes one destination: .../pushes/{id}",
        ));
    };
    let applied = r
        .change(|state, layers| {
            let mut table = own_table(state, layers, path)?;
            let urls = urls_of(&mut table);
            let before = urls.len();
            urls.retain(|u| u.as_str().is_none_or(|u| push::push_id(u) != id));
            if urls.len() == before {
                return Err(HttpError::not_found(format!(
                    "path {path:?} has no push destination {id}"
                )));
            }
            reload::state_set_path(state, path, table);
            Ok(())
        })
        .await?;
    Ok(Json(applied).into_response())
}

/// The table named `path`, as it is or made from the table that governs `path` now (a copy of
/// its pattern's, or, when no path table exists at all, an empty one beside a new `"*"` table
/// so every other path keeps the defaults it had).
fn own_table(state: &mut toml::Table, layers: &Layers, path: &str) -> Result<toml::Table, HttpError> {
    let tables = layers.path_tables();
    if let Some((t, _)) = tables.get(path) {
        return Ok(t.clone());
    }
    if tables.is_empty() {
        reload::state_set_path(state, "*", toml::Table::new());
        return Ok(toml::Table::new());
    }
    match crate::config::best_match_name(&tables, path) {
        Some(pattern) => Ok(tables[pattern].0.clone()),
        None => Err(HttpError::not_found(format!(
            "no path table matches {path:?}: add one first (PUT /v1/config/paths/{path})"
        ))),
    }
}

/// The `push.urls` array of a path table (made if missing).
fn urls_of(table: &mut toml::Table) -> &mut Vec<toml::Value> {
    let push = table
        .entry("push")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !push.is_table() {
        *push = toml::Value::Table(toml::Table::new());
    }
    let push = push.as_table_mut().expect("a table");
    let urls = push
        .entry("urls")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    if !urls.is_array() {
        *urls = toml::Value::Array(Vec::new());
    }
    urls.as_array_mut().expect("an array")
}

// Documentation only: the requests are dispatched from `/v1/paths/{*name}` to the functions above.

/// The push destinations of a path (or pattern).
#[utoipa::path(get, path = "/v1/paths/{name}/pushes", tag = "pushes",
    params(("name" = String, Path, description = "The path name (or pattern), e.g. live/cam1")),
    responses((status = 200, description = "The destinations", body = PushList)))]
#[allow(dead_code)]
async fn list_doc() {}

/// Adds a push destination to a path: written to the state file and started at once on a
/// live path, without touching the path's other outputs.
#[utoipa::path(post, path = "/v1/paths/{name}/pushes", tag = "pushes",
    params(("name" = String, Path, description = "The path name (or pattern)")),
    request_body(content = NewPush, description = "{\"url\": \"rtmp://a.rtmp.youtube.com/live2/KEY\"}"),
    responses(
        (status = 201, description = "Added and applied; `Location` is the new destination", body = PushAdded),
        (status = 400, description = "Bad URL or refused configuration", body = ErrorBody),
        (status = 404, description = "No path table matches the path", body = ErrorBody),
        (status = 409, description = "The path already pushes to that URL", body = ErrorBody)))]
#[allow(dead_code)]
async fn add_doc() {}

/// One push destination.
#[utoipa::path(get, path = "/v1/paths/{name}/pushes/{id}", tag = "pushes",
    params(("name" = String, Path, description = "The path name (or pattern)"),
           ("id" = String, Path, description = "The destination's id (six hex digits)", pattern = "^[0-9a-f]{6}$")),
    responses(
        (status = 200, description = "The destination", body = PushJson),
        (status = 404, description = "No such destination", body = ErrorBody)))]
#[allow(dead_code)]
async fn get_doc() {}

/// Removes a push destination: its connection ends, nothing else does.
#[utoipa::path(delete, path = "/v1/paths/{name}/pushes/{id}", tag = "pushes",
    params(("name" = String, Path, description = "The path name (or pattern)"),
           ("id" = String, Path, description = "The destination's id (six hex digits)", pattern = "^[0-9a-f]{6}$")),
    responses(
        (status = 200, description = "Removed and applied", body = Applied),
        (status = 404, description = "No such destination", body = ErrorBody)))]
#[allow(dead_code)]
async fn delete_doc() {}

/// Drops a destination's connection and reconnects at once (backoff reset), without touching
/// the others.
#[utoipa::path(post, path = "/v1/paths/{name}/pushes/{id}/restart", tag = "pushes",
    params(("name" = String, Path, description = "The path name"),
           ("id" = String, Path, description = "The destination's id (six hex digits)", pattern = "^[0-9a-f]{6}$")),
    responses(
        (status = 200, description = "Restarted: its state now", body = PushJson),
        (status = 404, description = "No such destination", body = ErrorBody),
        (status = 409, description = "Not running (the path has no publisher)", body = ErrorBody)))]
#[allow(dead_code)]
async fn restart_doc() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("live/x/pushes"), Some(Route::List("live/x")));
        assert_eq!(route("/live/*/pushes"), Some(Route::List("live/*")));
        assert_eq!(
            route("live/x/pushes/0a1b2c"),
            Some(Route::One("live/x", "0a1b2c"))
        );
        assert_eq!(
            route("live/x/pushes/0a1b2c/restart"),
            Some(Route::Restart("live/x", "0a1b2c"))
        );
        assert_eq!(route("live/x"), None);
        assert_eq!(route("pushes"), None);
        // Any id is routed (and answered 404 when unknown), so that every method on it is
        // answered by the pushes resource.
        assert_eq!(
            route("live/x/pushes/nothex"),
            Some(Route::One("live/x", "nothex"))
        );
        assert_eq!(route("live/pushes/x/restart"), Some(Route::Restart("live", "x")));
        assert_eq!(route("live/x/pushes/"), None);
    }

    #[test]
    fn urls_array_is_made_where_missing() {
        let mut t = toml::Table::new();
        urls_of(&mut t).push(toml::Value::String("rtmp://h/a/k".into()));
        urls_of(&mut t).push(toml::Value::String("rtmp://h/a/k2".into()));
        assert_eq!(t["push"]["urls"].as_array().map(Vec::len), Some(2));
    }
}
