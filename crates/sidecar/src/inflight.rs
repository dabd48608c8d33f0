//! In-flight accounting that lasts until the response body is fully sent (or dropped).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::proxy::body::{Body, BoxError};
use crate::proxy::pool::Checkout;
use crate::routing::Routing;

/// One attempt in flight on a deployment; finishes on drop.
pub struct InFlight {
    routing: Arc<Routing>,
    deployment: u32,
}

impl InFlight {
    /// Counts an attempt toward in-flight and the rate windows.
    pub fn start(routing: Arc<Routing>, deployment: u32, tokens: u64, now_ms: u64) -> Self {
        routing.state.get(deployment).start(now_ms, tokens);
        Self { routing, deployment }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.routing.state.get(self.deployment).finish();
    }
}

/// An upstream body streamed frame by frame, holding its in-flight guard until the end and
/// returning its connection to the pool when it ends cleanly.
struct Guarded {
    inner: Incoming,
    guard: Option<InFlight>,
    connection: Option<Checkout>,
}

impl Guarded {
    /// The body was read to its end: the attempt is over and the connection is reusable.
    fn finish(&mut self) {
        self.guard = None;
        if let Some(connection) = self.connection.take() {
            connection.release();
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => {
                self.guard = None;
                self.connection = None;
            }
            // The server stops polling once `is_end_stream` says so: finish here, not on `None`.
            Poll::Ready(None) | Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Streams `body`, releasing `guard` and the connection when it ends.
pub fn guarded(body: Incoming, guard: InFlight, connection: Checkout) -> Body {
    Guarded { inner: body, guard: Some(guard), connection: Some(connection) }.boxed()
}
