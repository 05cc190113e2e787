//! The listener: accepts at most `max_connections` connections at a time and serves each
//! with hyper under deadlines, so that slow or idle clients cannot hold connections (and
//! file descriptors) until normal clients are refused.
//!
//! - Request head: the whole head (request line and headers) must arrive within
//!   `header_timeout`. For HTTP/1.1 hyper also runs this timer while a kept-alive
//!   connection waits for its next request, so it is the idle timeout too.
//! - Request body: the whole body must arrive within `body_timeout` of the request head
//!   ([`DeadlineBody`]); a client that trickles a byte every few seconds is cut off with
//!   400 rather than holding its connection for hours. A response that streams for long
//!   (the revocation event stream) is not affected: only reading the request is bounded.
//! - HTTP/2 (prior knowledge): keep-alive pings every `header_timeout`; a peer that does
//!   not answer within it is dropped.
//! - Past `max_connections` the listener stops accepting until a connection ends; the
//!   kernel's backlog holds the waiting clients.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt};

use crate::config::Config;

/// How many connections, and how slow a client may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time to send a request head, and to start the next request on a kept-alive
    /// connection.
    pub header_timeout: Duration,
    /// Time to send a request body, counted from the end of its head.
    pub body_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits a configuration sets.
    pub fn from_config(config: &Config) -> Self {
        ConnectionLimits {
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
        }
    }
}

/// Serve `service` on `listener` until `shutdown` completes, then stop accepting and wait
/// for the open connections to finish their requests (the caller bounds that wait).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: wait a little rather than spin, as hyper's examples do.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let body_timeout = limits.body_timeout;
        let per_request = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let deadline = Instant::now() + body_timeout;
            let mut request = request.map(|body| Body::new(DeadlineBody::new(body, deadline)));
            request.extensions_mut().insert(ConnectInfo(peer));
            service.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), per_request)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol ends its connection; there is
            // nothing to answer and nothing worth a log line per client.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A request body that fails once its deadline has passed without the body being complete.
///
/// The timer is made only when the body first has to wait for the client: a body that is
/// already complete (and the empty body of a GET, the hot path) costs no allocation and no
/// timer.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, readable until `deadline`.
    pub fn new(inner: B, deadline: Instant) -> Self {
        DeadlineBody {
            inner,
            deadline,
            timer: None,
        }
    }
}

/// The request body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_at_its_deadline() {
        // One chunk, then nothing more, ever.
        let chunks = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"{\"a\""),
        ))])
        .chain(futures_util::stream::pending());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut body = DeadlineBody::new(http_body_util::StreamBody::new(chunks), deadline);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"{\"a\""));
        // The paused clock runs to the deadline and the read fails.
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyTimedOut>(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_is_read_whole_before_its_deadline() {
        let body = DeadlineBody::new(
            http_body_util::Full::new(Bytes::from_static(b"hello")),
            Instant::now() + Duration::from_secs(1),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, Bytes::from_static(b"hello"));
    }
}
