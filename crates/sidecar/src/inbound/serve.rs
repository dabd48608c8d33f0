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

/// How many connections a server keeps, and for how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    /// Past this many open at once, a new connection is closed at once (a port others may
    /// flood must not take every file descriptor of the process).
    pub max_open: usize,
    /// A connection is closed after this long, whatever it is doing (a client that pipelines
    /// requests and never reads the answers would otherwise hold its slot for good).
    pub max_lifetime: Option<Duration>,
}

impl ConnectionLimits {
    /// No limit.
    pub const NONE: Self = Self { max_open: usize::MAX, max_lifetime: None };
}

/// Serves `handler` on `listener` until `stop` resolves, then stops accepting and lets the
/// open connections finish their requests for up to `drain` before returning. One task per
/// connection, within `limits`.
pub(crate) async fn serve<F, Fut, S>(
    listener: TcpListener,
    header_read_timeout: Duration,
    handler: F,
    stop: S,
    drain: Duration,
    limits: ConnectionLimits,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    S: std::future::Future<Output = ()>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_open.min(tokio::sync::Semaphore::MAX_PERMITS)));
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
            tracing::debug!(%peer, max_open = limits.max_open, "connection closed: too many open");
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
            let ended = match limits.max_lifetime {
                Some(lifetime) => tokio::time::timeout(lifetime, connection).await.ok(),
                None => Some(connection.await),
            };
            match ended {
                Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
                None => tracing::debug!(%peer, "connection closed: open past its lifetime"),
                Some(Ok(())) => {}
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Whether the server closed `stream` (end of stream, or a reset) within `within`.
    async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(within, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed_and_none_outlives_its_lifetime() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnectionLimits { max_open: 1, max_lifetime: Some(Duration::from_millis(300)) };
        let handler = |_req: Request<Incoming>| async { Response::new(crate::body::full("ok")) };
        let hour = Duration::from_secs(3600);
        tokio::spawn(serve(listener, hour, handler, std::future::pending(), hour, limits));
        // The first holds the one slot: it pipelines requests and never reads an answer.
        let mut holder = TcpStream::connect(addr).await.unwrap();
        let pipelined = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".repeat(50_000);
        let _ = tokio::time::timeout(Duration::from_secs(1), holder.write_all(&pipelined)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut second, Duration::from_secs(2)).await, "past the cap: closed at once");
        // The holder goes at the end of its lifetime, and its slot with it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    }
}
