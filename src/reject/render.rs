//! One rendering path for every refusal the crate writes: the layer's, the guards', the
//! extractor's and the MCP tool guard's. HTTP requests get a problem+json (or JSON-RPC) body;
//! gRPC requests (HTTP/2 with a gRPC content type) get a trailers-only response. Every
//! refusal carries `Cache-Control: no-store`.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode, Version};
use http_body_util::Full;

use super::{AuthError, ChallengeParams, grpc_code, retry_after_secs};

/// Marker the layer inserts into requests it passes without a principal, so extractors and
/// guards can render its challenge, and know whether anonymous callers are allowed.
#[derive(Clone)]
pub(crate) struct Anonymous {
    pub(crate) challenge: Arc<ChallengeParams>,
    /// True in optional mode; false for a CORS preflight let through by
    /// [`pass_cors_preflight`](crate::WachtAuthConfigBuilder::pass_cors_preflight).
    pub(crate) optional: bool,
}

/// The challenge parameters for a request without a principal: the layer's, or defaults
/// (logged) when no layer ran in front.
pub(crate) fn challenge_of(ext: &http::Extensions) -> Arc<ChallengeParams> {
    match ext.get::<Anonymous>() {
        Some(a) => Arc::clone(&a.challenge),
        None => {
            tracing::warn!("no Principal in the request: is WachtAuthLayer applied outside this route?");
            ChallengeParams::shared_default()
        }
    }
}

/// A request speaks gRPC when it is HTTP/2 and its `content-type` starts with
/// `application/grpc` (any case). An HTTP/1.1 request that only claims the content type gets
/// the HTTP answer: gRPC requires HTTP/2, and a gRPC refusal is an HTTP 200.
pub(crate) fn is_grpc(version: Version, headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    version == Version::HTTP_2
        && headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().len() >= GRPC.len() && v.as_bytes()[..GRPC.len()].eq_ignore_ascii_case(GRPC))
}

/// Renders an authentication or authorization refusal in the protocol the request speaks:
/// HTTP with a `WWW-Authenticate` challenge (400/401/403) and a problem+json body, or gRPC
/// trailers-only.
/// `grpc` is [`is_grpc`] of the request.
pub(crate) fn render(error: AuthError, challenge: &ChallengeParams, grpc_request: bool) -> Response<Full<Bytes>> {
    let mut response = if grpc_request {
        grpc(error.grpc_code(), &error.to_string())
    } else {
        let mut problem = serde_json::json!({
            "type": "about:blank",
            "title": error.status().canonical_reason().unwrap_or("Error"),
            "status": error.status().as_u16(),
            "detail": error.description(),
        });
        if let (Some(code), Some(map)) = (error.error_code(), problem.as_object_mut()) {
            map.insert("error".into(), code.into());
        }
        http(error.status(), "application/problem+json", &problem)
    };
    let headers = response.headers_mut();
    if let Some(retry) = error.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(retry)));
        if grpc_request {
            let ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
            headers.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
        }
    }
    set_challenge(&error, challenge, headers);
    response
}

/// Puts the error's challenge on a response: 401 and 403 carry one (RFC 6750 §3), and so
/// does the 400 for malformed credentials (`invalid_request`, §3.1).
pub(crate) fn set_challenge(error: &AuthError, challenge: &ChallengeParams, headers: &mut HeaderMap) {
    if matches!(
        error.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
    ) && let Ok(value) = HeaderValue::from_str(&error.challenge(challenge))
    {
        headers.insert(WWW_AUTHENTICATE, value);
    }
}

/// Marker on a response that an [`AuthError`] rendered by itself (its Axum `IntoResponse`,
/// which knows no layer), so the layer in front can give it the layer's challenge.
#[derive(Clone, Debug)]
pub(crate) struct RenderedAuthError(pub(crate) AuthError);

/// Gives a handler's own `AuthError` response the layer's challenge (realm, scopes,
/// `resource_metadata`). Responses without the marker are untouched.
pub(crate) fn rechallenge<B>(response: &mut Response<B>, challenge: &ChallengeParams) {
    if let Some(RenderedAuthError(error)) = response.extensions_mut().remove::<RenderedAuthError>() {
        set_challenge(&error, challenge, response.headers_mut());
    }
}

/// A refusal that is not about credentials: a request body the MCP tool guard cannot accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyRefusal {
    /// Larger than the guard reads: 413.
    TooLarge,
    /// The body could not be read from the connection: 400.
    Unreadable,
    /// An MCP session created by another principal: 404 with a JSON-RPC error, as for an
    /// unknown session.
    ForeignSession,
    /// Read, but not JSON-RPC the guard can classify: 400 with this JSON-RPC error.
    JsonRpc {
        /// `-32700` (parse error) or `-32600` (invalid request).
        code: i32,
        /// The JSON-RPC error message.
        message: &'static str,
        /// The refused request's `id` when its body was read (JSON-RPC 2.0 §5: the error
        /// answers that id); `None` renders `null`, for a body that could not be read.
        id: Option<serde_json::Value>,
    },
}

/// Renders a [`BodyRefusal`]: a JSON-RPC error object (with the request's id when it was
/// read, else `null`) or a problem+json body; `INVALID_ARGUMENT` / `RESOURCE_EXHAUSTED` for
/// gRPC.
pub(crate) fn refusal(refusal: BodyRefusal, grpc_request: bool) -> Response<Full<Bytes>> {
    let (status, detail) = match &refusal {
        BodyRefusal::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "The JSON-RPC request body is larger than this server accepts.",
        ),
        BodyRefusal::Unreadable => (StatusCode::BAD_REQUEST, "The request body could not be read."),
        BodyRefusal::ForeignSession => (StatusCode::NOT_FOUND, "Session not found"),
        BodyRefusal::JsonRpc { message, .. } => (StatusCode::BAD_REQUEST, *message),
    };
    if grpc_request {
        let code = match &refusal {
            BodyRefusal::TooLarge => grpc_code::RESOURCE_EXHAUSTED,
            _ => grpc_code::INVALID_ARGUMENT,
        };
        return grpc(code, detail);
    }
    match refusal {
        BodyRefusal::ForeignSession => http(
            status,
            "application/json",
            &serde_json::json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": { "code": -32600, "message": detail },
            }),
        ),
        BodyRefusal::JsonRpc { code, message, id } => http(
            status,
            "application/json",
            &serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": code, "message": message },
            }),
        ),
        _ => http(
            status,
            "application/problem+json",
            &serde_json::json!({
                "type": "about:blank",
                "title": status.canonical_reason().unwrap_or("Error"),
                "status": status.as_u16(),
                "detail": detail,
            }),
        ),
    }
}

/// An HTTP refusal with a JSON body.
fn http(status: StatusCode, content_type: &'static str, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A gRPC trailers-only refusal: HTTP 200, no body, the status in the headers.
fn grpc(code: u8, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_grpc_status(headers, code, message);
    response
}

/// `grpc-status` and the percent-encoded `grpc-message`.
fn set_grpc_status(headers: &mut HeaderMap, code: u8, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(message) = HeaderValue::from_str(&percent_encode_grpc_message(message)) {
        headers.insert("grpc-message", message);
    }
}

/// The trailers that end a gRPC response whose caller no longer stands (a stream cut at its
/// token's expiry or after a revocation): the refusal's `grpc-status` and `grpc-message`,
/// and its challenge as `www-authenticate`, like a trailers-only refusal's headers.
pub(crate) fn grpc_trailers(error: &AuthError, challenge: &ChallengeParams) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(3);
    set_grpc_status(&mut trailers, error.grpc_code(), &error.to_string());
    set_challenge(error, challenge, &mut trailers);
    trailers
}

/// gRPC `grpc-message` encoding: UTF-8 bytes outside %x20-%x24 / %x26-%x7E are percent-encoded.
fn percent_encode_grpc_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode_grpc_message("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn a_stream_cut_short_ends_with_unauthenticated_trailers() {
        let error = AuthError::InvalidToken(super::super::InvalidTokenReason::Expired);
        let trailers = grpc_trailers(&error, &ChallengeParams::default());
        assert_eq!(trailers["grpc-status"], "16");
        assert_eq!(trailers["grpc-message"], "invalid token: The access token has expired.");
        let challenge = trailers[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""));
    }

    #[test]
    fn grpc_needs_http2() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("Application/GRPC+proto"));
        assert!(is_grpc(Version::HTTP_2, &headers));
        assert!(!is_grpc(Version::HTTP_11, &headers));
    }
}
