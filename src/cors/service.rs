//! [`McpCors`]: answers preflights from allowed origins, passes everything else on, and puts
//! the allowance on the answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, ORIGIN, TE, TRANSFER_ENCODING, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::origin::is_allowed;
use super::{MCP_REQUEST_HEADERS, Settings};
use crate::body::ResponseBody;

/// Methods an MCP endpoint answers: `POST` (messages), `GET` (a legacy SSE stream), `DELETE`
/// (ending a legacy session).
const METHODS: &str = "GET, POST, DELETE";
/// Private Network Access (a public page calling a server on a private address).
const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";
/// More requested headers than this in one preflight are not looked at.
const MAX_REQUESTED_HEADERS: usize = 64;

/// A CORS preflight as a browser sends it: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`, without a body, `Content-Type`, `TE` or
/// `Transfer-Encoding`, whatever the HTTP version. Anything more is not a preflight: a gRPC
/// call needs none, and Tonic routes by path alone and reads the body whatever the content type
/// says, so it would run the method. Shared by [`McpCors`] and the auth layer's
/// `pass_cors_preflight`.
pub(crate) fn is_preflight<B: Body>(req: &Request<B>) -> bool {
    let headers = req.headers();
    req.method() == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        && !headers.contains_key(CONTENT_TYPE)
        && !headers.contains_key(TE)
        && !headers.contains_key(TRANSFER_ENCODING)
        && req.body().size_hint().exact() == Some(0)
}

/// The service of [`McpCorsLayer`](super::McpCorsLayer).
#[derive(Debug, Clone)]
pub struct McpCors<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> McpCors<S> {
    pub(super) fn new(inner: S, settings: Arc<Settings>) -> Self {
        McpCors { inner, settings }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for McpCors<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = McpCorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let origin = req
            .headers()
            .get(ORIGIN)
            .filter(|origin| is_allowed(&self.settings.origins, origin))
            .cloned();
        match origin {
            Some(origin) if is_preflight(&req) => McpCorsFuture {
                state: State::Answered {
                    response: Some(self.settings.preflight(origin, req.headers())),
                },
            },
            origin => McpCorsFuture {
                state: State::Inner {
                    future: self.inner.call(req),
                    allowance: origin.map(|origin| (origin, self.settings.exposed.clone())),
                },
            },
        }
    }
}

impl Settings {
    /// The answer to a preflight from `origin`: 204, the methods, the requested headers this
    /// layer allows (a browser refuses the request if one it asked for is missing), how long
    /// to keep it.
    fn preflight(&self, origin: HeaderValue, request: &HeaderMap) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
        if let Some(allowed) = self.allowed_request_headers(request) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        let private_network = request
            .get(REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if private_network {
            headers.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        headers.insert(
            VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers, access-control-request-private-network",
            ),
        );
        response
    }

    /// The headers a preflight asks for (`Access-Control-Request-Headers`) that are allowed,
    /// lowercased, each once.
    fn allowed_request_headers(&self, request: &HeaderMap) -> Option<HeaderValue> {
        let mut allowed: Vec<String> = Vec::new();
        let requested = request
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .take(MAX_REQUESTED_HEADERS);
        for name in requested {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let name = name.as_str();
            let mcp_param = name.strip_prefix("mcp-param-").is_some_and(|rest| !rest.is_empty());
            let known = MCP_REQUEST_HEADERS.contains(&name)
                || mcp_param
                || self.extra_request_headers.iter().any(|h| h.as_str() == name);
            if known && !allowed.iter().any(|a| a == name) {
                allowed.push(name.to_owned());
            }
        }
        if allowed.is_empty() {
            return None;
        }
        HeaderValue::from_str(&allowed.join(", ")).ok()
    }
}

pin_project! {
    /// Response future of [`McpCors`].
    pub struct McpCorsFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner {
            #[pin]
            future: F,
            // The request's allowed origin and the exposed headers, put on the answer.
            allowance: Option<(HeaderValue, HeaderValue)>,
        },
        Answered { response: Option<Response<()>> },
    }
}

impl<F, ResB, E> Future for McpCorsFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future, allowance } => {
                let mut response = ready!(future.poll(cx))?;
                let headers = response.headers_mut();
                // The answer depends on the request's `Origin`: caches must keep them apart.
                headers.append(VARY, HeaderValue::from_static("origin"));
                if let Some((origin, exposed)) = allowance.take() {
                    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
                }
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            StateProj::Answered { response } => {
                // Polled again after completing: an empty error, never a second allowance.
                let response = response.take().unwrap_or_else(|| {
                    let mut response = Response::new(());
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response
                });
                Poll::Ready(Ok(response.map(|()| ResponseBody::empty())))
            }
        }
    }
}
