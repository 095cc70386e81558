//! The configuration endpoints of the API: read the running configuration (merged, secrets
//! masked, with where each value comes from), change it, and reload it from the files.
//!
//! - `GET /v1/config`: the merged configuration, `sources`, the files, `restart_needed`;
//! - `PATCH /v1/config`: global keys, as a JSON merge patch (RFC 7396) in the configuration's
//!   shape (`{"rtmp": {"chunk_size": 8192}}`; `null` takes a key back out of the state file);
//! - `GET`, `PUT`, `PATCH`, `DELETE /v1/config/paths/{name}`: one `[paths."NAME"]` table;
//! - `POST /v1/config/reload`: read the files again and apply them.
//!
//! A change is laid over the state file's document, validated exactly like a configuration file
//! (refused with 400 and the reason), written atomically to the state file and applied like a
//! reload (see [`crate::reload`]). A secret sent back as `********` (as `GET` shows it) keeps its
//! value. Bodies are JSON objects of at most 64 KiB; every refusal is the one JSON error shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{Api, ErrorBody};
use crate::http_error::HttpError;
use crate::reload::{self, Applied, Reloader, MASK};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

pub(crate) type Reload = Extension<Arc<Reloader>>;

#[derive(OpenApi)]
#[openapi(
    tags((name = "config", description = "The running configuration: read, change (written to the state file), reload")),
    // Registered by hand in `routes`: path names contain `/` (`{*name}` in axum).
    paths(get_path, put_path, patch_path, delete_path)
)]
struct ConfigDoc;

/// The configuration endpoints, to merge into the API's router. Needs the [`Reloader`] as a
/// request extension.
pub fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ConfigDoc::openapi())
        .routes(routes!(get_config, patch_config))
        .routes(routes!(reload_config))
        .route(
            "/v1/config/paths/{*name}",
            axum::routing::get(get_path)
                .put(put_path)
                .patch(patch_path)
                .delete(delete_path),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// A JSON object in the configuration's shape (any keys; validated like a configuration file).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ConfigObject(serde_json::Map<String, serde_json::Value>);

impl utoipa::PartialSchema for ConfigObject {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "Keys and tables of the configuration (docs/configuration.md), durations as strings (\"10s\")",
            ))
            .into()
    }
}

impl ToSchema for ConfigObject {}

/// The running configuration.
#[derive(Serialize, ToSchema)]
pub struct ConfigJson {
    /// The merged configuration: built-in defaults, the configuration file, the state file, the
    /// `SLUICE_*` environment; each path table resolved over `path_defaults`. Secrets masked.
    #[schema(value_type = Object)]
    config: serde_json::Value,
    /// Where each value comes from, by dotted key (`rtmp.listen`,
    /// `paths."live/cam1".access.read_token`): `file`, `state` (changed through the API), `env`,
    /// `default`, or for a path's key its own table does not set, `path_defaults`.
    sources: BTreeMap<String, String>,
    files: FilesJson,
    /// Keys whose configured value differs from the one the server runs with: they need a restart.
    restart_needed: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FilesJson {
    /// The configuration file; null when running on the built-in configuration.
    config: Option<String>,
    /// The state file (changes made through the API); null on the built-in configuration
    /// without `--state`: changes are then kept in memory only, until a restart.
    state: Option<String>,
}

/// One path table.
#[derive(Serialize, ToSchema)]
pub struct PathTableJson {
    name: String,
    /// `file` or `state` (added or replaced through the API).
    origin: String,
    /// The path's own table, as written. Secrets masked.
    #[schema(value_type = Object)]
    table: serde_json::Value,
    /// Its settings: `path_defaults` with the table laid over it. Secrets masked.
    #[schema(value_type = Object)]
    resolved: serde_json::Value,
}

fn json_of(t: &toml::Table) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    reload::mask_json(&mut v);
    v
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, HttpError> {
    b.map(|Json(v)| v)
        .map_err(|e| HttpError::new(e.status(), e.body_text()))
}

fn refused(e: String) -> HttpError {
    HttpError::bad_request(reload::mask_message(&e))
}

/// The running configuration, merged, with where each value comes from.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, description = "The running configuration", body = ConfigJson)))]
async fn get_config(Extension(r): Reload) -> Json<ConfigJson> {
    let layers = r.current();
    Json(ConfigJson {
        config: json_of(&layers.merged()),
        sources: layers
            .sources()
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect(),
        files: FilesJson {
            config: r.sources().file.as_ref().map(|f| f.display().to_string()),
            state: r.sources().state.as_ref().map(|f| f.display().to_string()),
        },
        restart_needed: r.restart_needed(),
    })
}

/// Changes global keys (a JSON merge patch in the configuration's shape; `null` takes a key back
/// out of the state file). Path tables are changed under `/v1/config/paths/{name}`.
#[utoipa::path(patch, path = "/v1/config", tag = "config",
    request_body(content = ConfigObject, description = "e.g. {\"rtmp\": {\"chunk_size\": 8192}}"),
    responses(
        (status = 200, description = "Applied", body = Applied),
        (status = 400, description = "Refused: the reason", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not a JSON object", body = ErrorBody),
    ))]
async fn patch_config(
    Extension(r): Reload,
    b: Result<Json<ConfigObject>, JsonRejection>,
) -> Result<Json<Applied>, HttpError> {
    let patch = body(b)?.0;
    if patch.contains_key("paths") {
        return Err(HttpError::bad_request(
            "path tables are changed under /v1/config/paths/{name}",
        ));
    }
    if patch.contains_key("state") {
        return Err(HttpError::bad_request("unknown key `state`"));
    }
    r.change(|state, _| merge_patch(state, &patch, &mut Vec::new(), None))
        .await
        .map(Json)
}

/// Reads the configuration file and the state file again and applies them; a bad file is
/// refused with its error and the running configuration stays.
#[utoipa::path(post, path = "/v1/config/reload", tag = "config",
    responses(
        (status = 200, description = "Applied", body = Applied),
        (status = 400, description = "Refused: the file's error, with its line", body = ErrorBody),
    ))]
async fn reload_config(Extension(r): Reload) -> Result<Json<Applied>, HttpError> {
    r.reload("reload through the API")
        .await
        .map(Json)
        .map_err(refused)
}

pub(crate) fn path_name(name: &str) -> Result<String, HttpError> {
    let name = name.trim_start_matches('/');
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~-/*".contains(&b));
    let ok_segments = name.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
    if name.is_empty() || name.len() > 256 || !ok_chars || !ok_segments {
        return Err(HttpError::bad_request(format!(
            "invalid path name {name:?}: segments of letters, digits, '.', '_', '~', '-' and '*', separated by single '/'"
        )));
    }
    Ok(name.to_owned())
}

fn not_configured(name: &str) -> HttpError {
    HttpError::not_found(format!("no [paths.{name:?}] table is configured"))
}

/// One path table: its own keys and its resolved settings.
#[utoipa::path(get, path = "/v1/config/paths/{name}", tag = "config",
    params(("name" = String, Path, description = "The path name or pattern (may contain '/')")),
    responses(
        (status = 200, description = "The table", body = PathTableJson),
        (status = 404, description = "No such table", body = ErrorBody),
    ))]
async fn get_path(Extension(r): Reload, Path(name): Path<String>) -> Result<Json<PathTableJson>, HttpError> {
    let name = name.trim_start_matches('/');
    let layers = r.current();
    let tables = layers.path_tables();
    let (table, origin) = tables.get(name).ok_or_else(|| not_configured(name))?;
    let merged = layers.merged();
    let resolved = match merged.get("paths").and_then(|p| p.get(name)) {
        Some(toml::Value::Table(t)) => json_of(t),
        _ => serde_json::Value::Null,
    };
    Ok(Json(PathTableJson {
        name: name.to_owned(),
        origin: (*origin).to_owned(),
        table: json_of(table),
        resolved,
    }))
}

/// Adds or replaces a path table (the body is the whole table; `{}` takes every default).
#[utoipa::path(put, path = "/v1/config/paths/{name}", tag = "config",
    params(("name" = String, Path, description = "The path name or pattern (may contain '/')")),
    request_body(content = ConfigObject, description = "The path's table, e.g. {\"grace_period\": \"2s\", \"access\": {\"publish_token\": \"t\"}}"),
    responses(
        (status = 200, description = "Replaced and applied", body = Applied),
        (status = 201, description = "Added and applied", body = Applied),
        (status = 400, description = "Refused: the reason", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not a JSON object", body = ErrorBody),
    ))]
async fn put_path(
    Extension(r): Reload,
    Path(name): Path<String>,
    b: Result<Json<ConfigObject>, JsonRejection>,
) -> Result<Response, HttpError> {
    let name = path_name(&name)?;
    let new = body(b)?.0;
    let mut created = false;
    let applied = r
        .change(|state, layers| {
            let current = layers.path_tables().remove(&name).map(|(t, _)| t);
            created = current.is_none();
            let mut table = toml::Table::new();
            merge_patch(&mut table, &new, &mut Vec::new(), current.as_ref())?;
            keep_masked(&mut table, current.as_ref(), &new, &mut Vec::new())?;
            reload::state_set_path(state, &name, table);
            Ok(())
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)).into_response())
}

/// Changes keys of a path table (a JSON merge patch; `null` removes a key, which then comes
/// from `path_defaults`).
#[utoipa::path(patch, path = "/v1/config/paths/{name}", tag = "config",
    params(("name" = String, Path, description = "The path name or pattern (may contain '/')")),
    request_body(content = ConfigObject, description = "e.g. {\"access\": {\"read_token\": \"new\"}}"),
    responses(
        (status = 200, description = "Applied", body = Applied),
        (status = 400, description = "Refused: the reason", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not a JSON object", body = ErrorBody),
    ))]
async fn patch_path(
    Extension(r): Reload,
    Path(name): Path<String>,
    b: Result<Json<ConfigObject>, JsonRejection>,
) -> Result<Json<Applied>, HttpError> {
    let name = name.trim_start_matches('/').to_owned();
    let patch = body(b)?.0;
    r.change(|state, layers| {
        let mut table = layers
            .path_tables()
            .remove(&name)
            .map(|(t, _)| t)
            .ok_or_else(|| not_configured(&name))?;
        merge_patch(&mut table, &patch, &mut Vec::new(), None)?;
        reload::state_set_path(state, &name, table);
        Ok(())
    })
    .await
    .map(Json)
}

/// Deletes a path table: its sessions end (with the reason in the log).
#[utoipa::path(delete, path = "/v1/config/paths/{name}", tag = "config",
    params(("name" = String, Path, description = "The path name or pattern (may contain '/')")),
    responses(
        (status = 200, description = "Deleted and applied", body = Applied),
        (status = 404, description = "No such table", body = ErrorBody),
    ))]
async fn delete_path(Extension(r): Reload, Path(name): Path<String>) -> Result<Json<Applied>, HttpError> {
    let name = name.trim_start_matches('/').to_owned();
    r.change(|state, layers| {
        if !layers.path_tables().contains_key(&name) {
            return Err(not_configured(&name));
        }
        reload::state_remove_path(state, layers, &name);
        Ok(())
    })
    .await
    .map(Json)
}

/// Lays a JSON merge patch over a TOML table: objects merge, `null` removes, a masked secret
/// keeps what is there, anything else replaces. Masked push URLs stand for the URLs of
/// `reference` (the table being replaced, for a `PUT`) or else of `target`.
fn merge_patch(
    target: &mut toml::Table,
    patch: &serde_json::Map<String, serde_json::Value>,
    keys: &mut Vec<String>,
    reference: Option<&toml::Table>,
) -> Result<(), HttpError> {
    for (k, v) in patch {
        keys.push(k.clone());
        match v {
            serde_json::Value::Null => {
                target.remove(k);
            }
            serde_json::Value::Object(o) => {
                let mut sub = match target.remove(k) {
                    Some(toml::Value::Table(t)) => t,
                    _ => toml::Table::new(),
                };
                let sub_reference = reference.and_then(|r| r.get(k)).and_then(toml::Value::as_table);
                merge_patch(&mut sub, o, keys, sub_reference)?;
                target.insert(k.clone(), toml::Value::Table(sub));
            }
            serde_json::Value::String(s) if s == MASK && reload::is_secret(k) => {}
            serde_json::Value::Array(a) if k == "urls" => {
                let old = reference.and_then(|r| r.get(k)).or(target.get(k));
                let v = unmask_urls(a, old, keys)?;
                target.insert(k.clone(), v);
            }
            other => {
                target.insert(k.clone(), to_toml(other, keys)?);
            }
        }
        keys.pop();
    }
    Ok(())
}

/// Push URLs sent back as `GET` shows them (key masked) take the URL they stand for.
fn unmask_urls(
    sent: &[serde_json::Value],
    old: Option<&toml::Value>,
    keys: &[String],
) -> Result<toml::Value, HttpError> {
    let old: Vec<&str> = match old {
        Some(toml::Value::Array(a)) => a.iter().filter_map(toml::Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    // Each URL stands for one masked entry, in order: two destinations that mask alike (the
    // same host, keys with the same first characters) keep their own keys.
    let mut used = vec![false; old.len()];
    for v in sent {
        let serde_json::Value::String(u) = v else {
            return Err(HttpError::bad_request(format!(
                "{}: a list of URLs",
                keys.join(".")
            )));
        };
        if !u.contains("****") {
            out.push(toml::Value::String(u.clone()));
            continue;
        }
        let found = old
            .iter()
            .enumerate()
            .position(|(i, o)| !used[i] && crate::push::masked_url(o) == *u);
        match found {
            Some(i) => {
                used[i] = true;
                out.push(toml::Value::String(old[i].to_owned()));
            }
            None => {
                return Err(HttpError::bad_request(format!(
                    "{}: {u:?} is masked but no URL here has that mask: send the whole URL",
                    keys.join(".")
                )))
            }
        }
    }
    Ok(toml::Value::Array(out))
}

/// A masked secret in a replaced table takes the value it had; refused where it had none.
fn keep_masked(
    table: &mut toml::Table,
    current: Option<&toml::Table>,
    sent: &serde_json::Map<String, serde_json::Value>,
    keys: &mut Vec<String>,
) -> Result<(), HttpError> {
    for (k, v) in sent {
        keys.push(k.clone());
        let old = current.and_then(|c| c.get(k));
        match v {
            serde_json::Value::String(s) if s == MASK && reload::is_secret(k) => match old {
                Some(old) => {
                    table.insert(k.clone(), old.clone());
                }
                None => {
                    return Err(HttpError::bad_request(format!(
                        "{}: {MASK} stands for a secret that is set; this one is not: send its value",
                        keys.join(".")
                    )))
                }
            },
            serde_json::Value::Object(o) => {
                if let Some(toml::Value::Table(sub)) = table.get_mut(k) {
                    let old = match old {
                        Some(toml::Value::Table(t)) => Some(t),
                        _ => None,
                    };
                    keep_masked(sub, old, o, keys)?;
                }
            }
            serde_json::Value::Array(a) if k == "urls" => {
                let v = unmask_urls(a, old, keys)?;
                table.insert(k.clone(), v);
            }
            _ => {}
        }
        keys.pop();
    }
    Ok(())
}

fn to_toml(v: &serde_json::Value, keys: &[String]) -> Result<toml::Value, HttpError> {
    let bad = |what: &str| HttpError::bad_request(format!("{}: {what}", keys.join(".")));
    Ok(match v {
        serde_json::Value::Null => return Err(bad("null is only allowed as a key's value, to remove it")),
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(_)) if n.is_u64() => return Err(bad("number out of range")),
            (None, Some(f)) => toml::Value::Float(f),
            (None, None) => return Err(bad("number out of range")),
        },
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(a) => {
            toml::Value::Array(a.iter().map(|x| to_toml(x, keys)).collect::<Result<_, _>>()?)
        }
        serde_json::Value::Object(o) => {
            let mut t = toml::Table::new();
            let mut keys = keys.to_vec();
            merge_patch(&mut t, o, &mut keys, None)?;
            toml::Value::Table(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_patch_rules() {
        let mut t: toml::Table =
            toml::from_str("grace_period = \"1s\"\n[access]\npublish_user = \"u\"\npublish_pass = \"p\"\n")
                .unwrap();
        let p = obj(serde_json::json!({
            "grace_period": null,
            "reader_queue": 5,
            "access": {"publish_pass": MASK, "read_token": "t"},
            "srt": {"latency": "1s"}
        }));
        merge_patch(&mut t, &p, &mut Vec::new(), None).unwrap();
        assert!(t.get("grace_period").is_none());
        assert_eq!(t["reader_queue"].as_integer(), Some(5));
        assert_eq!(
            t["access"]["publish_pass"].as_str(),
            Some("p"),
            "a masked secret keeps its value"
        );
        assert_eq!(t["access"]["read_token"].as_str(), Some("t"));
        assert_eq!(t["srt"]["latency"].as_str(), Some("1s"));
        let e = merge_patch(
            &mut t,
            &obj(serde_json::json!({"a": [1, null]})),
            &mut Vec::new(),
            None,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = merge_patch(
            &mut t,
            &obj(serde_json::json!({"a": u64::MAX})),
            &mut Vec::new(),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
    }

    #[test]
    fn masked_secrets_in_a_replaced_table() {
        let current: toml::Table =
            toml::from_str("[access]\npublish_user = \"u\"\npublish_pass = \"p\"\n").unwrap();
        let sent = obj(serde_json::json!({"access": {"publish_user": "v", "publish_pass": MASK}}));
        let mut t = toml::Table::new();
        merge_patch(&mut t, &sent, &mut Vec::new(), None).unwrap();
        keep_masked(&mut t, Some(&current), &sent, &mut Vec::new()).unwrap();
        assert_eq!(t["access"]["publish_pass"].as_str(), Some("p"));
        assert_eq!(t["access"]["publish_user"].as_str(), Some("v"));
        let mut t = toml::Table::new();
        merge_patch(&mut t, &sent, &mut Vec::new(), None).unwrap();
        let e = keep_masked(&mut t, None, &sent, &mut Vec::new()).unwrap_err();
        assert!(e.message.contains("access.publish_pass"), "{e}");
    }

    #[test]
    fn push_urls_are_masked_and_masked_urls_keep_their_key() {
        let key = "rtmp://yt/live2/abcd-efgh-ijkl-mnop";
        let mut shown = serde_json::json!({"push": {"urls": [key, "rtmp://h/app/short"]}});
        reload::mask_json(&mut shown);
        assert_eq!(shown["push"]["urls"][0], "rtmp://yt:1935/live2/abcd****");
        assert_eq!(shown["push"]["urls"][1], "rtmp://h:1935/app/****");
        let mut srt = serde_json::json!({"push": {"urls": ["srt://h:9000?streamid=publish:x&passphrase=secretsecret"]}});
        reload::mask_json(&mut srt);
        assert_eq!(srt["push"]["urls"][0], "srt://h:9000?****");
        // Sent back as shown, plus a new one: the masked one keeps its whole URL.
        let current: toml::Table = toml::from_str(&format!("[push]\nurls = [{key:?}]\n")).unwrap();
        let sent =
            obj(serde_json::json!({"push": {"urls": ["rtmp://yt:1935/live2/abcd****", "rtmp://new/app/k"]}}));
        let mut t = current.clone();
        merge_patch(&mut t, &sent, &mut Vec::new(), None).unwrap();
        let urls = t["push"]["urls"].as_array().unwrap();
        assert_eq!(urls[0].as_str(), Some(key));
        assert_eq!(urls[1].as_str(), Some("rtmp://new/app/k"));
        // Two destinations that mask alike keep their own keys, in order.
        let twins: toml::Table =
            toml::from_str("[push]\nurls = [\"rtmp://h/app/cam1\", \"rtmp://h/app/cam2\"]\n").unwrap();
        let both =
            obj(serde_json::json!({"push": {"urls": ["rtmp://h:1935/app/****", "rtmp://h:1935/app/****"]}}));
        let mut t = twins.clone();
        merge_patch(&mut t, &both, &mut Vec::new(), None).unwrap();
        assert_eq!(t, twins);
        let sent_once = obj(serde_json::json!({"push": {"urls": ["rtmp://h:1935/app/****"]}}));
        let mut t = twins.clone();
        merge_patch(&mut t, &sent_once, &mut Vec::new(), None).unwrap();
        assert_eq!(t["push"]["urls"].as_array().unwrap().len(), 1);
        // A whole table sent back (PUT) into a fresh one: the replaced table's URLs stand.
        let mut fresh = toml::Table::new();
        merge_patch(&mut fresh, &sent, &mut Vec::new(), Some(&current)).unwrap();
        assert_eq!(fresh["push"]["urls"][0].as_str(), Some(key));
        let bad = obj(serde_json::json!({"push": {"urls": ["rtmp://yt:1935/live2/zzzz****"]}}));
        let e = merge_patch(&mut current.clone(), &bad, &mut Vec::new(), None).unwrap_err();
        assert!(e.message.contains("push.urls"), "{e}");
    }

    #[test]
    fn path_names() {
        assert_eq!(path_name("live/cam1").unwrap(), "live/cam1");
        assert_eq!(path_name("/live/*").unwrap(), "live/*");
        for bad in ["", "a//b", "a/", "a b", "a/../b", "a\"b"] {
            assert!(path_name(bad).is_err(), "{bad}");
        }
    }
}
