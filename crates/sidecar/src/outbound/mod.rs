//! The outbound side as the attempt loop sees it: send one request to one upstream and get
//! its response head with a streaming body. The pool of `llmroute-upstream` is the real one;
//! tests put a fake behind the same trait.

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use llmroute_upstream::{Pool, RequestBody, Target};

use crate::body::{Body, BoxError};

/// Sends upstream requests.
pub(crate) trait Upstream: Send + Sync + 'static {
    /// Sends `request` to `target`; the error is a transport failure (connect, TLS, protocol).
    fn send(
        &self,
        target: &Target,
        request: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send;
}

impl Upstream for Arc<Pool> {
    async fn send(&self, target: &Target, request: Request<RequestBody>) -> Result<Response<Body>, BoxError> {
        let response = Pool::send(self, target, request).await?;
        Ok(response.map(|body| body.map_err(BoxError::from).boxed()))
    }
}
