//! The body of an upstream request: the client's bytes, handed to the connection in slices.
//!
//! The pool's connections flatten what they write into one buffer (faster for the small
//! requests that dominate), and hyper copies a whole data frame into that buffer at once: a
//! 32 MiB body sent as one frame would be copied whole, doubling the memory it holds. Slices
//! of at most [`SLICE`] bytes bound that copy; they share the client's buffer (no copy here),
//! and the exact length still goes out as `Content-Length`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Largest frame handed to a connection, bytes.
pub const SLICE: usize = 64 * 1024;

/// A request body sent in slices of at most [`SLICE`] bytes.
#[derive(Clone, Debug, Default)]
pub struct RequestBody {
    rest: Bytes,
}

impl RequestBody {
    /// The body of `bytes`.
    pub fn new(bytes: Bytes) -> Self {
        Self { rest: bytes }
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(SLICE);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn slices_share_the_buffer_and_keep_the_length() {
        let bytes = Bytes::from(vec![7u8; SLICE * 2 + 5]);
        let mut body = RequestBody::new(bytes.clone());
        assert_eq!(body.size_hint().exact(), Some(bytes.len() as u64));
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(bytes.as_ptr_range().contains(&data.as_ptr()), "a slice of the same buffer");
            sizes.push(data.len());
        }
        assert_eq!(sizes, [SLICE, SLICE, 5]);
    }
}
