//! The HTTP/1.1 server: accept loop, routing, CORS and response helpers.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, WWW_AUTHENTICATE,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::super::FakeGateway;
use super::super::body::FakeBody;
pub(super) use super::super::loopback::bare;
use super::super::loopback::method_not_allowed;
use super::cimd::Documents;
use super::config::DevIssuerConfig;
use super::endpoints;
use super::state::{OAuthError, State};

/// Path of the RFC 8414 metadata document.
pub(super) const OAUTH_METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// Path of the OpenID Connect discovery document (same content).
pub(super) const OIDC_METADATA_PATH: &str = "/.well-known/openid-configuration";
/// Wacht's authorization endpoint.
pub(super) const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// Wacht's token endpoint.
pub(super) const TOKEN_PATH: &str = "/oauth/token";
/// Wacht's dynamic client registration endpoint.
pub(super) const REGISTER_PATH: &str = "/oauth/register";

/// Largest token or registration request body read.
pub(super) const BODY_LIMIT: usize = 64 * 1024;

/// Request headers a browser may send cross-origin, when the preflight names none.
const DEFAULT_ALLOWED_HEADERS: &str = "authorization, content-type, mcp-protocol-version";

/// What the server task shares with the handles.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) config: DevIssuerConfig,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub(super) issuer: String,
    pub(super) gateway: FakeGateway,
    /// Client metadata documents: fetched, checked and cached.
    pub(super) documents: Documents,
    state: Mutex<State>,
}

impl Inner {
    pub(super) fn new(config: DevIssuerConfig, issuer: String, gateway: FakeGateway) -> Self {
        let state = Mutex::new(State::new(config.consent.clone()));
        let documents = Documents::new(&config);
        Inner {
            config,
            issuer,
            gateway,
            documents,
            state,
        }
    }

    /// Locks the state; a poisoned lock is recovered (the state stays usable).
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Answers one request to the dev issuer.
pub(super) async fn route(inner: &Inner, req: Request<Incoming>) -> Response<FakeBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let preflight_headers = req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    let registration = inner.config.dynamic_registration;
    let mut response = match path.as_str() {
        OAUTH_METADATA_PATH | OIDC_METADATA_PATH => match method {
            Method::GET | Method::HEAD => endpoints::metadata(inner),
            Method::OPTIONS => preflight(preflight_headers.as_ref()),
            _ => method_not_allowed("GET, HEAD, OPTIONS"),
        },
        AUTHORIZE_PATH => match method {
            Method::GET => endpoints::authorize(inner, req.uri().query().unwrap_or_default()).await,
            _ => method_not_allowed("GET"),
        },
        TOKEN_PATH => match method {
            Method::POST => match read_body(req).await {
                Ok((headers, body)) => endpoints::token(inner, &headers, &body),
                Err(status) => oauth_error(
                    status,
                    &OAuthError::invalid_request("request body too large or unreadable"),
                ),
            },
            Method::OPTIONS => preflight(preflight_headers.as_ref()),
            _ => method_not_allowed("POST, OPTIONS"),
        },
        REGISTER_PATH if registration => match method {
            Method::POST => match read_body(req).await {
                Ok((headers, body)) => endpoints::register(inner, &headers, &body),
                Err(status) => oauth_error(
                    status,
                    &OAuthError::new("invalid_client_metadata", "request body too large or unreadable"),
                ),
            },
            Method::OPTIONS => preflight(preflight_headers.as_ref()),
            _ => method_not_allowed("POST, OPTIONS"),
        },
        // Preflights are answered on every path, so that a browser client probing discovery
        // URLs this issuer does not serve sees their `404` instead of a CORS failure.
        _ if method == Method::OPTIONS => preflight(preflight_headers.as_ref()),
        _ => bare(StatusCode::NOT_FOUND),
    };
    if path != AUTHORIZE_PATH {
        // Browser-based clients (the MCP Inspector) call these endpoints cross-origin.
        response
            .headers_mut()
            .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    response
}

/// The headers and body of a request, or the status to answer when the body is too large
/// (`413`) or broke off (`400`).
async fn read_body(req: Request<Incoming>) -> Result<(HeaderMap, Bytes), StatusCode> {
    let (parts, body) = req.into_parts();
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok((parts.headers, collected.to_bytes())),
        Err(err) if err.is::<LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// The answer to a CORS preflight: any origin, the endpoint's methods, the headers asked for.
fn preflight(requested_headers: Option<&HeaderValue>) -> Response<FakeBody> {
    let mut response = bare(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let allowed = requested_headers
        .filter(|v| v.to_str().is_ok_and(is_header_name_list))
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

/// A comma-separated list of header names (HTTP tokens).
fn is_header_name_list(value: &str) -> bool {
    value.split(',').map(str::trim).all(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    })
}

/// A JSON answer.
pub(super) fn json(status: StatusCode, value: &Value) -> Response<FakeBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(FakeBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON answer that must not be cached (it carries credentials, RFC 6749 §5.1).
pub(super) fn json_no_store(status: StatusCode, value: &Value) -> Response<FakeBody> {
    let mut response = json(status, value);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An RFC 6749 §5.2 error answer (`invalid_client` gets `401` from the caller).
pub(super) fn oauth_error(status: StatusCode, error: &OAuthError) -> Response<FakeBody> {
    json_no_store(
        status,
        &serde_json::json!({"error": error.code, "error_description": error.description}),
    )
}

/// `401 invalid_client` with a Basic challenge, for a client that tried Basic authentication
/// (RFC 6749 §5.2).
pub(super) fn invalid_client_basic(error: &OAuthError) -> Response<FakeBody> {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, error);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tower-wacht dev issuer\""),
    );
    response
}

/// An error shown to the user instead of redirecting: the redirect URI is not trusted.
pub(super) fn error_page(error: &OAuthError) -> Response<FakeBody> {
    let text = format!(
        "400 Bad Request\n\nerror: {}\nerror_description: {}\n\nThe tower-wacht dev issuer refused this authorization request before it could trust the redirect URI, so it does not redirect.\n",
        error.code, error.description
    );
    let mut response = Response::new(FakeBody::full(text));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `302 Found` to `location`, uncached; an unencodable location becomes an error page.
pub(super) fn redirect(location: &str) -> Response<FakeBody> {
    let Ok(value) = HeaderValue::from_str(location) else {
        return error_page(&OAuthError::invalid_request(
            "redirect_uri cannot be sent in a Location header",
        ));
    };
    let mut response = bare(StatusCode::FOUND);
    let headers = response.headers_mut();
    headers.insert(LOCATION, value);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_name_lists() {
        assert!(is_header_name_list("content-type, mcp-protocol-version"));
        assert!(is_header_name_list("Authorization"));
        assert!(!is_header_name_list(""));
        assert!(!is_header_name_list("a,,b"));
        assert!(!is_header_name_list("bad header"));
    }
}
