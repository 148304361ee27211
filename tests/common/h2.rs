//! One HTTP/2 (prior knowledge) exchange read raw: status, headers, body and trailers, and
//! whether the response ended with its HEADERS frame, which the client libraries hide.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What came back on the wire for one HTTP/2 request.
#[derive(Debug)]
pub struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The stream ended with the response HEADERS frame (a gRPC Trailers-Only response).
    pub ended_with_headers: bool,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `grpc-status`, from the headers (trailers-only) or the trailers.
    pub fn grpc_status(&self) -> Option<&str> {
        self.header("grpc-status").or_else(|| {
            self.trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
        })
    }
}

/// Sends one request over a fresh HTTP/2 (prior knowledge) connection and reads everything
/// back (callers bound it with their own deadline).
pub async fn exchange<B>(addr: SocketAddr, request: http::Request<B>) -> Raw
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let ended_with_headers = body.is_end_stream();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    Raw {
        status: parts.status,
        headers: parts.headers,
        ended_with_headers,
        body: collected.to_bytes(),
        trailers,
    }
}
