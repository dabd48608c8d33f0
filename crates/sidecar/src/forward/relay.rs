//! Relaying a committed answer to the client: the first frame (already read) then the rest,
//! under the request's deadline and an idle timeout between frames. A stalled or broken
//! upstream ends the client's response: a stream gets an SSE `error` event and is closed, a
//! plain answer is cut (the client sees an incomplete body, never a hang). The request is
//! counted in `llmroute_requests_total` when the relay ends, with the code that describes how:
//! the upstream status when it completed, 502 when the upstream broke, 504 on a timeout, 499
//! when the client left first. The in-flight slot is held until then.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prometheus::IntCounterVec;
use serde_json::json;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};
use crate::routes::InFlight;

/// Counts the request once, when the relay ends.
pub(crate) struct Outcome {
    /// `llmroute_requests_total`.
    pub counter: IntCounterVec,
    /// `model_group`, `deployment` labels.
    pub group: String,
    pub deployment: String,
    /// The upstream's status, counted when the answer completes.
    pub status: u16,
}

impl Outcome {
    fn count(&self, code: &str) {
        self.counter.with_label_values(&[self.group.as_str(), self.deployment.as_str(), code]).inc();
    }
}

/// Reads the answer as it passes (truncation, usage) and acts once it ended, with the code
/// it ended with (the upstream status when it completed; 499, 502 or 504 when cut).
pub(crate) struct Watch {
    pub scan: crate::fleet::scan::AnswerScan,
    pub on_end: OnEnd,
}

/// Called once when a relayed answer ends: what the scan found, the code it ended with,
/// whether it completed.
pub(crate) type OnEnd = Box<dyn FnOnce(&crate::fleet::scan::AnswerScan, &str, bool) + Send + Sync>;

/// Why a relay ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Deadline,
    Idle,
    Broken,
}

/// The relay's timers, armed only when the upstream first makes it wait.
struct Timers {
    deadline: Pin<Box<Sleep>>,
    idle: Pin<Box<Sleep>>,
}

/// The body of a committed answer.
pub(crate) struct Relay {
    first: Option<Bytes>,
    inner: Body,
    stream: bool,
    deadline: Instant,
    /// The deadline and idle timers, armed only once the upstream makes the relay wait (an
    /// answer that is already complete never touches the timer wheel).
    timers: Option<Timers>,
    idle_timeout: Duration,
    guard: Option<InFlight>,
    outcome: Option<Outcome>,
    done: bool,
    watch: Option<Watch>,
    /// The last bytes relayed (at most 4): whether they end an SSE event, so that an error
    /// event is never glued to a partial line.
    tail: Vec<u8>,
}

/// Whether `tail` (the last bytes relayed) ends an SSE event: nothing relayed, or a blank line.
pub(crate) fn ends_event(tail: &[u8]) -> bool {
    tail.is_empty() || [&b"\n\n"[..], b"\r\r", b"\n\r\n"].iter().any(|end| tail.ends_with(end))
}

/// Settings of one relay.
pub(crate) struct RelaySpec {
    /// The request's deadline.
    pub deadline: Instant,
    /// Longest pause between frames.
    pub idle_timeout: Duration,
    /// An SSE stream (cut with an error event rather than an aborted body).
    pub stream: bool,
}

impl Relay {
    pub fn new(first: Bytes, inner: Body, spec: RelaySpec, guard: InFlight, outcome: Outcome) -> Self {
        Self {
            first: Some(first),
            inner,
            stream: spec.stream,
            deadline: spec.deadline,
            timers: None,
            idle_timeout: spec.idle_timeout,
            guard: Some(guard),
            outcome: Some(outcome),
            done: false,
            watch: None,
            tail: Vec::new(),
        }
    }

    /// Remembers the last bytes of what is relayed (streams only: where an error event goes).
    fn relayed(&mut self, data: &[u8]) {
        if self.stream && !data.is_empty() {
            self.tail.extend_from_slice(&data[data.len().saturating_sub(4)..]);
            let extra = self.tail.len().saturating_sub(4);
            self.tail.drain(..extra);
        }
    }

    /// Reads the answer with `watch` (only answers that need it pay for the scan).
    pub fn with_watch(mut self, watch: Option<Watch>) -> Self {
        self.watch = watch;
        if let (Some(w), Some(first)) = (self.watch.as_mut(), self.first.as_ref()) {
            w.scan.feed(first);
        }
        self
    }

    fn end(&mut self, code: &str) {
        self.end_with(code, false);
    }

    fn end_with(&mut self, code: &str, completed: bool) {
        self.done = true;
        self.guard = None;
        if let Some(outcome) = self.outcome.take() {
            outcome.count(code);
        }
        if let Some(watch) = self.watch.take() {
            (watch.on_end)(&watch.scan, code, completed);
        }
    }

    fn cut(&mut self, why: Cut, error: Option<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (code, kind, error_code, message) = match why {
            Cut::Deadline => (
                "504",
                "timeout",
                "deadline_exceeded",
                "The request deadline passed while the answer was streaming.".to_owned(),
            ),
            Cut::Idle => (
                "504",
                "timeout",
                "stream_idle_timeout",
                format!("The upstream sent nothing for {} ms; the answer was cut.", self.idle_timeout.as_millis()),
            ),
            Cut::Broken => (
                "502",
                "upstream_error",
                "upstream_stream_error",
                format!(
                    "The upstream's answer broke off: {}",
                    error.as_ref().map(ToString::to_string).unwrap_or_default()
                ),
            ),
        };
        tracing::warn!(reason = error_code, "answer cut while relaying");
        self.end(code);
        if self.stream {
            let event = json!({"error": {"message": message, "type": kind, "param": null, "code": error_code}});
            // After a partial line or event, a blank line first: the error is an event of its own.
            let gap = if ends_event(&self.tail) { "" } else { "\n\n" };
            let frame = format!("{gap}event: error\ndata: {event}\n\n");
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))));
        }
        Poll::Ready(Some(Err(error.unwrap_or_else(|| message.into()))))
    }
}

impl Relay {
    /// Counts the answer as completed.
    fn end_completed(&mut self) {
        let code = self.outcome.as_ref().map_or(200, |o| o.status).to_string();
        self.end_with(&code, true);
    }

    /// Ends at once when the upstream's body has nothing more to send, so the server can finish
    /// the answer without polling again.
    fn end_if_complete(&mut self) {
        if self.inner.is_end_stream() {
            self.end_completed();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.done {
            // The client went away (or stopped reading) before the answer ended.
            self.end("499");
        }
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            self.relayed(&first);
            self.end_if_complete();
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(watch) = self.watch.as_mut() {
                        watch.scan.feed(data);
                    }
                    self.relayed(data);
                }
                let next = Instant::now() + self.idle_timeout;
                if let Some(timers) = self.timers.as_mut() {
                    timers.idle.as_mut().reset(next);
                }
                self.end_if_complete();
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return self.cut(Cut::Broken, Some(e)),
            Poll::Ready(None) => {
                self.end_completed();
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let (deadline, idle) = (self.deadline, Instant::now() + self.idle_timeout);
        let timers = self.timers.get_or_insert_with(|| Timers {
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            idle: Box::pin(tokio::time::sleep_until(idle)),
        });
        let (deadline_passed, idle_passed) =
            (timers.deadline.as_mut().poll(cx).is_ready(), timers.idle.as_mut().poll(cx).is_ready());
        if deadline_passed {
            return self.cut(Cut::Deadline, None);
        }
        if idle_passed {
            return self.cut(Cut::Idle, None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // With the first bytes in hand and the rest's length known, the client gets a
        // Content-Length answer (no chunked framing, no extra write for its end).
        let rest = if self.done { SizeHint::with_exact(0) } else { self.inner.size_hint() };
        super::transform::grown(&rest, self.first.as_ref().map_or(0, |f| f.len() as u64))
    }
}
