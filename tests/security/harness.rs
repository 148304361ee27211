//! What the attacks need besides `common`: raw HTTP/2 exchanges, a gRPC greeter and Axum
//! handlers that record whether they ran (and with which principal), and plain listeners that
//! count what reaches them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tonic::transport::Server;
use tower_wacht::{Principal, RequireMethodPermissionsLayer, WachtAuthLayer};

use crate::grpc_server::pb::greeter_server::{Greeter, GreeterServer};
use crate::grpc_server::pb::{HelloReply, HelloRequest, Tick, TicksRequest, WhisperRequest};

/// How long any single exchange may take before the test fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Counts handler runs, and how many of them had no principal.
#[derive(Clone, Default)]
pub struct Runs {
    pub total: Arc<AtomicUsize>,
    pub anonymous: Arc<AtomicUsize>,
}

impl Runs {
    pub fn record(&self, principal: Option<&Principal>) {
        self.total.fetch_add(1, Ordering::SeqCst);
        if principal.is_none() {
            self.anonymous.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn anonymous(&self) -> usize {
        self.anonymous.load(Ordering::SeqCst)
    }
}

/// The example's greeter with no defensive check of its own: it records every run, so a
/// request that reaches it without a principal is seen.
#[derive(Clone, Default)]
pub struct RecordingGreeter(pub Runs);

#[tonic::async_trait]
impl Greeter for RecordingGreeter {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let principal = request.extensions().get::<Principal>();
        self.0.record(principal);
        Ok(tonic::Response::new(HelloReply {
            message: "hello".into(),
            client_id: principal.map(|p| p.client_id().to_string()).unwrap_or_default(),
            permissions: Vec::new(),
        }))
    }

    async fn shout(&self, request: tonic::Request<HelloRequest>) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        self.say_hello(request).await
    }

    async fn whisper(
        &self,
        request: tonic::Request<WhisperRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let (metadata, extensions, message) = request.into_parts();
        let hello = HelloRequest { name: message.name };
        self.say_hello(tonic::Request::from_parts(metadata, extensions, hello))
            .await
    }

    type TicksStream = futures_util::stream::Empty<Result<Tick, tonic::Status>>;

    /// Records the run; no ticks.
    async fn ticks(
        &self,
        request: tonic::Request<TicksRequest>,
    ) -> Result<tonic::Response<Self::TicksStream>, tonic::Status> {
        self.0.record(request.extensions().get::<Principal>());
        Ok(tonic::Response::new(futures_util::stream::empty()))
    }
}

/// The gRPC example's shape, `Server::builder().layer(auth).layer(guard).add_service(..)`,
/// around a recording greeter.
pub async fn serve_grpc(
    auth: WachtAuthLayer,
    guard: RequireMethodPermissionsLayer,
    greeter: RecordingGreeter,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Server::builder()
        .layer(auth)
        .layer(guard)
        .add_service(GreeterServer::new(greeter));
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    addr
}

/// A Tonic server with the auth layer and no method guard (a service that relies on the
/// layer alone).
pub async fn serve_grpc_without_guard(auth: WachtAuthLayer, greeter: RecordingGreeter) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Server::builder().layer(auth).add_service(GreeterServer::new(greeter));
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    addr
}

/// One gRPC-framed `HelloRequest`.
pub fn grpc_frame(name: &str) -> Bytes {
    let message = HelloRequest { name: name.into() }.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small message").to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

pub use crate::common::h2::Raw;

/// Sends one request over a fresh HTTP/2 (prior knowledge) connection.
pub async fn raw_h2<B>(addr: SocketAddr, request: http::Request<B>) -> Raw
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::time::timeout(DEADLINE, crate::common::h2::exchange(addr, request))
        .await
        .expect("raw HTTP/2 exchange in time")
}

/// A listener that answers every request with `answer` and counts the requests that reached
/// it.
#[derive(Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Listener {
    pub async fn start(
        answer: impl Fn(&http::request::Parts) -> http::Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Listener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let (h, b) = (Arc::clone(&hits), Arc::clone(&bodies));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, b, answer) = (Arc::clone(&h), Arc::clone(&b), Arc::clone(&answer));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (h, b, answer) = (Arc::clone(&h), Arc::clone(&b), Arc::clone(&answer));
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            h.fetch_add(1, Ordering::SeqCst);
                            b.lock().expect("lock").push(bytes);
                            Ok::<_, std::convert::Infallible>(answer(&parts))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Listener { addr, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
