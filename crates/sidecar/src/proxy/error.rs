//! OpenAI-shaped error responses: `{"error": {"message", "type", "param", "code"}}`.

use http::{Response, StatusCode, header};
use serde_json::json;

use super::body::{Body, full};

/// An error the sidecar answers itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI error type, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// Machine-readable code, e.g. `model_not_found`.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
}

impl ApiError {
    /// 400 invalid_request_error.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, kind: "invalid_request_error", code, message: message.into() }
    }

    /// 404 model_not_found for this team.
    pub fn model_not_found(model: &str, team: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            message: format!("The model `{model}` does not exist or team `{team}` has no access to it."),
        }
    }

    /// 503: no snapshot applied yet.
    pub fn no_snapshot() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "service_unavailable",
            code: "no_snapshot",
            message: "llmroute has no routing snapshot yet; retry shortly".into(),
        }
    }

    /// The response carrying this error.
    pub fn response(&self) -> Response<Body> {
        error_response(self.status, self.kind, self.code, &self.message, None)
    }
}

/// An OpenAI-shaped error response, with optional extra fields inside `error`.
pub fn error_response(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
    extra: Option<(&str, serde_json::Value)>,
) -> Response<Body> {
    let mut error = json!({"message": message, "type": kind, "param": null, "code": code});
    if let (Some((key, value)), Some(map)) = (extra, error.as_object_mut()) {
        map.insert(key.to_owned(), value);
    }
    let mut response = Response::new(full(json!({ "error": error }).to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
