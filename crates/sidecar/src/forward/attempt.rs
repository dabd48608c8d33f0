//! One upstream attempt: send, wait for the response head and, for a success, its first body
//! bytes, all within the attempt's limit. A 2xx whose body fails or is empty before anything
//! reached the client is a malformed answer: an upstream failure like any other.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, response};
use http_body_util::BodyExt;
use llmroute_router::{Class, Outcome, classify};

use crate::body::Body;

/// Most bytes of a failed upstream answer kept for classification and the final error.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// A failed attempt, for classification and the final answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An upstream status with its headers and (the start of) its body; `complete` is false
    /// when the body was longer than [`ERROR_BODY_LIMIT`] (or broke) and was cut.
    Status { status: StatusCode, headers: HeaderMap, body: Bytes, complete: bool },
    /// No answer (or no first body bytes) within the attempt's limit.
    Timeout,
    /// Connect, TLS or protocol failure.
    Transport(String),
    /// A success status whose body broke or was empty before its first byte.
    Malformed(String),
}

impl Failure {
    /// The router's view of the failure.
    pub fn class(&self) -> Class {
        match self {
            Self::Status { status, body, .. } => classify(Outcome::Status { code: status.as_u16(), body }),
            Self::Timeout => classify(Outcome::Timeout),
            Self::Transport(_) | Self::Malformed(_) => classify(Outcome::ConnectError),
        }
    }

    /// A failure of the upstream itself (5xx, connection error, timeout, broken answer), the
    /// only kind that counts as cooldown evidence for the fleet (never a 4xx).
    pub fn is_server_side(&self) -> bool {
        match self {
            Self::Status { status, .. } => status.is_server_error(),
            Self::Timeout | Self::Transport(_) | Self::Malformed(_) => true,
        }
    }

    /// The `outcome` label of `llmroute_upstream_attempts_total`.
    pub fn label(&self) -> &'static str {
        match (self, self.class()) {
            (Self::Timeout, _) => "timeout",
            (Self::Transport(_), _) => "connect_error",
            (Self::Malformed(_), _) => "malformed_response",
            (Self::Status { .. }, Class::ContextWindow) => "context_window",
            (Self::Status { .. }, Class::ClientError) => "client_error",
            (Self::Status { .. }, _) => "error_status",
        }
    }

    /// What happened, for the attempts list (never a credential: statuses and error kinds).
    pub fn describe(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("status {}", status.as_u16()),
            Self::Timeout => "timeout before the first response byte".into(),
            Self::Transport(e) => format!("connect error: {e}"),
            Self::Malformed(e) => format!("malformed response: {e}"),
        }
    }

    /// The upstream's `Retry-After` on a 429 or 503, in milliseconds.
    pub fn retry_after_ms(&self, now: std::time::SystemTime) -> Option<u64> {
        let Self::Status { status, headers, .. } = self else { return None };
        if !matches!(status.as_u16(), 429 | 503) {
            return None;
        }
        let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds.saturating_mul(1000));
        }
        let at = httpdate::parse_http_date(value).ok()?;
        Some(at.duration_since(now).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

/// A success, ready to relay.
pub(crate) struct Answer {
    pub parts: response::Parts,
    pub first: Bytes,
    pub rest: Body,
    /// Time to the response head.
    pub latency: Duration,
}

/// Runs an attempt's exchange (already sent) to its verdict within `limit` of `started`.
pub(crate) async fn exchange(
    sent: impl Future<Output = Result<http::Response<Body>, crate::body::BoxError>>,
    started: Instant,
    limit: Duration,
) -> Result<Answer, Failure> {
    let deadline = tokio::time::Instant::from_std(started + limit);
    let response = match tokio::time::timeout_at(deadline, sent).await {
        Err(_) => return Err(Failure::Timeout),
        Ok(Err(e)) => return Err(Failure::Transport(error_chain(e.as_ref()))),
        Ok(Ok(response)) => response,
    };
    let latency = started.elapsed();
    let (parts, mut body) = response.into_parts();
    if parts.status.as_u16() >= 400 {
        let (bytes, complete) = read_limited(&mut body, deadline).await;
        return Err(Failure::Status { status: parts.status, headers: parts.headers, body: bytes, complete });
    }
    let first = async {
        loop {
            match body.frame().await {
                None => return Err(Failure::Malformed("the answer had no body".into())),
                Some(Err(e)) => return Err(Failure::Malformed(error_chain(e.as_ref()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Ok(data),
                    _ => {}
                },
            }
        }
    };
    match tokio::time::timeout_at(deadline, first).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(failure)) => Err(failure),
        Ok(Ok(first)) => Ok(Answer { parts, first, rest: body, latency }),
    }
}

/// Reads an error body up to [`ERROR_BODY_LIMIT`] before `deadline`; `true` when read to its end.
async fn read_limited(body: &mut Body, deadline: tokio::time::Instant) -> (Bytes, bool) {
    let mut out = BytesMut::new();
    let collect = async {
        loop {
            match body.frame().await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = ERROR_BODY_LIMIT - out.len();
                        out.extend_from_slice(&data[..data.len().min(room)]);
                        if out.len() >= ERROR_BODY_LIMIT {
                            return false;
                        }
                    }
                }
            }
        }
    };
    let complete = tokio::time::timeout_at(deadline, collect).await.unwrap_or(false);
    (out.freeze(), complete)
}

/// The error and its sources, one line (upstream errors name origins, never credentials).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
