//! Admin endpoints: `/healthz`, `/readyz` (200 once the first build is served), `/metrics`,
//! `/status` (JSON), `/adaptive` (the fleet's merged posteriors, quota assignments and shared
//! cooldowns, JSON). `/status` and `/adaptive` reveal the fleet (pods, teams, rejections), so only loopback
//! peers get it; Prometheus scrapes `/metrics` over the pod IP.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::state::Shared;

/// Serves the admin endpoints on `listener` forever.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let local = peer.ip().to_canonical().is_loopback();
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &req, local)) }
            });
            // A client that never finishes its request is closed after 10 s.
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(std::time::Duration::from_secs(10));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn handle<B>(shared: &Shared, request: &Request<B>, local: bool) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match shared.built() {
            Some(b) => text(StatusCode::OK, "text/plain", format!("ready watermark {}\n", b.watermark)),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no build yet\n".into()),
        },
        "/metrics" => {
            let health = shared.health.borrow().clone();
            text(StatusCode::OK, "text/plain; version=0.0.4", shared.metrics.render(&shared.registry.teams(), &health))
        }
        "/status" | "/adaptive" if !local => {
            text(StatusCode::FORBIDDEN, "text/plain", "served to loopback peers only\n".into())
        }
        "/adaptive" => {
            let body =
                serde_json::to_string_pretty(&shared.fleet.describe(std::time::Instant::now())).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        "/status" => {
            let body = serde_json::to_string_pretty(&shared.status()).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn text(status: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_for_loopback_peers_only_and_metrics_for_anyone() {
        let shared = Shared::new(crate::metrics::Metrics::new().unwrap());
        let get = |path: &str, local: bool| handle(&shared, &Request::get(path).body(()).unwrap(), local).status();
        assert_eq!(get("/status", false), StatusCode::FORBIDDEN);
        assert_eq!(get("/status", true), StatusCode::OK);
        assert_eq!(get("/metrics", false), StatusCode::OK);
        assert_eq!(get("/healthz", false), StatusCode::OK);
        assert_eq!(get("/readyz", false), StatusCode::SERVICE_UNAVAILABLE, "no build yet");
    }
}
