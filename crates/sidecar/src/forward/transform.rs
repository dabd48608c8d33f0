//! A relayed body rewritten chunk by chunk as it streams (the Responses id rewrite, the
//! credential mask): one body wrapper for every such transform.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// A streaming rewrite of a body's bytes.
pub(crate) trait ChunkTransform: Send + Sync + Unpin + 'static {
    /// The bytes of `chunk` that can be sent now, rewritten.
    fn feed(&mut self, chunk: Bytes) -> Bytes;
    /// What was held back, at the end of the body.
    fn finish(&mut self) -> Bytes;
    /// Bytes held back now, when the transform keeps the length (`None`: it may change it).
    fn held(&self) -> Option<u64>;
}

struct Transformed<T> {
    inner: Body,
    transform: T,
    done: bool,
}

impl<T: ChunkTransform> HttpBody for Transformed<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let out = self.transform.feed(data);
                    Poll::Ready(Some(Ok(Frame::data(out))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(None) => {
                self.done = true;
                let rest = self.transform.finish();
                Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.inner.is_end_stream() && self.transform.held() == Some(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.transform.held() {
            Some(held) => grown(&self.inner.size_hint(), held),
            None => SizeHint::default(),
        }
    }
}

/// `body` rewritten by `transform`.
pub(crate) fn transform(body: Body, transform: impl ChunkTransform) -> Body {
    Transformed { inner: body, transform, done: false }.boxed()
}

/// `hint` plus `extra` bytes. (Upper first: `SizeHint` refuses a lower bound above its upper
/// one, even for a moment.)
pub(crate) fn grown(hint: &SizeHint, extra: u64) -> SizeHint {
    let mut out = SizeHint::new();
    if let Some(upper) = hint.upper() {
        out.set_upper(upper.saturating_add(extra));
    }
    out.set_lower(hint.lower().saturating_add(extra));
    out
}
