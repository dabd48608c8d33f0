//! The API server: accepts connections (TCP_NODELAY, header read timeout), reads bounded
//! bodies, and dispatches to the routed endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::body::Body;
use super::error::{ApiError, error_response};
use super::forward::forward;
use super::models;
use super::request::{Endpoint, parse};
use crate::app::Proxy;

/// Serves `handler` on `listener` until `stop` resolves, then stops accepting and lets the
/// open connections finish their requests for up to `drain` before returning. One task per
/// connection.
pub async fn serve<F, Fut, S>(
    listener: TcpListener,
    header_read_timeout: Duration,
    handler: F,
    stop: S,
    drain: Duration,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    S: std::future::Future<Output = ()>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, _) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true).writev(false);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(open, "drain timeout reached; closing the remaining connections");
    }
}

/// Handles one API request.
pub async fn handle(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let routing = proxy.routing.load();
    if method == Method::GET && path.trim_end_matches('/') == "/v1/models" {
        return match routing {
            Some(r) => models::list(&r),
            None => ApiError::no_snapshot().response(),
        };
    }
    let Some(endpoint) = Endpoint::of_path(&path) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            &format!("Unknown request URL: {method} {path}."),
            None,
        );
    };
    if method != Method::POST {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            &format!("{path} accepts POST only."),
            None,
        );
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(&proxy, body).await {
        Ok(body) => body,
        Err(e) => return e.response(),
    };
    let Some(routing) = routing else { return ApiError::no_snapshot().response() };
    match parse(endpoint, &parts.headers, &body) {
        Ok(parsed) => forward(&proxy, routing, parsed, &parts.headers).await,
        Err(e) => e.response(),
    }
}

async fn read_body(proxy: &Proxy, body: Incoming) -> Result<Bytes, ApiError> {
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        kind: "invalid_request_error",
        code: "request_too_large",
        message: format!("The request body exceeds the limit of {} bytes.", proxy.max_body_bytes),
    };
    if hyper::body::Body::size_hint(&body).lower() > proxy.max_body_bytes as u64 {
        return Err(too_large());
    }
    let collect = Limited::new(body, proxy.max_body_bytes).collect();
    match tokio::time::timeout(proxy.body_read_timeout, collect).await {
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            kind: "invalid_request_error",
            code: "request_timeout",
            message: "The request body did not arrive in time.".into(),
        }),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request("invalid_body", format!("The request body could not be read: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}
