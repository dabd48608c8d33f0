//! One OTLP/gRPC export call. It holds one of the export's slots until its answer has come
//! and its request body is gone: a collector that answers before reading the body (an early
//! error, a refusal) leaves that body waiting on HTTP/2 flow control, and were the slot freed
//! by the answer, every next call would leave another 256 KiB behind (measured: 768 MB in
//! 40 s).

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tokio::sync::OwnedSemaphorePermit;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Service;
use tonic::transport::Channel;

use super::export::{Collector, Queue};

/// The collector's gRPC method.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the collector said of an accepted call: the spans it rejected, and why.
pub(crate) struct Accepted {
    pub rejected: usize,
    pub message: String,
}

/// One export call of `encoded` over `channel`. Its slot is held until the call is over and
/// its body is gone, whichever is last: a call waiting for its answer counts, and so does a
/// body left waiting on flow control by an early answer.
pub(crate) async fn send(
    channel: Channel,
    slot: OwnedSemaphorePermit,
    collector: &Collector,
    encoded: Encoded,
) -> Result<Accepted, tonic::Status> {
    let slot = Arc::new(slot);
    let mut grpc = tonic::client::Grpc::new(Call { channel, slot: Some(slot.clone()) });
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(encoded);
    *request.metadata_mut() = collector.headers.clone();
    request.set_timeout(collector.timeout);
    let path = http::uri::PathAndQuery::from_static(EXPORT);
    let response = grpc.unary(request, path, RawCodec).await?;
    let partial = response.into_inner().partial_success.unwrap_or_default();
    drop(slot);
    Ok(Accepted { rejected: usize::try_from(partial.rejected_spans).unwrap_or(0), message: partial.error_message })
}

/// The channel, for one call whose request body takes the slot.
struct Call {
    channel: Channel,
    slot: Option<Arc<OwnedSemaphorePermit>>,
}

impl Service<http::Request<tonic::body::Body>> for Call {
    type Response = <Channel as Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Channel as Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let slot = self.slot.take();
        self.channel.call(request.map(|body| tonic::body::Body::new(Held { body, rest: None, _slot: slot })))
    }
}

/// A request body, handed over in pieces of at most [`PIECE`] bytes, and the slot it holds
/// until it is dropped. Whole, the message went into the HTTP/2 send buffer at once and the
/// body ended, slot freed, with 256 KiB still waiting there on the collector's window; in
/// pieces, the next is taken only once the window has room, so a body the collector does not
/// read keeps its slot (and at most a piece or two is buffered).
struct Held {
    body: tonic::body::Body,
    /// The rest of a frame larger than a piece.
    rest: Option<Bytes>,
    _slot: Option<Arc<OwnedSemaphorePermit>>,
}

/// The largest piece of a body handed over at once (an HTTP/2 frame's default size).
const PIECE: usize = 16 << 10;

impl Held {
    fn piece(&mut self, mut data: Bytes) -> Frame<Bytes> {
        if data.len() > PIECE {
            self.rest = Some(data.split_off(PIECE));
        }
        Frame::data(data)
    }
}

impl Body for Held {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(rest) = self.rest.take() {
            return Poll::Ready(Some(Ok(self.piece(rest))));
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(self.piece(data)))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.as_ref().map_or(0, |r| r.len() as u64);
        let inner = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// An `ExportTraceServiceRequest`, already encoded; its spans' buffer goes back to the queue
/// once sent (or given up).
pub(crate) struct Encoded {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    pub home: Weak<Queue>,
}

impl Drop for Encoded {
    fn drop(&mut self) {
        if let Some(queue) = self.home.upgrade() {
            queue.recycle(std::mem::take(&mut self.body));
        }
    }
}

/// Sends [`Encoded`] as it is; reads the collector's answer with its protobuf message.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Encoded;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Encoded;
    type Error = tonic::Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.reserve(item.head.len() + item.body.len());
        dst.put_slice(&item.head);
        dst.put_slice(&item.body);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        prost::Message::decode(src).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// What the export's tests share: a collector's settings, and a hostile peer's answer.
#[cfg(test)]
pub(crate) mod peer {
    use std::time::Duration;

    use super::Collector;

    /// Settings for a collector at `endpoint`, with a token to send (and to redact).
    pub fn collector(endpoint: String, keepalive: Duration) -> Collector {
        let mut headers = tonic::metadata::MetadataMap::new();
        headers.insert("authorization", "Bearer s3cr3t-token-value".parse().unwrap());
        headers.insert("x-tenant", "acme".parse().unwrap());
        Collector {
            endpoint,
            headers,
            timeout: Duration::from_secs(30),
            keepalive,
            resource: Vec::new(),
            scope: Vec::new(),
        }
    }

    /// Answers a call at once with an error, before reading its body, and keeps the body in
    /// `unread`, neither read nor reset (HTTP/2 lets it: the body then waits on flow control).
    pub fn answer_early(
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<bytes::Bytes>,
        unread: &mut Vec<h2::RecvStream>,
    ) {
        let answer = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .body(())
            .unwrap();
        let _ = respond.send_response(answer, true);
        unread.push(request.into_body());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    /// A collector that answers every call early ([`peer::answer_early`]); closing `hang_up`
    /// closes its connection.
    async fn early_answering_collector() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hang_up, hung_up) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(tcp).await.unwrap();
            let mut unread = Vec::new();
            let mut hung_up = std::pin::pin!(hung_up);
            while let Some(Ok((request, respond))) = tokio::select! {
                next = connection.accept() => next,
                _ = &mut hung_up => None,
            } {
                peer::answer_early(request, respond, &mut unread);
            }
        });
        (addr, hang_up)
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_read_keeps_the_slot_until_the_body_is_gone() {
        let (addr, hang_up) = early_answering_collector().await;
        let collector = peer::collector(format!("http://{addr}"), Duration::from_secs(60));
        let channel = tonic::transport::Endpoint::from_shared(collector.endpoint.clone()).unwrap().connect_lazy();
        let slots = Arc::new(Semaphore::new(2));
        // A body larger than the stream's initial window (64 KiB): it cannot all be sent.
        let big = || Encoded { head: Vec::new(), body: vec![0; 1 << 20], home: Weak::new() };
        let slot = slots.clone().try_acquire_owned().unwrap();
        let answered = send(channel.clone(), slot, &collector, big()).await;
        assert_eq!(answered.err().map(|s| s.code()), Some(tonic::Code::Unavailable), "the collector's error");
        // The answer came; the body has not gone: its slot is still taken.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(slots.available_permits(), 1, "a body waiting on flow control holds its slot");
        // A small body is sent whole (on a connection of its own: the first body took this
        // one's whole window): its slot comes back with the answer.
        let (other, _open) = early_answering_collector().await;
        let other = tonic::transport::Endpoint::from_shared(format!("http://{other}")).unwrap().connect_lazy();
        let slot = slots.clone().try_acquire_owned().unwrap();
        let small = Encoded { head: Vec::new(), body: vec![0; 100], home: Weak::new() };
        let _ = send(other, slot, &collector, small).await;
        let freed = async {
            while slots.available_permits() != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), freed).await.expect("the sent body's slot returned");
        // The connection gone, the stuck body goes with it, and its slot returns.
        drop(hang_up);
        let freed = async {
            while slots.available_permits() != 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), freed).await.expect("the stuck body's slot returned");
    }

    #[test]
    fn a_body_is_handed_over_in_pieces() {
        use http_body_util::BodyExt as _;
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let data = Bytes::from((0..40_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let mut held =
            Held { body: tonic::body::Body::new(http_body_util::Full::new(data.clone())), rest: None, _slot: None };
        assert_eq!(held.size_hint().exact(), Some(40_000));
        let mut pieces = Vec::new();
        runtime.block_on(async {
            while let Some(frame) = held.frame().await {
                pieces.push(frame.unwrap().into_data().unwrap());
                assert_eq!(held.size_hint().lower(), 40_000 - pieces.iter().map(Bytes::len).sum::<usize>() as u64);
            }
        });
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [PIECE, PIECE, 40_000 - 2 * PIECE]);
        assert_eq!(pieces.concat(), data);
        assert!(held.is_end_stream());
    }
}
