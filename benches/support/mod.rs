//! What the micro benchmarks share: a service that does nothing, and a request carrying an
//! `Authorization` header. (A folder without `main.rs`, so Cargo does not take it for a bench.)

#![allow(dead_code)] // each bench uses what it needs

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::Service;

/// The inner service: answers at once with an empty body of the request's body type.
#[derive(Clone)]
pub struct Noop;

impl<B: Default> Service<Request<B>> for Noop {
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        black_box(&req);
        ready(Ok(Response::new(B::default())))
    }
}

/// An empty-bodied request with this `Authorization` header.
pub fn request<B: Default>(header: &HeaderValue) -> Request<B> {
    let mut req = Request::new(B::default());
    req.headers_mut().insert(http::header::AUTHORIZATION, header.clone());
    req
}
