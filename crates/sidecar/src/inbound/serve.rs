//! The accept loop shared by the API and admin servers: TCP_NODELAY, header read timeout, one
//! task per connection, an optional cap on open connections, graceful drain on stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::Body;

/// The address a request came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub std::net::SocketAddr);

/// How often, at most, a failing accept is a warning (each is at debug): a process out of
/// file descriptors fails every accept.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener` until `stop` resolves, then stops accepting and lets the
/// open connections finish their requests for up to `drain` before returning. One task per
/// connection; past `max_connections` open at once, a new connection is closed at once (a
/// port others may flood must not take every file descriptor of the process).
pub(crate) async fn serve<F, Fut, S>(
    listener: TcpListener,
    header_read_timeout: Duration,
    handler: F,
    stop: S,
    drain: Duration,
    max_connections: usize,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    S: std::future::Future<Output = ()>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections.min(tokio::sync::Semaphore::MAX_PERMITS)));
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                if warned.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
                    tracing::warn!(error = %e, "accept failed");
                    warned = Some(Instant::now());
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max_connections, "connection closed: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(Peer(peer));
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
            drop(slot);
        });
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(open, "drain timeout reached; closing the remaining connections");
    }
}
