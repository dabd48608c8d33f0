//! Responses-API affinity on the way back: the upstream's response id is wrapped into an
//! llmroute id naming the deployment, in plain JSON answers and in SSE streams (event by
//! event, as they arrive).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming};
use llmroute_router::wrap_response_id;
use serde_json::Value;

use super::body::{Body, BoxError, full};
use crate::inflight::{InFlight, guarded};
use crate::proxy::pool::Checkout;

/// Wraps response ids in a response object (`object: "response"`) or in an event's `response`.
pub fn wrap_ids(value: &mut Value, deployment_id: &str) {
    let Value::Object(map) = value else { return };
    if map.get("object").and_then(Value::as_str) == Some("response")
        && let Some(Value::String(id)) = map.get_mut("id")
    {
        *id = wrap_response_id(deployment_id, id);
    }
    if let Some(inner) = map.get_mut("response") {
        wrap_ids(inner, deployment_id);
    }
}

/// The body of a committed /v1/responses answer, ids wrapped.
pub async fn rewrite_ids(
    body: Incoming,
    deployment_id: String,
    stream: bool,
    guard: InFlight,
    connection: Checkout,
) -> Body {
    if stream {
        let inner = guarded(body, guard, connection);
        return SseRewriter { inner, buffer: BytesMut::new(), deployment_id, done: false }.boxed();
    }
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return full(Bytes::new()),
    };
    connection.release();
    drop(guard);
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            wrap_ids(&mut value, &deployment_id);
            full(serde_json::to_vec(&value).unwrap_or_default())
        }
        Err(_) => full(bytes),
    }
}

/// Rewrites `data:` lines of an SSE stream; passes complete lines on as they arrive.
struct SseRewriter {
    inner: Body,
    buffer: BytesMut,
    deployment_id: String,
    done: bool,
}

impl SseRewriter {
    fn rewrite_line(&self, line: &[u8], out: &mut Vec<u8>) {
        let text = std::str::from_utf8(line).unwrap_or_default();
        if let Some(data) = text.strip_prefix("data:")
            && let Ok(mut value) = serde_json::from_str::<Value>(data.trim())
        {
            wrap_ids(&mut value, &self.deployment_id);
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&serde_json::to_vec(&value).unwrap_or_default());
            out.push(b'\n');
            return;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }

    fn drain_lines(&mut self, all: bool) -> Bytes {
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(end + 1);
            self.rewrite_line(&line[..end], &mut out);
        }
        if all && !self.buffer.is_empty() {
            let rest = self.buffer.split();
            out.extend_from_slice(&rest);
        }
        Bytes::from(out)
    }
}

impl HttpBody for SseRewriter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        let out = self.drain_lines(false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let out = self.drain_lines(true);
                    return Poll::Ready((!out.is_empty()).then(|| Ok(Frame::data(out))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_response_objects_and_event_payloads() {
        let mut v = serde_json::json!({"id": "resp_1", "object": "response", "output": []});
        wrap_ids(&mut v, "ns/d");
        assert_eq!(llmroute_router::unwrap_response_id(v["id"].as_str().unwrap()), Some(("ns/d".into(), "resp_1")));
        let mut e = serde_json::json!({"type": "response.created", "response": {"id": "resp_2", "object": "response"}});
        wrap_ids(&mut e, "ns/d");
        assert!(e["response"]["id"].as_str().unwrap().starts_with("resp_llmr1."));
        let mut other = serde_json::json!({"id": "msg_1", "object": "message"});
        wrap_ids(&mut other, "ns/d");
        assert_eq!(other["id"], "msg_1");
    }
}
