//! The JSON form of the event bus's events: one shape, defined once, that webhooks POST, the
//! API's Server-Sent Events stream sends as `data:`, and docs/events.md describes.
//!
//! Every event is an object with a `type` (one of [`TYPES`]), a `time` (RFC 3339, UTC,
//! milliseconds) and the fields of its type:
//!
//! ```json
//! {"type":"published","path":"live/cam1","session":3,"protocol":"rtmp","time":"2026-11-30T23:59:59.123Z"}
//! ```
//!
//! A consumer that fell behind and lost events gets a `resync` event with the count instead
//! (`{"type":"resync","missed":12,...}`): its picture of the server may be stale, and the API's
//! `GET /v1/paths` and `/v1/sessions` give the current state.

use std::time::SystemTime;

use serde::Serialize;
use sluice_hls::playlist::rfc3339_millis;
use sluice_media::events::{Received, ServerEvent, Stamped};

/// Every `type` an event can have, in the order docs/events.md lists them.
pub const TYPES: &[&str] = &[
    "published",
    "unpublished",
    "path_ended",
    "session_opened",
    "session_closed",
    "health",
    "output",
    "access_denied",
    "recording",
    "resync",
];

/// What happened, with its details. Serialized with its `type` tag beside the fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A publisher started a stream on the path (first time, or back within the grace period).
    Published {
        path: String,
        session: u64,
        protocol: &'static str,
    },
    /// The publisher left; readers wait for the grace period.
    Unpublished { path: String, session: u64 },
    /// The path has no publisher and its grace period is over; readers were closed.
    PathEnded { path: String },
    /// A session opened: a publisher, a reader (read start), an output or a transform.
    SessionOpened {
        session: u64,
        protocol: &'static str,
        role: &'static str,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    /// A session ended (for a reader: read stop), with the reason it gave.
    SessionClosed {
        session: u64,
        protocol: &'static str,
        role: &'static str,
        path: String,
        reason: String,
    },
    /// A path's health changed: `check` names the check (audio, stall, ...), `state` its new state.
    Health {
        path: String,
        check: &'static str,
        state: &'static str,
        detail: String,
    },
    /// A path output (HLS packager, recorder, push) changed state.
    Output {
        path: String,
        name: String,
        state: &'static str,
        detail: String,
    },
    /// A recording segment was created, completed or deleted, or recording failed or resumed.
    Recording {
        path: String,
        /// `created`, `completed`, `deleted`, `error`, `resumed`.
        state: &'static str,
        file: String,
        /// Seconds of media (completed and deleted segments).
        duration: f64,
        bytes: u64,
        detail: String,
    },
    /// An access request was refused.
    AccessDenied {
        action: &'static str,
        path: String,
        protocol: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
        /// A fixed code: no_credentials, wrong_credentials, not_permitted, ip_denied,
        /// path_not_configured, bad_token, token_expired, link_expired, bad_signature,
        /// callback_refused, callback_failed, slowed_down.
        code: &'static str,
        reason: String,
    },
    /// This consumer fell behind and `missed` events were dropped before the next one.
    Resync { missed: u64 },
}

/// One event as sent: its body and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventJson {
    #[serde(flatten)]
    pub body: EventBody,
    /// RFC 3339, UTC, with milliseconds.
    pub time: String,
}

impl EventJson {
    /// The JSON form of what a bus consumer received; `None` for an event kind this version
    /// does not describe (the bus's enum may grow).
    pub fn from_received(r: &Received) -> Option<EventJson> {
        match r {
            Received::Event(s) => Self::from_stamped(s),
            Received::Missed(n) => Some(EventJson {
                body: EventBody::Resync { missed: *n },
                time: rfc3339_millis(SystemTime::now()),
            }),
        }
    }

    pub fn from_stamped(s: &Stamped) -> Option<EventJson> {
        let remote = |r: &Option<std::net::SocketAddr>| r.map(|a| a.to_string());
        let body = match &s.event {
            ServerEvent::Published {
                path,
                session,
                protocol,
            } => EventBody::Published {
                path: path.to_string(),
                session: *session,
                protocol,
            },
            ServerEvent::Unpublished { path, session } => EventBody::Unpublished {
                path: path.to_string(),
                session: *session,
            },
            ServerEvent::PathEnded { path } => EventBody::PathEnded {
                path: path.to_string(),
            },
            ServerEvent::SessionOpened {
                id,
                protocol,
                role,
                path,
                remote: r,
            } => EventBody::SessionOpened {
                session: *id,
                protocol,
                role: role.name(),
                path: path.to_string(),
                remote: remote(r),
            },
            ServerEvent::SessionClosed {
                id,
                protocol,
                role,
                path,
                reason,
            } => EventBody::SessionClosed {
                session: *id,
                protocol,
                role: role.name(),
                path: path.to_string(),
                reason: reason.clone(),
            },
            ServerEvent::Health {
                path,
                what,
                state,
                detail,
            } => EventBody::Health {
                path: path.to_string(),
                check: what,
                state,
                detail: detail.clone(),
            },
            ServerEvent::Output {
                path,
                name,
                state,
                detail,
            } => EventBody::Output {
                path: path.to_string(),
                name: name.clone(),
                state,
                detail: detail.clone(),
            },
            ServerEvent::Recording {
                path,
                state,
                file,
                duration,
                bytes,
                detail,
            } => EventBody::Recording {
                path: path.to_string(),
                state,
                file: file.clone(),
                duration: *duration,
                bytes: *bytes,
                detail: detail.clone(),
            },
            ServerEvent::AccessDenied {
                action,
                path,
                protocol,
                remote: r,
                code,
                reason,
            } => EventBody::AccessDenied {
                action,
                path: path.clone(),
                protocol,
                remote: remote(r),
                code,
                reason: reason.clone(),
            },
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        Some(EventJson {
            body,
            time: rfc3339_millis(s.at),
        })
    }

    /// The event's `type` (one of [`TYPES`]): a constant of ours, never text from a client.
    pub fn kind(&self) -> &'static str {
        match self.body {
            EventBody::Published { .. } => "published",
            EventBody::Unpublished { .. } => "unpublished",
            EventBody::PathEnded { .. } => "path_ended",
            EventBody::SessionOpened { .. } => "session_opened",
            EventBody::SessionClosed { .. } => "session_closed",
            EventBody::Health { .. } => "health",
            EventBody::Output { .. } => "output",
            EventBody::AccessDenied { .. } => "access_denied",
            EventBody::Recording { .. } => "recording",
            EventBody::Resync { .. } => "resync",
        }
    }

    /// The compact JSON text (one line: strings escape their newlines).
    pub fn to_json(&self) -> String {
        // Serializing these plain types cannot fail; an empty object is the harmless fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_media::stats::Role;
    use std::time::{Duration, UNIX_EPOCH};

    fn stamped(event: ServerEvent) -> Stamped {
        Stamped {
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            event,
        }
    }

    #[test]
    fn published_has_the_documented_shape() {
        let e = EventJson::from_stamped(&stamped(ServerEvent::Published {
            path: "live/cam1".into(),
            session: 3,
            protocol: "rtmp",
        }))
        .unwrap();
        assert_eq!(e.kind(), "published");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "published",
                "path": "live/cam1",
                "session": 3,
                "protocol": "rtmp",
                "time": "2023-11-14T22:13:20.123Z",
            })
        );
    }

    #[test]
    fn every_kind_is_listed_and_names_its_type() {
        let events = [
            ServerEvent::Unpublished {
                path: "a".into(),
                session: 1,
            },
            ServerEvent::PathEnded { path: "a".into() },
            ServerEvent::SessionOpened {
                id: 2,
                protocol: "srt",
                role: Role::Reader,
                path: "a".into(),
                remote: Some("127.0.0.1:5000".parse().unwrap()),
            },
            ServerEvent::SessionClosed {
                id: 2,
                protocol: "srt",
                role: Role::Reader,
                path: "a".into(),
                reason: "line1\nline2".into(),
            },
            ServerEvent::Health {
                path: "a".into(),
                what: "audio",
                state: "silent",
                detail: "-90 dBFS for 5 s".into(),
            },
            ServerEvent::Output {
                path: "a".into(),
                name: "hls".into(),
                state: "live",
                detail: String::new(),
            },
            ServerEvent::AccessDenied {
                action: "publish",
                path: "a".into(),
                protocol: "rtmp",
                remote: None,
                code: "wrong_credentials",
                reason: "wrong password".into(),
            },
            ServerEvent::Recording {
                path: "a".into(),
                state: "completed",
                file: "./recordings/a/x.mp4".into(),
                duration: 10.0,
                bytes: 1000,
                detail: String::new(),
            },
        ];
        for ev in events {
            let e = EventJson::from_stamped(&stamped(ev)).unwrap();
            let text = e.to_json();
            assert!(!text.contains('\n'), "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], e.kind());
            assert!(TYPES.contains(&e.kind()));
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
        }
        let r = EventJson::from_received(&Received::Missed(7)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["missed"].as_u64()),
            (Some("resync"), Some(7))
        );
    }
}
