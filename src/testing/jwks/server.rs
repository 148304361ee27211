//! The JWKS issuer's HTTP/1.1 server: `GET /.well-known/jwks.json`, nothing else.

use std::sync::{Mutex, PoisonError};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::IssuerState;
use crate::testing::body::FakeBody;
use crate::testing::loopback::bare;

const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Answers one request to the JWKS issuer.
pub(super) fn route(state: &Mutex<IssuerState>, req: &Request<Incoming>) -> Response<FakeBody> {
    if req.uri().path() != JWKS_PATH {
        return bare(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return bare(StatusCode::METHOD_NOT_ALLOWED);
    }
    let document = state.lock().unwrap_or_else(PoisonError::into_inner).fetch();
    let Some(document) = document else {
        return bare(StatusCode::SERVICE_UNAVAILABLE);
    };
    let mut response = Response::new(FakeBody::full(document.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
