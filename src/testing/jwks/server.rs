//! The JWKS issuer's HTTP/1.1 server: `GET /.well-known/jwks.json`, nothing else.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::IssuerState;
use crate::testing::body::FakeBody;

const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Accepts connections until `shutdown` fires, then aborts every connection.
pub(super) async fn serve(listener: TcpListener, state: Arc<Mutex<IssuerState>>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&state)));
                }
                Err(err) => {
                    tracing::debug!(error = %err, "jwks issuer: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, state: Arc<Mutex<IssuerState>>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = route(&state, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    if let Err(err) = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %err, "jwks issuer: connection ended with an error");
    }
}

fn route(state: &Mutex<IssuerState>, req: &Request<Incoming>) -> Response<FakeBody> {
    if req.uri().path() != JWKS_PATH {
        return status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let document = state.lock().unwrap_or_else(PoisonError::into_inner).fetch();
    let Some(document) = document else {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    };
    let mut response = Response::new(FakeBody::full(document.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn status(code: StatusCode) -> Response<FakeBody> {
    let mut response = Response::new(FakeBody::empty());
    *response.status_mut() = code;
    response
}
