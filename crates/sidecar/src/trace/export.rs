//! Span export: ended spans are appended, already encoded, to a bounded queue under an
//! uncontended lock; one thread (with its own runtime) collects them every [`TICK`], or as
//! soon as a batch is full, and sends them over OTLP/gRPC, up to [`IN_FLIGHT`] calls at once
//! (a collector's round trip does not cap the rate). A request never waits for that thread
//! and wakes it at most once per [`BATCH_BYTES`] of spans; a dead or slow collector costs it
//! nothing but dropped spans, counted.
//!
//! Batches are 256 KiB and their buffers reused: under load a span waits milliseconds, not
//! a whole tick, and a batch's memory stays small (measured: the hop's speed is the same with
//! batches of 64 KiB, 256 KiB and 1 MiB).

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::call::{self, Encoded};
use super::transport;

/// Bytes of encoded spans waiting for export, at most (about 25,000 spans).
const QUEUE_BYTES: usize = 8 << 20;
/// Spans per export call, at most.
const BATCH_SPANS: usize = 2_048;
/// Bytes per export call, about (collectors refuse messages over 4 MiB by default); a full
/// batch is sent at once.
const BATCH_BYTES: usize = 256 << 10;
/// Export calls in flight at once: with one, a collector that answers slowly (a distant one,
/// or one whose answers wait out a delayed ACK) caps a sidecar at a batch per round trip.
const IN_FLIGHT: usize = 4;
/// HTTP/2 keepalive of the collector's connection (as the operator stream's).
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(20);
/// How often the export thread collects what ended.
const TICK: Duration = Duration::from_millis(100);
/// Export failures are logged at warn at most this often (each at debug).
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The longest collector message logged.
const MAX_LOGGED: usize = 256;

/// Encoded spans for one export call.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub body: Vec<u8>,
    pub spans: usize,
}

#[derive(Debug, Default)]
struct Waiting {
    batches: Vec<Batch>,
    bytes: usize,
    /// Sent batches' buffers, kept for the next ones: no fresh pages to fault in, no growth.
    spare: Vec<Vec<u8>>,
}

/// Buffers kept for reuse, at most.
const SPARE: usize = 4;

/// The bounded queue between requests and the export thread.
#[derive(Debug)]
pub(crate) struct Queue {
    waiting: Mutex<Waiting>,
    dropped: IntCounter,
    /// Signalled when a batch fills up (shared with the export thread, which holds no queue
    /// while it waits: it ends once the queue is gone).
    full: Arc<tokio::sync::Notify>,
}

impl Queue {
    pub fn new(dropped: IntCounter) -> Self {
        Self { waiting: Mutex::default(), dropped, full: Arc::default() }
    }

    /// Appends one span, written by `write`; a full queue drops it and counts it.
    pub fn push(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.bytes >= QUEUE_BYTES {
            drop(waiting);
            self.dropped.inc();
            return;
        }
        if waiting.batches.last().is_none_or(|b| b.spans >= BATCH_SPANS || b.body.len() >= BATCH_BYTES) {
            let body = waiting.spare.pop().unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + (16 << 10)));
            waiting.batches.push(Batch { body, spans: 0 });
        }
        let Waiting { batches, bytes, .. } = &mut *waiting;
        let batch = batches.last_mut().expect("pushed above");
        let before = batch.body.len();
        write(&mut batch.body);
        batch.spans += 1;
        *bytes += batch.body.len() - before;
        let filled = batch.body.len() >= BATCH_BYTES || batch.spans >= BATCH_SPANS;
        drop(waiting);
        if filled {
            self.full.notify_one();
        }
    }

    /// Whether a batch is full (the export thread is woken then).
    pub fn has_full_batch(&self) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.batches.len() > 1 || waiting.batches.last().is_some_and(|b| b.body.len() >= BATCH_BYTES)
    }

    /// Everything waiting, in order.
    pub fn take(&self) -> Vec<Batch> {
        self.take_up_to(usize::MAX, true)
    }

    /// The oldest `n` batches waiting; the last, still filling, only when `partial`.
    pub fn take_up_to(&self, n: usize, partial: bool) -> Vec<Batch> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let filling = waiting.batches.last().is_some_and(|b| b.body.len() < BATCH_BYTES && b.spans < BATCH_SPANS);
        let n = if partial || !filling { n } else { n.min(waiting.batches.len() - 1) };
        if n >= waiting.batches.len() {
            waiting.bytes = 0;
            return std::mem::take(&mut waiting.batches);
        }
        let rest = waiting.batches.split_off(n);
        let taken = std::mem::replace(&mut waiting.batches, rest);
        waiting.bytes -= taken.iter().map(|b| b.body.len()).sum::<usize>();
        taken
    }

    /// Takes back a sent batch's buffer.
    pub fn recycle(&self, mut body: Vec<u8>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.spare.len() < SPARE && body.capacity() <= 4 * BATCH_BYTES {
            body.clear();
            waiting.spare.push(body);
        }
    }

    pub fn drop_spans(&self, n: usize) {
        self.dropped.inc_by(n as u64);
    }
}

/// A request for the export thread to collect and send now, and its answer.
#[derive(Debug, Default)]
pub(crate) struct Flush {
    request: tokio::sync::Notify,
    /// Collections completed (after a flush request), and the condition to wait on them.
    done: Mutex<u64>,
    changed: Condvar,
}

impl Flush {
    /// Asks for a collection now and waits until one has been sent, at most `within`;
    /// `false` when it was not.
    pub fn now(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let seen = *self.done.lock().unwrap_or_else(PoisonError::into_inner);
        self.request.notify_one();
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while *done == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self.changed.wait_timeout(done, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    fn finished(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }
}

/// Where and how spans are sent.
#[derive(Debug)]
pub(crate) struct Collector {
    pub endpoint: String,
    pub headers: MetadataMap,
    pub timeout: Duration,
    /// HTTP/2 keepalive: a PING this often, the connection replaced when one goes unanswered
    /// for as long (a black-holed route or a peer that stopped reading would otherwise hold
    /// the one connection, and every call on it would time out, for good).
    pub keepalive: Duration,
    /// The encoded `Resource` and `InstrumentationScope` every request carries.
    pub resource: Vec<u8>,
    pub scope: Vec<u8>,
}

/// Starts the export thread; it ends once `queue` is gone (after a last collection).
pub(crate) fn spawn(collector: Collector, queue: Weak<Queue>, flush: Arc<Flush>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut endpoint = tonic::transport::Endpoint::from_shared(collector.endpoint.clone())?
        .connect_timeout(Duration::from_secs(2).min(collector.timeout))
        .timeout(collector.timeout)
        .http2_keep_alive_interval(collector.keepalive)
        .keep_alive_timeout(collector.keepalive)
        .keep_alive_while_idle(true);
    if collector.endpoint.starts_with("https://") {
        endpoint = endpoint.tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())?;
    }
    // The channel's background work belongs to the export runtime.
    let current = transport::Current::default();
    let channel = {
        let _entered = runtime.enter();
        endpoint.connect_with_connector_lazy(transport::Connector { current: current.clone() })
    };
    std::thread::Builder::new()
        .name("llmroute-trace-export".into())
        .spawn(move || runtime.block_on(run(collector, channel, current, queue, flush)))?;
    Ok(())
}

async fn run(
    collector: Collector,
    channel: Channel,
    current: transport::Current,
    queue: Weak<Queue>,
    flush: Arc<Flush>,
) {
    let collector = Arc::new(collector);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = Failures::default();
    let mut sending = tokio::task::JoinSet::new();
    let mut stuck_since: Option<Instant> = None;
    let Some(full) = queue.upgrade().map(|q| q.full.clone()) else { return };
    let export = Export { collector: &collector, channel: &channel, queue: &queue, slots: &slots };
    loop {
        // A batch still filling goes on a tick or a flush; a full one as soon as a slot is
        // free. (Were a call's end to send whatever was waiting, a loaded sidecar would make
        // many small calls, each costing what a full one does.)
        let (flushing, partial) = tokio::select! {
            _ = tick.tick() => (false, true),
            () = flush.request.notified() => (true, true),
            () = full.notified() => (false, false),
            Some(sent) = sending.join_next(), if !sending.is_empty() => {
                export.settle(&mut failures, sent);
                (false, false)
            }
        };
        if !export.start(&mut sending, partial) {
            return;
        }
        // Every slot held by a body the collector answered and left unread, for a call's
        // timeout: the connection is cut (its bodies and slots go) and made anew.
        if sending.is_empty() && slots.available_permits() == 0 {
            let since = *stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= collector.timeout {
                tracing::warn!("the trace collector left every export's body unread: its connection is replaced");
                current.cut();
                stuck_since = None;
            }
        } else {
            stuck_since = None;
        }
        if flushing {
            // What was waiting is sent, or given up, before the flush is answered.
            while let Some(sent) = sending.join_next().await {
                export.settle(&mut failures, sent);
                export.start(&mut sending, true);
            }
            flush.finished();
        }
    }
}

/// An export call's outcome: its spans, and what the collector said.
type Sent = (usize, Result<call::Accepted, String>);

/// What the export loop works with.
struct Export<'a> {
    collector: &'a Arc<Collector>,
    channel: &'a Channel,
    queue: &'a Weak<Queue>,
    /// [`IN_FLIGHT`] slots, each held by a call's request body until it is sent or dropped.
    slots: &'a Arc<Semaphore>,
}

impl Export<'_> {
    /// Starts export calls for the oldest batches waiting (the one still filling only when
    /// `partial`), one per free slot; `false` once the queue is gone (the sidecar is ending).
    fn start(&self, sending: &mut tokio::task::JoinSet<Sent>, partial: bool) -> bool {
        let Some(live) = self.queue.upgrade() else { return false };
        let mut free = Vec::new();
        while let Ok(slot) = self.slots.clone().try_acquire_owned() {
            free.push(slot);
        }
        let batches = live.take_up_to(free.len(), partial);
        drop(live);
        for (batch, slot) in batches.into_iter().zip(free) {
            let spans = batch.spans;
            let head = super::wire::request_head(&self.collector.resource, &self.collector.scope, batch.body.len());
            let encoded = Encoded { head, body: batch.body, home: self.queue.clone() };
            let (collector, channel) = (self.collector.clone(), self.channel.clone());
            sending.spawn(async move {
                let call = call::send(channel, slot, &collector, encoded);
                let sent = match tokio::time::timeout(collector.timeout, call).await {
                    Ok(Ok(accepted)) => Ok(accepted),
                    Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), collector.printable(status.message()))),
                    Err(_) => Err(format!("no answer within {:?}", collector.timeout)),
                };
                (spans, sent)
            });
        }
        true
    }

    /// Counts what an export call lost: what the collector rejected (capped at what it was
    /// sent), or everything when the call failed.
    fn settle(&self, failures: &mut Failures, sent: Result<Sent, tokio::task::JoinError>) {
        let Ok((spans, sent)) = sent else { return };
        let lost = match sent {
            Ok(accepted) if accepted.rejected > 0 => {
                let lost = accepted.rejected.min(spans);
                failures.note(lost, || {
                    format!(
                        "the collector rejected {lost} of {spans} spans: {}",
                        self.collector.printable(&accepted.message)
                    )
                });
                lost
            }
            Ok(_) => 0,
            Err(why) => {
                failures.note(spans, || why);
                spans
            }
        };
        if lost > 0
            && let Some(queue) = self.queue.upgrade()
        {
            queue.drop_spans(lost);
        }
    }
}

impl Collector {
    /// A collector's words made safe for one log line: any credential we send it (a header
    /// value, or a word of one) replaced, escaped, at most [`MAX_LOGGED`] bytes. A collector
    /// may echo what it was sent (`invalid token: Bearer ...`).
    fn printable(&self, message: &str) -> String {
        let mut message = message.to_owned();
        for value in self.headers.iter().filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(_, v) => v.to_str().ok(),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        }) {
            for secret in std::iter::once(value).chain(value.split_whitespace()) {
                if secret.len() >= MIN_REDACTED {
                    message = redact(&message, secret);
                }
            }
        }
        printable(&message)
    }
}

/// `message` with every occurrence of `secret` replaced, whatever its ASCII case.
fn redact(message: &str, secret: &str) -> String {
    let (lower, secret) = (message.to_ascii_lowercase(), secret.to_ascii_lowercase());
    let mut out = String::with_capacity(message.len());
    let mut at = 0;
    // ASCII lower-casing keeps every byte where it was: positions in `lower` are in `message`.
    while let Some(found) = lower[at..].find(&secret) {
        out.push_str(&message[at..at + found]);
        out.push_str("[redacted]");
        at += found + secret.len();
    }
    out.push_str(&message[at..]);
    out
}

/// Words of a header value this long or longer are redacted from a collector's messages
/// (shorter ones, like `Bearer`, are not secrets).
const MIN_REDACTED: usize = 8;

/// A collector's words made safe for one log line: escaped, at most [`MAX_LOGGED`] bytes.
fn printable(message: &str) -> String {
    let mut out: String = message.escape_debug().collect();
    if out.len() > MAX_LOGGED {
        let mut end = MAX_LOGGED;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// Failed exports: each at debug, a warning at most every [`WARN_EVERY`] with the count since.
#[derive(Default)]
struct Failures {
    last_warned: Option<Instant>,
    since: u64,
}

impl Failures {
    fn note(&mut self, spans: usize, why: impl FnOnce() -> String) {
        self.since += spans as u64;
        let why = why();
        tracing::debug!(spans, reason = %why, "span export failed; those spans are lost");
        if self.last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(spans_lost = self.since, reason = %why, "trace export to the collector is failing");
            self.last_warned = Some(Instant::now());
            self.since = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::call::peer::collector;

    fn queue() -> Queue {
        Queue::new(IntCounter::new("dropped", "d").unwrap())
    }

    #[test]
    fn credentials_a_collector_echoes_are_not_logged() {
        let c = collector("http://127.0.0.1:1".into(), KEEPALIVE);
        let said = c.printable("invalid token: Bearer s3cr3t-token-value (S3CR3T-TOKEN-VALUE); tenant acme");
        assert!(!said.to_ascii_lowercase().contains("s3cr3t"), "{said}");
        assert_eq!(redact("é x SeCrEtWoRd é", "secretword"), "é x [redacted] é");
        assert!(said.contains("[redacted]") && said.contains("acme"), "short words are no secrets: {said}");
    }

    /// An OTLP collector that reads each call's body and answers OK; counts the calls. With
    /// `first_unread`, its first connection answers every call at once with an error and
    /// leaves the body unread, never resetting it.
    async fn counting_collector(calls: Arc<std::sync::atomic::AtomicUsize>) -> std::net::SocketAddr {
        collector_with(calls, false).await
    }

    async fn collector_with(calls: Arc<std::sync::atomic::AtomicUsize>, first_unread: bool) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut unread_first = first_unread;
            while let Ok((tcp, _)) = listener.accept().await {
                let calls = calls.clone();
                let unread = std::mem::take(&mut unread_first);
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else { return };
                    let mut kept = Vec::new();
                    // The connection is driven by `accept`; each call is answered apart.
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        if unread {
                            super::call::peer::answer_early(request, respond, &mut kept);
                            continue;
                        }
                        let calls = calls.clone();
                        tokio::spawn(async move {
                            let mut body = request.into_body();
                            while let Some(Ok(data)) = body.data().await {
                                let _ = body.flow_control().release_capacity(data.len());
                            }
                            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let answer =
                                http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
                            let Ok(mut stream) = respond.send_response(answer, false) else { return };
                            let _ = stream.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let _ = stream.send_trailers(trailers);
                        });
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_connection_whose_bodies_are_left_unread_is_cut_and_made_anew() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let addr = runtime.block_on(collector_with(calls.clone(), true));
        let queue = Arc::new(queue());
        let flush = Arc::new(Flush::default());
        let mut c = collector(format!("http://{addr}"), Duration::from_secs(60));
        c.timeout = Duration::from_millis(500);
        spawn(c, Arc::downgrade(&queue), flush.clone()).unwrap();
        // Bodies larger than a stream's window: every slot ends up held by an unread body.
        let big = vec![0u8; 200 << 10];
        let deadline = Instant::now() + Duration::from_secs(15);
        while calls.load(SeqCst) == 0 && Instant::now() < deadline {
            queue.push(|buf| buf.extend_from_slice(&big));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(calls.load(SeqCst) > 0, "exports never went through again");
        assert!(queue.dropped.get() > 0, "the unread calls' spans are counted");
        drop(queue);
        drop(runtime);
    }

    /// A TCP relay to `to` that, once `cut` is raised, stops relaying on the connections it
    /// already has (a black-holed route) and relays new ones; counts its connections.
    async fn relay(
        to: std::net::SocketAddr,
        cut: Arc<std::sync::atomic::AtomicUsize>,
        connections: Arc<std::sync::atomic::AtomicUsize>,
    ) -> std::net::SocketAddr {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                connections.fetch_add(1, SeqCst);
                let generation = cut.load(SeqCst);
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(to).await else { return };
                    let (mut client, mut server) = (client, server);
                    let cut_off = async {
                        while cut.load(SeqCst) == generation {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    // Cut: the relay stops; its sockets stay open, and silent.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut_off => {}
                    }
                    std::future::pending::<()>().await;
                });
            }
        });
        addr
    }

    #[test]
    fn a_black_holed_connection_is_replaced_by_its_keepalive() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (calls, cut, connections) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let addr = runtime.block_on(async {
            let collector = counting_collector(calls.clone()).await;
            relay(collector, cut.clone(), connections.clone()).await
        });
        let queue = Arc::new(queue());
        let flush = Arc::new(Flush::default());
        spawn(collector(format!("http://{addr}"), Duration::from_millis(300)), Arc::downgrade(&queue), flush.clone())
            .unwrap();
        queue.push(|buf| buf.extend_from_slice(b"span"));
        assert!(flush.now(Duration::from_secs(10)));
        assert_eq!((calls.load(SeqCst), connections.load(SeqCst)), (1, 1));
        // The route goes black: a call on that connection gets no answer, and no error.
        cut.fetch_add(1, SeqCst);
        queue.push(|buf| buf.extend_from_slice(b"span"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while connections.load(SeqCst) < 2 && Instant::now() < deadline {
            queue.push(|buf| buf.extend_from_slice(b"span"));
            let _ = flush.now(Duration::from_millis(200));
        }
        assert_eq!(connections.load(SeqCst), 2, "the dead connection was replaced");
        // Calls go through again (the 30 s call timeout has not passed).
        let before = calls.load(SeqCst);
        queue.push(|buf| buf.extend_from_slice(b"span"));
        assert!(flush.now(Duration::from_secs(10)));
        assert!(calls.load(SeqCst) > before);
        drop(queue);
        drop(runtime);
    }

    #[test]
    fn collector_messages_are_escaped_and_bounded() {
        assert_eq!(printable("no\nFAKE LINE"), "no\\nFAKE LINE");
        let long = printable(&"é".repeat(1_000));
        assert!(long.len() <= MAX_LOGGED + '…'.len_utf8() && long.ends_with('…'));
    }

    #[test]
    fn a_flush_waits_for_a_collection_and_has_a_deadline() {
        let flush = Arc::new(Flush::default());
        // Nobody collects: the wait ends at its deadline.
        assert!(!flush.now(Duration::from_millis(50)));
        let collector = flush.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(collector.request.notified());
            collector.finished();
        });
        assert!(flush.now(Duration::from_secs(10)));
        thread.join().unwrap();
    }

    #[test]
    fn a_full_batch_wakes_the_export_thread_and_others_do_not() {
        use futures_util::FutureExt as _;
        let q = queue();
        q.push(|buf| buf.extend_from_slice(b"abc"));
        assert!(q.full.notified().now_or_never().is_none(), "a span alone waits for the tick");
        assert!(!q.has_full_batch());
        q.push(|buf| buf.extend_from_slice(&vec![0; BATCH_BYTES]));
        assert!(q.has_full_batch());
        assert!(q.full.notified().now_or_never().is_some(), "a full batch is sent at once");
        assert!(q.full.notified().now_or_never().is_none(), "once");
        assert_eq!(q.take().iter().map(|b| b.spans).sum::<usize>(), 2);
    }

    #[test]
    fn the_oldest_batches_are_taken_first_and_free_their_room() {
        let q = queue();
        let big = vec![0u8; BATCH_BYTES];
        for n in 0..3u8 {
            q.push(|buf| buf.extend_from_slice(&[n]));
            q.push(|buf| buf.extend_from_slice(&big));
        }
        q.push(|buf| buf.extend_from_slice(&[3]));
        let first = q.take_up_to(2, false);
        assert_eq!(first.iter().map(|b| b.body[0]).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(q.waiting.lock().unwrap().bytes, 2 + BATCH_BYTES, "what is left, counted");
        assert_eq!(q.take_up_to(0, true).len(), 0);
        // The batch still filling stays unless asked for.
        let full = q.take_up_to(5, false);
        assert_eq!(full.iter().map(|b| b.body[0]).collect::<Vec<_>>(), [2]);
        assert_eq!(q.take_up_to(5, false).len(), 0);
        let filling = q.take_up_to(5, true);
        assert_eq!(filling.iter().map(|b| b.body.as_slice()).collect::<Vec<_>>(), [&[3u8][..]]);
        assert_eq!(q.waiting.lock().unwrap().bytes, 0);
    }

    #[test]
    fn a_batch_still_filling_waits_for_the_tick_not_for_the_last_call_to_end() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let addr = runtime.block_on(counting_collector(calls.clone()));
        let queue = Arc::new(queue());
        let flush = Arc::new(Flush::default());
        spawn(collector(format!("http://{addr}"), KEEPALIVE), Arc::downgrade(&queue), flush.clone()).unwrap();
        queue.push(|buf| buf.extend_from_slice(b"span"));
        assert!(flush.now(Duration::from_secs(10)));
        assert_eq!(calls.load(SeqCst), 1);
        // A steady trickle of spans, far below a batch, for five ticks: a call per tick, not
        // a call whenever the last one ended (a loopback call ends within a millisecond).
        let started = Instant::now();
        let mut pushed = 1;
        while started.elapsed() < 5 * TICK {
            queue.push(|buf| buf.extend_from_slice(b"span"));
            pushed += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
        assert!(flush.now(Duration::from_secs(10)));
        let made = calls.load(SeqCst);
        assert!((2..=9).contains(&made), "{made} calls for {pushed} spans over 5 ticks");
        assert_eq!(queue.dropped.get(), 0);
        drop(queue);
        drop(runtime);
    }

    #[test]
    fn spans_are_batched_and_a_full_queue_drops_and_counts() {
        let q = queue();
        for _ in 0..BATCH_SPANS + 1 {
            q.push(|buf| buf.extend_from_slice(b"abc"));
        }
        let batches = q.take();
        assert_eq!(batches.iter().map(|b| b.spans).collect::<Vec<_>>(), [BATCH_SPANS, 1]);
        assert!(q.take().is_empty());
        // Big spans: batches stay about BATCH_BYTES; the queue stops at QUEUE_BYTES.
        let big = vec![0u8; 100_000];
        let mut pushed = 0;
        while q.dropped.get() == 0 {
            q.push(|buf| buf.extend_from_slice(&big));
            pushed += 1;
        }
        let batches = q.take();
        assert_eq!(batches.iter().map(|b| b.spans).sum::<usize>(), pushed - 1);
        assert!(batches.iter().all(|b| b.body.len() <= BATCH_BYTES + big.len()));
        assert!(batches.iter().map(|b| b.body.len()).sum::<usize>() <= QUEUE_BYTES + big.len());
        // Taking empties the queue: it accepts again, into a recycled buffer.
        let recycled: Vec<*const u8> = batches.iter().map(|b| b.body.as_ptr()).collect();
        for batch in batches {
            q.recycle(batch.body);
        }
        q.push(|buf| buf.push(1));
        let again = q.take();
        assert_eq!(again.len(), 1);
        assert!(recycled.contains(&again[0].body.as_ptr()), "a sent buffer is reused");
        assert_eq!(again[0].body, [1]);
        assert_eq!(q.dropped.get(), 1);
    }
}
