//! Reading a request body: bounded in size (`--max-body-bytes`, 413), in time
//! (`--body-read-timeout-ms`, 408) and, across all requests together, in memory
//! (`--max-buffered-body-bytes`, 503 with `Retry-After`).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::parse::ReadBody;

/// Reads `body` whole. Memory is reserved from `memory` as bytes arrive (the declared
/// length up front when there is one); a reservation that cannot be had ends the read.
pub(crate) async fn read<B>(
    body: B,
    max_bytes: usize,
    timeout: Duration,
    memory: &Arc<Semaphore>,
) -> Result<ReadBody, ApiError>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let declared = body.size_hint().exact().or(body.size_hint().upper());
    if body.size_hint().lower() > max_bytes as u64 {
        return Err(ApiError::BodyTooLarge(max_bytes));
    }
    let mut reservation: Option<OwnedSemaphorePermit> = None;
    let reserve = |bytes: usize, reservation: &mut Option<OwnedSemaphorePermit>| -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let count = u32::try_from(bytes).map_err(|_| ApiError::BodyTooLarge(max_bytes))?;
        let permit = memory.clone().try_acquire_many_owned(count).map_err(|_| ApiError::Overloaded)?;
        match reservation {
            Some(held) => held.merge(permit),
            None => *reservation = Some(permit),
        }
        Ok(())
    };
    // One contiguous buffer of the declared size: no growth, no fragments left behind.
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(max_bytes).min(max_bytes));
    // Without memory to hold it, the body is still read (and dropped) so that the client,
    // still sending, reads a clean 503 rather than a reset connection.
    let mut overloaded = reserve(capacity, &mut reservation).is_err();
    let mut buffer = BytesMut::with_capacity(if overloaded { 0 } else { capacity });
    let collect = async {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::InvalidBody(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            seen += data.len();
            if seen > max_bytes {
                return Err(ApiError::BodyTooLarge(max_bytes));
            }
            if overloaded {
                continue;
            }
            let beyond = seen.saturating_sub(capacity.max(buffer.len()));
            if reserve(beyond, &mut reservation).is_err() {
                overloaded = true;
                buffer = BytesMut::new();
                reservation = None;
                continue;
            }
            buffer.extend_from_slice(&data);
        }
        if overloaded { Err(ApiError::Overloaded) } else { Ok(()) }
    };
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(ReadBody { bytes: buffer.freeze(), reservation }),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>;

    fn chunked(parts: &[&'static [u8]]) -> StreamBody<Frames> {
        let frames: Vec<_> = parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p)))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn reads_and_releases_its_reservation() {
        let memory = Arc::new(Semaphore::new(100));
        let body = read(Full::new(Bytes::from_static(b"0123456789")), 50, SECOND, &memory).await.unwrap();
        assert_eq!(body.bytes, "0123456789");
        assert_eq!(memory.available_permits(), 90);
        drop(body);
        assert_eq!(memory.available_permits(), 100);
    }

    #[tokio::test]
    async fn chunked_bodies_reserve_as_they_arrive() {
        let memory = Arc::new(Semaphore::new(8));
        let body = read(chunked(&[b"abc", b"def"]), 50, SECOND, &memory).await.unwrap();
        assert_eq!((body.bytes.as_ref(), memory.available_permits()), (&b"abcdef"[..], 2));
        let e = read(chunked(&[b"abc"]), 50, SECOND, &memory).await.unwrap_err();
        assert_eq!(e, ApiError::Overloaded, "past the memory budget");
        drop(body);
        assert_eq!(memory.available_permits(), 8, "a failed read holds nothing");
    }

    #[tokio::test]
    async fn too_large_is_413_declared_or_not() {
        let memory = Arc::new(Semaphore::new(1000));
        let e = read(Full::new(Bytes::from_static(b"0123456789")), 5, SECOND, &memory).await.unwrap_err();
        assert_eq!(e.code(), "request_too_large");
        let e = read(chunked(&[b"abc", b"def"]), 5, SECOND, &memory).await.unwrap_err();
        assert_eq!(e.code(), "request_too_large");
        assert_eq!(memory.available_permits(), 1000);
    }
}
