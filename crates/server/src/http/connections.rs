//! The connection layer: accepts TCP connections and serves HTTP/1.1 on each with hyper,
//! bounding what one client can hold.
//!
//! - At most `max_connections` connections are open at once; past it, new ones wait in the
//!   kernel's listen backlog until one closes (the bound is also kept under the process's open
//!   file limit, which is raised to its hard limit at start).
//! - A request head (request line and headers) must arrive within `header_read_timeout`, and a
//!   kept-alive connection may wait at most that long for its next request: slow or idle
//!   clients are cut (hyper's header read timeout).
//! - A request head over `max_header_bytes` is answered 431 and the connection closed (hyper's
//!   read buffer limit); the body's own limits and `request_timeout` are checked where it is
//!   read (`sessions::read_body`).
//! - Pipelined requests are answered one at a time, in order, each answer written before the
//!   next request is read: a client that sends without reading is held by TCP's flow control,
//!   not by memory here, and cut when it has read nothing for `write_timeout` (hyper has no
//!   such bound: [`Deadlined`]).
//!
//! On stop, no connection is accepted any more; each open one finishes the request it serves
//! and closes (the caller bounds that with `shutdown_timeout`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Limits;

/// Open files kept for everything but client connections (store files, Redis and app
/// connections, logs).
const RESERVED_FILES: usize = 256;

/// The connection bounds of [`serve`].
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest time to send a request head, and longest idle wait between requests.
    pub header_read_timeout: Duration,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Longest a client may go without taking any of what it is sent.
    pub write_timeout: Duration,
}

impl ConnectionLimits {
    /// The bounds `limits` configures, `max_connections` kept under the open file limit.
    pub fn new(limits: &Limits) -> Self {
        let files = open_file_limit();
        let room = files.saturating_sub(RESERVED_FILES).max(1);
        if limits.max_connections > room {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_file_limit = files,
                serving = room,
                "max_connections is above what the open file limit allows; serving fewer"
            );
        }
        ConnectionLimits {
            max_connections: limits.max_connections.min(room),
            header_read_timeout: limits.header_read_timeout,
            max_header_bytes: limits.max_header_bytes,
            write_timeout: limits.write_timeout,
        }
    }
}

/// Raises the soft limit of open files to the hard one and returns it.
fn open_file_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open file limit; assuming 1024");
            1024
        }
    }
}

/// Serves `service` on the connections `listener` accepts, within `limits`, until `stop`
/// completes; then waits for the open connections to finish their requests and close.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        let open = crate::telemetry::metrics().http_connections.clone();
        open.inc();
        let connection = http.serve_connection(
            Deadlined::new(TokioIo::new(stream), limits.write_timeout),
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                tower::ServiceExt::oneshot(service.clone(), request.map(Body::new))
            }),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol ends its connection; nothing to
            // answer it any more.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// After a failed accept: a connection that failed before it was accepted is skipped; anything
/// else (out of file descriptors, say) is logged and accepting waits a moment, as the
/// condition usually passes when connections close.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A connection whose writes must make progress: a write (or flush) that cannot go on for
/// `timeout`, because the client takes nothing of what it is sent, fails with `TimedOut`,
/// which ends the connection. The timer exists only while a write waits.
struct Deadlined<T> {
    io: T,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Deadlined<T> {
    fn new(io: T, timeout: Duration) -> Self {
        Deadlined {
            io,
            timeout,
            stalled: None,
        }
    }

    /// What a write that could not go on answers: wait, unless it has waited `timeout`.
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took nothing of its answers for write_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write's outcome, the timer dropped when it went on.
    fn written<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Deadlined<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Deadlined<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.written(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.written(cx, poll)
    }
}
