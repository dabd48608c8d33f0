use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use llmroute_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::shape;

/// A loopback HTTP/1.1 server answering `ok` to every request; with `close_after`, each
/// connection is closed right after its first answer (without `Connection: close`).
async fn server(close_after: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    if socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() || close_after
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

fn target(addr: std::net::SocketAddr) -> Target {
    let d = v1::Deployment {
        id: "ns/d".into(),
        base_url: format!("http://{addr}/v1"),
        provider: v1::Provider::Openai as i32,
        ..Default::default()
    };
    Target::try_from(&d).unwrap()
}

async fn call(pool: &Arc<Pool>, target: &Target) -> Result<Bytes, PoolError> {
    let request = shape::models_request(target);
    let response = pool.send(target, request).await?;
    Ok(response.into_body().collect().await?.to_bytes())
}

async fn eventually(mut check: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached within 5 s");
}

#[tokio::test]
async fn a_connection_is_reused_after_its_body_is_read() {
    let (addr, connections) = server(false).await;
    let pool = Pool::new(PoolConfig::default()).unwrap();
    let t = target(addr);
    for _ in 0..3 {
        assert_eq!(call(&pool, &t).await.unwrap(), "ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(t.origin()), 1);
}

#[tokio::test]
async fn a_connection_closed_by_the_server_is_not_a_failure() {
    let (addr, connections) = server(true).await;
    let pool = Pool::new(PoolConfig::default()).unwrap();
    let t = target(addr);
    for i in 1..=5 {
        assert_eq!(call(&pool, &t).await.unwrap(), "ok", "request {i}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn idle_connections_expire() {
    let (addr, _) = server(false).await;
    let config = PoolConfig { idle_timeout: Duration::from_millis(100), ..PoolConfig::default() };
    let pool = Pool::new(config).unwrap();
    let t = target(addr);
    call(&pool, &t).await.unwrap();
    assert_eq!(pool.idle_count(t.origin()), 1);
    eventually(|| pool.idle_count(t.origin()) == 0).await;
}

#[tokio::test]
async fn idle_connections_are_capped_per_origin() {
    let (addr, connections) = server(false).await;
    let config = PoolConfig { max_idle_per_origin: 2, ..PoolConfig::default() };
    let pool = Pool::new(config).unwrap();
    let t = target(addr);
    let responses: Vec<_> = futures_join(&pool, &t, 5).await.into_iter().map(|r| r.unwrap().into_body()).collect();
    assert_eq!(connections.load(Ordering::SeqCst), 5);
    for body in responses {
        body.collect().await.unwrap();
    }
    assert_eq!(pool.idle_count(t.origin()), 2);
}

async fn futures_join(pool: &Arc<Pool>, t: &Target, n: usize) -> Vec<Result<Response<PooledBody>, PoolError>> {
    let mut out = Vec::new();
    for _ in 0..n {
        // Hold each response unread so that the next request needs a new connection.
        out.push(pool.send(t, shape::models_request(t)).await);
    }
    out
}

#[tokio::test]
async fn connect_errors_name_the_origin() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pool = Pool::new(PoolConfig::default()).unwrap();
    let e = call(&pool, &target(addr)).await.unwrap_err();
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}
