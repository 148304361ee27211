//! What the test servers (`FakeGateway`, `DevIssuer`, `JwksIssuer`) share: an HTTP/1.1
//! keep-alive server on a loopback listener, each connection a task, and a handle that stops
//! it, closing the listener and every open connection, when told to or when dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::header::ALLOW;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::body::FakeBody;

/// An empty answer with `status`.
pub(crate) fn bare(status: StatusCode) -> Response<FakeBody> {
    let mut response = Response::new(FakeBody::empty());
    *response.status_mut() = status;
    response
}

/// `405 Method Not Allowed` naming the methods that are.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<FakeBody> {
    let mut response = bare(StatusCode::METHOD_NOT_ALLOWED);
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The TCP peer of the connection a request came on, in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// A running server. Dropping it stops the server.
pub(crate) struct Running {
    name: &'static str,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Running {
    /// Serves `listener` on the current tokio runtime, answering every request with
    /// `handler`. `name` tells the servers apart in debug logs.
    pub(crate) fn spawn<H, Fut>(listener: TcpListener, name: &'static str, handler: H) -> io::Result<Running>
    where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = io::Result<Response<FakeBody>>> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shutdown_rx, name, handler));
        Ok(Running {
            name,
            addr,
            shutdown,
            task: Mutex::new(Some(task)),
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tells the server to stop (it closes the listener and every connection); returns at once.
    pub(crate) fn signal_stop(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops the server and waits for its task to end.
    pub(crate) async fn stop(&self) {
        self.signal_stop();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task
            && let Err(err) = task.await
        {
            tracing::debug!(error = %err, server = self.name, "test server task failed");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Accepts connections until `shutdown` fires (or its sender is dropped), then aborts every
/// connection task.
async fn accept_loop<H, Fut>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, name: &'static str, handler: H)
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Response<FakeBody>>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, name, handler.clone()));
                }
                Err(err) => {
                    tracing::debug!(error = %err, server = name, "test server: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection<H, Fut>(stream: TcpStream, peer: SocketAddr, name: &'static str, handler: H)
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Response<FakeBody>>> + Send + 'static,
{
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, server = name, "test server: set_nodelay failed");
    }
    let result = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(stream),
            service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                handler(req)
            }),
        )
        .await;
    if let Err(err) = result {
        tracing::debug!(error = %err, server = name, "test server: connection ended with an error");
    }
}
