//! The HTTP/1.1 server: accept loop, routing, request parsing and fault injection.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::body::{FakeBody, Step};
use super::loopback::{PeerAddr, bare, method_not_allowed};
use super::model::{Fault, RecordedRequest};
use super::protocol::{CheckRequest, Decision};
use super::state::{JSON, Reply, State};

/// axum's default request body limit.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Path of the check endpoint.
const CHECK_PATH: &str = "/v1/authz/check";

/// How long [`Fault::HalfBodyThenClose`] waits after the first half so that it reaches the
/// wire before the connection is aborted.
const HALF_BODY_PAUSE: Duration = Duration::from_millis(50);

/// State shared between the handles and the server task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state; a poisoned lock is recovered (the state stays usable).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Answers one request to the fake gateway.
pub(crate) async fn route(shared: &Shared, req: Request<Incoming>) -> io::Result<Response<FakeBody>> {
    let path = req.uri().path();
    if path == "/health" {
        return Ok(if req.method() == Method::GET || req.method() == Method::HEAD {
            respond(Reply::plain(StatusCode::OK, "OK"))
        } else {
            method_not_allowed("GET,HEAD")
        });
    }
    if path == CHECK_PATH {
        return if req.method() == Method::POST {
            check(shared, req).await
        } else {
            Ok(method_not_allowed("POST"))
        };
    }
    Ok(bare(StatusCode::NOT_FOUND))
}

/// Outcome of reading the request body.
enum ReadBody {
    Complete(Bytes),
    TooLarge,
}

/// `POST /v1/authz/check`.
async fn check(shared: &Shared, req: Request<Incoming>) -> io::Result<Response<FakeBody>> {
    shared.lock().calls += 1;
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => ReadBody::Complete(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => ReadBody::TooLarge,
        // The connection broke while reading: nothing sensible to answer.
        Err(err) => return Err(io::Error::other(err)),
    };
    let json_content_type = is_json_content_type(&parts.headers);
    let parsed = match (&body, json_content_type) {
        (ReadBody::Complete(bytes), true) => Some(serde_json::from_slice::<CheckRequest>(bytes)),
        _ => None,
    };
    if let Some(Ok(request)) = &parsed {
        shared.lock().record(recorded(request, &parts.headers));
    }
    let fallback_ip = fallback_client_ip(&parts);
    let ctx = Ctx {
        shared,
        fallback_ip: &fallback_ip,
        body: &body,
        json_content_type,
        parsed: parsed.as_ref(),
    };

    let fault = shared.lock().fault.clone();
    let Some(fault) = fault else {
        return Ok(respond(ctx.normal(None)));
    };
    match fault {
        Fault::Latency(delay) | Fault::SlowHeaders(delay) => {
            tokio::time::sleep(delay).await;
            Ok(respond(ctx.normal(None)))
        }
        Fault::Status(code) => Ok(respond(shared.lock().envelope_reply(final_status(code)))),
        Fault::StatusPlain(code, text) => Ok(respond(Reply::plain(final_status(code), text))),
        Fault::GarbageBody => Ok(respond(Reply {
            status: StatusCode::OK,
            content_type: JSON,
            body: Bytes::from_static(b"<html><body>502 upstream hiccup</body></html> {not json"),
            is_decision: false,
        })),
        Fault::TruncatedBody => {
            let full = ctx.decision_body();
            Ok(respond(Reply {
                status: StatusCode::OK,
                content_type: JSON,
                body: full.slice(..full.len() / 2),
                is_decision: false,
            }))
        }
        Fault::HugeBody(len) => Ok(respond(Reply {
            status: StatusCode::OK,
            content_type: JSON,
            body: huge_body(len),
            is_decision: false,
        })),
        Fault::HalfBodyThenClose => {
            let full = ctx.decision_body();
            let half = full.slice(..full.len() / 2);
            let mut response = Response::new(FakeBody::scripted(vec![
                Step::Data(half),
                Step::Pause(HALF_BODY_PAUSE),
                Step::Fail,
            ]));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(full.len()));
            Ok(response)
        }
        Fault::SlowBody(delay) => {
            let reply = ctx.normal(None);
            let mut response = Response::new(FakeBody::scripted(vec![Step::Pause(delay), Step::Data(reply.body)]));
            *response.status_mut() = reply.status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
            Ok(response)
        }
        Fault::WrongContentType => Ok(respond(Reply {
            status: StatusCode::OK,
            content_type: "text/html; charset=utf-8",
            body: ctx.decision_body(),
            is_decision: false,
        })),
        Fault::AllowedWithoutIdentity => {
            let mut decision = Decision::envelope(shared.lock().next_request_id());
            decision.allowed = true;
            Ok(respond(Reply {
                status: StatusCode::OK,
                content_type: JSON,
                body: decision.to_bytes(),
                is_decision: false,
            }))
        }
        Fault::DropConnection => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "fake gateway fault: drop connection",
        )),
        Fault::Hang => std::future::pending().await,
        Fault::RateLimited { retry_after_ms } => Ok(respond(ctx.normal(Some(retry_after_ms)))),
    }
}

/// What a check request brought, for computing the normal answer.
struct Ctx<'a> {
    shared: &'a Shared,
    /// The client IP when the body has none.
    fallback_ip: &'a str,
    body: &'a ReadBody,
    json_content_type: bool,
    parsed: Option<&'a Result<CheckRequest, serde_json::Error>>,
}

impl Ctx<'_> {
    /// The answer the real gateway would give (extractor rejections, then the handler).
    fn normal(&self, forced_retry_ms: Option<u64>) -> Reply {
        if !self.json_content_type {
            return Reply::plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected request with `Content-Type: application/json`",
            );
        }
        if let ReadBody::TooLarge = self.body {
            return Reply::plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Failed to buffer the request body: length limit exceeded",
            );
        }
        match self.parsed {
            Some(Ok(request)) => self.shared.lock().check(request, self.fallback_ip, forced_retry_ms),
            Some(Err(err)) => match err.classify() {
                serde_json::error::Category::Data => Reply::plain(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("Failed to deserialize the JSON body into the target type: {err}"),
                ),
                _ => Reply::plain(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse the request body as JSON: {err}"),
                ),
            },
            // Not reachable: with a JSON content type and a complete body, `parsed` is set.
            None => Reply::plain(StatusCode::BAD_REQUEST, "Failed to read the request body"),
        }
    }

    /// A valid `200` decision body: the request's own if it yields one, else a synthetic
    /// allowed decision for a placeholder token.
    fn decision_body(&self) -> Bytes {
        let reply = self.normal(None);
        if reply.is_decision {
            reply.body
        } else {
            self.shared.lock().synthetic_decision()
        }
    }
}

fn recorded(request: &CheckRequest, headers: &HeaderMap) -> RecordedRequest {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    RecordedRequest {
        principal_type: request.principal.kind.as_str().to_owned(),
        token_sha256: super::ids::hash_token(&request.principal.value),
        method: request.method.clone(),
        resource: request.resource.clone(),
        client_ip: request.client_ip.clone(),
        user_agent: request.user_agent.clone(),
        required_permissions: request.required_permissions.clone(),
        authorization: header(AUTHORIZATION),
        content_type: header(CONTENT_TYPE),
        headers: headers.clone(),
    }
}

/// The client IP when the body has none (`gateway-protocol.md` §2): the
/// `x-original-client-ip` header (trimmed, non-empty), else the TCP peer's IP, else `unknown`.
fn fallback_client_ip(parts: &http::request::Parts) -> String {
    let header = parts
        .headers
        .get("x-original-client-ip")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match (header, parts.extensions.get::<PeerAddr>()) {
        (Some(ip), _) => ip.to_owned(),
        (None, Some(peer)) => peer.0.ip().to_string(),
        (None, None) => "unknown".to_owned(),
    }
}

/// axum's JSON content-type test: `application/json` or `application/*+json`, parameters
/// allowed.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
}

/// `code` as a final response status; informational (1xx) and invalid codes become 500.
fn final_status(code: u16) -> StatusCode {
    match StatusCode::from_u16(code) {
        Ok(status) if !status.is_informational() => status,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A body of exactly `len` bytes: a JSON string of `x` when `len >= 2`.
fn huge_body(len: usize) -> Bytes {
    let mut body = vec![b'x'; len];
    if len >= 2 {
        body[0] = b'"';
        body[len - 1] = b'"';
    }
    Bytes::from(body)
}

fn respond(reply: Reply) -> Response<FakeBody> {
    let mut response = Response::new(FakeBody::full(reply.body));
    *response.status_mut() = reply.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_json_content_type(&headers)
        };
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(check("application/vnd.api+json"));
        assert!(!check("text/json"));
        assert!(!check("application/jsonx"));
        assert!(!check("text/plain"));
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn huge_body_has_exact_length() {
        assert_eq!(huge_body(0).len(), 0);
        assert_eq!(&huge_body(1)[..], b"x");
        assert_eq!(&huge_body(4)[..], b"\"xx\"");
        assert_eq!(huge_body(100_000).len(), 100_000);
    }
}
