//! The JWKS issuer's HTTP/1.1 server: `GET /.well-known/jwks.json`, nothing else.

use std::sync::{Mutex, PoisonError};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{IssuerState, JwksAnswer};
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
    let answer = state.lock().unwrap_or_else(PoisonError::into_inner).fetch();
    let (status, body) = match answer {
        JwksAnswer::Keys(document) => (StatusCode::OK, document),
        JwksAnswer::Unavailable => return bare(StatusCode::SERVICE_UNAVAILABLE),
        JwksAnswer::Deactivated => (
            StatusCode::NOT_FOUND,
            json!({ "error": "not_found", "error_description": "OAuth app not found" }),
        ),
    };
    let mut response = Response::new(FakeBody::full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
