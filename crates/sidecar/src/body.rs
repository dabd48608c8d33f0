//! The response body type shared by every handler.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// Error of a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body: buffered, or streamed from an upstream.
pub type Body = BoxBody<Bytes, BoxError>;

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}
