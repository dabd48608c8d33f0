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
