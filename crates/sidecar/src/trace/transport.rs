//! The collector's connections, each with a switch that cuts it. A collector that answers a
//! call before reading its body, then neither reads nor resets it and still answers PINGs,
//! would hold the body, and its export slot, for as long as the connection lives: when every
//! slot has been held that way for a call's timeout, the export cuts the connection (its
//! streams fail, their bodies and slots go) and the channel connects anew.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::codegen::Service;

/// Cuts one connection: its reads and writes fail from then on, and a task waiting on either
/// is woken to see it.
#[derive(Debug, Default)]
pub(crate) struct Switch {
    cut: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Switch {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for waker in std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner)) {
            waker.wake();
        }
    }

    /// `Some(error)` once cut; else remembers `cx`'s waker (at most one per direction).
    fn check(&self, cx: &Context<'_>) -> Option<io::Error> {
        if self.cut.load(Ordering::SeqCst) {
            return Some(io::Error::new(io::ErrorKind::ConnectionAborted, "cut by the trace exporter"));
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            if waiting.len() >= 2 {
                waiting.remove(0);
            }
            waiting.push(cx.waker().clone());
        }
        drop(waiting);
        // Cut between the check and the registration: seen now.
        self.cut.load(Ordering::SeqCst).then(|| io::Error::new(io::ErrorKind::ConnectionAborted, "cut"))
    }
}

/// The switch of the connection in use.
#[derive(Clone, Debug, Default)]
pub(crate) struct Current(Arc<Mutex<Option<Arc<Switch>>>>);

impl Current {
    /// Cuts the connection in use, if any.
    pub fn cut(&self) {
        if let Some(switch) = self.0.lock().unwrap_or_else(PoisonError::into_inner).take() {
            switch.cut();
        }
    }
}

/// Connects over TCP (TCP_NODELAY), each connection with its switch.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    pub current: Current,
}

impl Service<http::Uri> for Connector {
    type Response = TokioIo<Cuttable>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Cuttable>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let current = self.current.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let stream = TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            let switch = Arc::new(Switch::default());
            *current.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(switch.clone());
            Ok(TokioIo::new(Cuttable { stream, switch }))
        })
    }
}

/// A TCP stream its [`Switch`] can cut.
#[derive(Debug)]
pub(crate) struct Cuttable {
    stream: TcpStream,
    switch: Arc<Switch>,
}

impl AsyncRead for Cuttable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(cut) = self.switch.check(cx) {
            return Poll::Ready(Err(cut));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(cut) = self.switch.check(cx) {
            return Poll::Ready(Err(cut));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(cut) = self.switch.check(cx) {
            return Poll::Ready(Err(cut));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
