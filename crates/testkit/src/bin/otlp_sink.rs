//! `otlp-sink`: an OpenTelemetry collector's trace endpoint (OTLP/gRPC `TraceService/Export`)
//! that counts the spans it receives and keeps nothing, for the hop benchmark's tracing rows.
//! It walks the protobuf wire format to count (checking every length) instead of decoding
//! each span, so that on the benchmark's shared two cores the collector's own work stays small
//! beside the sidecar's. Announces `{"otlp_sink": "ADDR"}` on stderr, and the spans received
//! on SIGTERM or SIGINT.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Buf as _;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

/// Reads a varint at `*at`.
fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Calls `each` with every length-delimited field `field` of the message in `buf`, skipping
/// the others; `None` when the message is malformed.
fn fields<'a>(buf: &'a [u8], field: u64, mut each: impl FnMut(&'a [u8]) -> Option<()>) -> Option<()> {
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        match key & 7 {
            0 => {
                varint(buf, &mut at)?;
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut at)?).ok()?;
                let body = buf.get(at..at.checked_add(len)?)?;
                at += len;
                if key >> 3 == field {
                    each(body)?;
                }
            }
            _ => return None,
        }
    }
    (at == buf.len()).then_some(())
}

/// The spans of an `ExportTraceServiceRequest`: resource_spans (1) → scope_spans (2) → spans (2).
fn count_spans(request: &[u8]) -> Option<u64> {
    let mut n = 0;
    fields(request, 1, |resource_spans| {
        fields(resource_spans, 2, |scope_spans| {
            fields(scope_spans, 2, |_span| {
                n += 1;
                Some(())
            })
        })
    })?;
    Some(n)
}

#[derive(Clone, Copy, Default)]
struct CountCodec;

impl Codec for CountCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = u64;
    type Encoder = CountCodec;
    type Decoder = CountCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for CountCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::Message::encode(&item, dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for CountCodec {
    type Item = u64;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<u64>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        count_spans(&bytes)
            .map(Some)
            .ok_or_else(|| tonic::Status::invalid_argument("malformed ExportTraceServiceRequest"))
    }
}

/// `TraceService/Export`: counts, answers an empty success.
struct Export(Arc<AtomicU64>);

impl tonic::server::UnaryService<u64> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<u64>) -> Self::Future {
        self.0.fetch_add(request.into_inner(), Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None })))
    }
}

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
}

impl tonic::server::NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

type Answer = http::Response<tonic::body::Body>;

impl tower::Service<http::Request<tonic::body::Body>> for Sink {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let spans = self.spans.clone();
        Box::pin(async move {
            if request.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
                return Ok(tonic::Status::unimplemented("only TraceService/Export").into_http());
            }
            Ok(tonic::server::Grpc::new(CountCodec).unary(Export(spans), request).await)
        })
    }
}

/// Connections with TCP_NODELAY, as a real collector's (Go sets it on every connection): with
/// Nagle each answer's trailers waited out the exporter's delayed ACK, 40 ms a call, and a
/// sidecar at 100% sampling dropped half its spans (the benchmark measured the sink).
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("{}", serde_json::json!({"otlp_sink": listener.local_addr()?.to_string()}));
    let sink = Sink::default();
    let spans = sink.spans.clone();
    let server = tonic::transport::Server::builder().add_service(sink).serve_with_incoming(incoming(listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = server => served?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("{}", serde_json::json!({"otlp_sink_spans": spans.load(Ordering::Relaxed)}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    #[tokio::test]
    async fn connections_have_tcp_nodelay() {
        use tokio_stream::StreamExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connections = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(connections.next().await.unwrap().unwrap().nodelay().unwrap());
    }

    #[test]
    fn spans_are_counted_across_resources_and_scopes_and_garbage_is_refused() {
        let span = |n: u8| Span { name: format!("s{n}"), span_id: vec![n; 8], ..Default::default() };
        let scope = |n| ScopeSpans { spans: (0..n).map(span).collect(), ..Default::default() };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans { scope_spans: vec![scope(3), scope(0)], ..Default::default() },
                ResourceSpans { scope_spans: vec![scope(2)], ..Default::default() },
            ],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(count_spans(&bytes), Some(5));
        assert_eq!(count_spans(&[]), Some(0));
        assert_eq!(count_spans(&bytes[..bytes.len() - 1]), None);
        assert_eq!(count_spans(&[0x0a, 0xff]), None);
    }
}
