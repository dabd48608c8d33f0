//! Reading a streamed response frame by frame, with arrival times.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// POSTs JSON and returns the arrival time of every body frame (since the request) and the text.
pub async fn post_timed(url: &str, body: &Value) -> (Vec<Duration>, String) {
    let uri: http::Uri = url.parse().expect("url");
    let authority = uri.authority().expect("authority").to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let request = Request::post(uri.path())
        .header("host", &authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let started = Instant::now();
    let response = sender.send_request(request).await.expect("response");
    let mut body = response.into_body();
    let (mut arrivals, mut text) = (Vec::new(), String::new());
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            arrivals.push(started.elapsed());
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    (arrivals, text)
}

/// What a large answer looked like, without holding it.
#[derive(Debug, Default)]
pub struct Counted {
    /// Status code.
    pub status: u16,
    /// Body bytes received.
    pub bytes: u64,
    /// The first 4 KiB.
    pub head: String,
    /// The last 4 KiB.
    pub tail: String,
    /// The body ended with an error (cut) rather than cleanly.
    pub cut: bool,
}

/// POSTs `body` and reads the answer to its end, counting bytes, within `timeout`.
pub async fn post_counting(url: &str, body: Bytes, timeout: Duration) -> Result<Counted, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let authority = uri.authority().ok_or("authority")?.to_string();
    let work = async {
        let stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::post(uri.path())
            .header("host", &authority)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let mut counted = Counted { status: response.status().as_u16(), ..Counted::default() };
        let mut body = response.into_body();
        let mut tail: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                counted.cut = true;
                break;
            };
            if let Some(data) = frame.data_ref() {
                if counted.head.len() < 4096 {
                    let take = data.len().min(4096 - counted.head.len());
                    counted.head.push_str(&String::from_utf8_lossy(&data[..take]));
                }
                counted.bytes += data.len() as u64;
                tail.extend_from_slice(data);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
            }
        }
        counted.tail = String::from_utf8_lossy(&tail[tail.len().saturating_sub(4096)..]).into_owned();
        Ok(counted)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| "timed out".to_owned())?
}
