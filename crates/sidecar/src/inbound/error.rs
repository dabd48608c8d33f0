//! Every error the sidecar answers itself, each with its status, OpenAI error type and code,
//! in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::body::{Body, full};

/// An error answered by the sidecar.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum ApiError {
    /// The body is not JSON.
    #[error("The request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not an object, or a field has the wrong type.
    #[error("{0}")]
    InvalidRequest(String),
    /// No `model`.
    #[error("You must provide a model parameter.")]
    MissingModel,
    /// `model` is not a non-empty string.
    #[error("`model` must be a non-empty string.")]
    InvalidModel,
    /// The model name cannot be put into the upstream URL path.
    #[error(
        "The model name `{0}` holds characters that cannot be used in the upstream URL ('/', '..', '?', '#' or control characters)."
    )]
    InvalidModelName(String),
    /// An `x-llmroute-*` request header is malformed.
    #[error("{0}")]
    InvalidHeader(&'static str),
    /// The prompt fits no candidate's context window and no context-window fallback can take it.
    #[error(
        "The prompt of about {tokens} tokens exceeds the context window of every deployment of `{model}` and of its context-window fallbacks."
    )]
    ContextLengthExceeded { model: String, tokens: u64 },
    /// The request body could not be read.
    #[error("The request body could not be read: {0}")]
    InvalidBody(String),
    /// Unknown path.
    #[error("Unknown request URL: {method} {path}.")]
    UnknownUrl { method: String, path: String },
    /// Wrong method on a routed path.
    #[error("{0} accepts POST only.")]
    MethodNotAllowed(String),
    /// The name is not callable by this team.
    #[error("The model `{model}` does not exist or team `{team}` has no access to it.")]
    ModelNotFound { model: String, team: String },
    /// The body did not arrive in time.
    #[error("The request body did not arrive in time.")]
    BodyTimeout,
    /// The body is larger than `--max-body-bytes`.
    #[error("The request body exceeds the limit of {0} bytes.")]
    BodyTooLarge(usize),
    /// Every candidate is at a limit.
    #[error("Every deployment of `{0}` is at its rpm, tpm or concurrency limit; retry later.")]
    RateLimited(String),
    /// No snapshot applied yet.
    #[error("llmroute has no routing snapshot yet; retry shortly.")]
    NoSnapshot,
    /// Nothing eligible (cooling down, unhealthy).
    #[error("No deployment of `{0}` is eligible now (cooling down or unhealthy); retry later.")]
    NoneEligible(String),
    /// Request bodies in memory are at `--max-buffered-body-bytes`.
    #[error("The sidecar is holding its limit of request bodies in memory; retry shortly.")]
    Overloaded,
    /// Every attempt failed; `status` is the last upstream status (502 without one).
    #[error("{message}")]
    UpstreamFailed { status: StatusCode, message: String, attempts: Value },
    /// The request deadline passed before an upstream answered.
    #[error("{message}")]
    DeadlineExceeded { message: String, attempts: Value },
    /// Feedback for an answer this sidecar does not remember (unknown, expired, already
    /// rated, or from a group that does not learn).
    #[error(
        "No answer `{0}` to give feedback on: it is unknown to this sidecar, older than an hour, already rated, or not from an adaptive group."
    )]
    ResponseNotFound(String),
}

/// Seconds a client is asked to wait after a 503 it can retry.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl ApiError {
    /// HTTP status, OpenAI error type and code.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        const INVALID: &str = "invalid_request_error";
        match self {
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_json"),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_request"),
            Self::MissingModel => (StatusCode::BAD_REQUEST, INVALID, "missing_model"),
            Self::InvalidModel => (StatusCode::BAD_REQUEST, INVALID, "invalid_model"),
            Self::InvalidModelName(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_model_name"),
            Self::InvalidHeader(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_header"),
            Self::ContextLengthExceeded { .. } => (StatusCode::BAD_REQUEST, INVALID, "context_length_exceeded"),
            Self::InvalidBody(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_body"),
            Self::UnknownUrl { .. } => (StatusCode::NOT_FOUND, INVALID, "unknown_url"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, INVALID, "method_not_allowed"),
            Self::ModelNotFound { .. } => (StatusCode::NOT_FOUND, INVALID, "model_not_found"),
            Self::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, INVALID, "request_timeout"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, "request_too_large"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limited"),
            Self::NoSnapshot => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "no_snapshot"),
            Self::NoneEligible(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "no_eligible_deployment"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "overloaded"),
            Self::UpstreamFailed { status, .. } => (*status, "upstream_error", "upstream_failed"),
            Self::DeadlineExceeded { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout", "deadline_exceeded"),
            Self::ResponseNotFound(_) => (StatusCode::NOT_FOUND, INVALID, "response_not_found"),
        }
    }

    /// HTTP status.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// Machine-readable code.
    #[cfg(test)]
    pub fn code(&self) -> &'static str {
        self.parts().2
    }

    /// The response carrying this error.
    pub fn response(&self) -> Response<Body> {
        let (status, kind, code) = self.parts();
        let mut error = json!({"message": self.to_string(), "type": kind, "param": null, "code": code});
        if let (Self::UpstreamFailed { attempts, .. } | Self::DeadlineExceeded { attempts, .. }, Some(map)) =
            (self, error.as_object_mut())
        {
            map.insert("attempts".into(), attempts.clone());
        }
        let mut response = Response::new(full(json!({ "error": error }).to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, Self::NoSnapshot | Self::NoneEligible(_) | Self::Overloaded) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn every_error_is_openai_shaped() {
        let errors = [
            ApiError::MissingModel,
            ApiError::Overloaded,
            ApiError::ContextLengthExceeded { model: "m".into(), tokens: 9 },
            ApiError::UpstreamFailed { status: StatusCode::BAD_GATEWAY, message: "x".into(), attempts: json!([]) },
        ];
        for e in errors {
            let r = e.response();
            assert_eq!(r.status(), e.status());
            let body: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
            assert_eq!(body["error"]["code"], e.code());
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(body["error"]["type"].is_string());
        }
        assert_eq!(ApiError::Overloaded.response().headers()[header::RETRY_AFTER], "1");
    }
}
