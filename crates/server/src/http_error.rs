//! The one error response of every HTTP surface (delivery, WebRTC, API): a status and a message,
//! sent as `{"error": "message"}` with `Content-Type: application/json` and
//! `Cache-Control: no-cache`, so scripts and pages read every refusal the same way.
//!
//! Successful responses keep their own formats (playlists, SDP, pages, FLV). The only error
//! responses that are not this shape are the ones hyper sends before a request reaches a handler
//! (400 for a malformed request, 431 for oversized headers: empty bodies).

use std::fmt;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// An HTTP error: status code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

// Some constructors wait for their first user (the API on 9997).
#[allow(dead_code)]
impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }

    /// 400
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401; add a `WWW-Authenticate` header beside it.
    pub fn unauthorized(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403
    pub fn forbidden(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404
    pub fn not_found(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 405
    pub fn method_not_allowed(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }

    /// 409
    pub fn conflict(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 413
    pub fn payload_too_large(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 415
    pub fn unsupported_media_type(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    /// 500
    pub fn internal(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 503
    pub fn unavailable(message: impl Into<String>) -> HttpError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The JSON body: `{"error": "message"}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for HttpError {}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            self.body(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_and_headers() {
        let r = HttpError::not_found("no \"stream\" on path a/b").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let e = HttpError::conflict("x\ny");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v, serde_json::json!({"error": "x\ny"}));
        assert_eq!(HttpError::forbidden("f").status, StatusCode::FORBIDDEN);
        assert_eq!(HttpError::bad_request("b").to_string(), "400 Bad Request: b");
    }
}
