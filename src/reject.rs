//! Why a request was refused ([`AuthError`]) and how that is written on the wire: an RFC 6750
//! `WWW-Authenticate` challenge with an RFC 9457 `application/problem+json` body for HTTP, or a
//! trailers-only response with `grpc-status` for gRPC.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode, Version};
use http_body_util::Full;

/// Why a request was refused.
///
/// Every variant maps to one HTTP status (and one gRPC code); the description strings are fixed
/// text and never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` credentials: 401 with a challenge and no `error` code.
    #[error("no bearer token was presented")]
    MissingCredentials,
    /// The request is malformed (e.g. repeated `Authorization` headers): 400 `invalid_request`.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The token is malformed, unknown, expired, revoked, or not meant for this server:
    /// 401 `invalid_token`.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The token is valid but lacks a required permission: 403 `insufficient_scope`.
    #[error("insufficient scope: {}", requirement_text(required))]
    InsufficientScope {
        /// The permissions the operation requires (what the client must ask for).
        required: Vec<String>,
        /// Scopes the token already has that the client should keep asking for.
        granted: Vec<String>,
    },
    /// The gateway rate-limited this client: 429 with `Retry-After`.
    #[error("rate limited; retry after {}s", retry_after_secs(*retry_after))]
    RateLimited {
        /// How long the client should wait.
        retry_after: Duration,
    },
    /// The token could not be verified because the gateway is unreachable, slow or answered
    /// something unusable: 503 with `Retry-After`. Fail closed, never 401.
    #[error("authorization service unavailable; retry after {}s", retry_after_secs(*retry_after))]
    Unavailable {
        /// How long the client should wait.
        retry_after: Duration,
    },
}

/// gRPC status codes used for rejections (google.rpc.Code).
pub mod grpc_code {
    /// INVALID_ARGUMENT.
    pub const INVALID_ARGUMENT: u8 = 3;
    /// PERMISSION_DENIED.
    pub const PERMISSION_DENIED: u8 = 7;
    /// RESOURCE_EXHAUSTED.
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    /// UNAVAILABLE.
    pub const UNAVAILABLE: u8 = 14;
    /// UNAUTHENTICATED.
    pub const UNAUTHENTICATED: u8 = 16;
}

/// What an insufficient-scope refusal asks for. `required` is empty when no permission can
/// open the operation (a method refused by `RequireMethodPermissions::deny_unmapped`); say
/// so instead of ending the message in an empty list.
fn requirement_text(required: &[String]) -> String {
    if required.is_empty() {
        "no permission grants access to this operation".to_owned()
    } else {
        format!("requires {}", required.join(" "))
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    // Retry-After is whole seconds; round up so a client never retries too early, minimum 1.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl AuthError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingCredentials | AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 6750 `error` code, if the challenge carries one.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            AuthError::InvalidRequest(_) => Some("invalid_request"),
            AuthError::InvalidToken(_) => Some("invalid_token"),
            AuthError::InsufficientScope { .. } => Some("insufficient_scope"),
            _ => None,
        }
    }

    /// The gRPC status code this error is answered with for gRPC requests.
    pub fn grpc_code(&self) -> u8 {
        match self {
            AuthError::MissingCredentials | AuthError::InvalidToken(_) => grpc_code::UNAUTHENTICATED,
            AuthError::InvalidRequest(_) => grpc_code::INVALID_ARGUMENT,
            AuthError::InsufficientScope { .. } => grpc_code::PERMISSION_DENIED,
            AuthError::RateLimited { .. } => grpc_code::RESOURCE_EXHAUSTED,
            AuthError::Unavailable { .. } => grpc_code::UNAVAILABLE,
        }
    }

    /// The `Retry-After` delay, for 429 and 503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::RateLimited { retry_after } | AuthError::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    fn description(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "A bearer access token is required.",
            AuthError::InvalidRequest(d) | AuthError::InvalidToken(d) => d,
            AuthError::InsufficientScope { .. } => "The access token lacks a permission this operation requires.",
            AuthError::RateLimited { .. } => "Too many requests for this client; retry later.",
            AuthError::Unavailable { .. } => "The token could not be verified right now; retry later.",
        }
    }

    /// Renders the response for this error: gRPC trailers-only when `grpc` is true, otherwise
    /// HTTP with a `WWW-Authenticate` challenge (401/403) and a problem+json body.
    pub(crate) fn into_response(self, params: &ChallengeParams, grpc: bool) -> Response<Full<Bytes>> {
        if grpc {
            self.into_grpc_response(params)
        } else {
            self.into_http_response(params)
        }
    }

    fn into_http_response(self, params: &ChallengeParams) -> Response<Full<Bytes>> {
        let status = self.status();
        let detail = self.description();
        let mut problem = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let (Some(code), Some(map)) = (self.error_code(), problem.as_object_mut()) {
            map.insert("error".into(), code.into());
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.add_challenge_and_retry(params, headers);
        response
    }

    fn into_grpc_response(self, params: &ChallengeParams) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("grpc-status", HeaderValue::from(u16::from(self.grpc_code())));
        if let Ok(message) = HeaderValue::from_str(&percent_encode_grpc_message(&self.to_string())) {
            headers.insert("grpc-message", message);
        }
        if let Some(retry) = self.retry_after() {
            let ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
            headers.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
        }
        self.add_challenge_and_retry(params, headers);
        response
    }

    fn add_challenge_and_retry(&self, params: &ChallengeParams, headers: &mut HeaderMap) {
        // 401 and 403 carry a challenge (RFC 6750 §3); so does the 400 for a malformed
        // credential (`invalid_request`, §3.1), which is the only 400 this type renders.
        if matches!(
            self.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
        ) && let Ok(value) = HeaderValue::from_str(&self.challenge(params))
        {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        if let Some(retry) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(retry)));
        }
    }

    /// Builds the `WWW-Authenticate: Bearer ...` value for this error.
    ///
    /// Parameter order follows what MCP clients parse: `resource_metadata`, `scope`, `error`,
    /// `error_description`, then `realm`. Each parameter appears at most once, always as a
    /// quoted-string; values are sanitised to the RFC 6750 character sets, so the result is
    /// always a valid header value.
    pub fn challenge(&self, params: &ChallengeParams) -> String {
        let candidates: Vec<&str> = match self {
            // With nothing to ask for (a method nobody may call), naming scopes would only
            // send the client into a pointless re-authorization.
            AuthError::InsufficientScope { required, .. } if required.is_empty() => Vec::new(),
            AuthError::InsufficientScope { required, granted } => {
                required.iter().chain(granted).map(String::as_str).collect()
            }
            _ => params.scopes.iter().map(|s| &**s).collect(),
        };
        // Sanitise first, then keep each scope once (first occurrence wins: required before
        // granted), dropping any that sanitising emptied.
        let mut scopes: Vec<String> = Vec::new();
        for s in candidates.into_iter().map(scope_token) {
            if !s.is_empty() && !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let mut out = String::from("Bearer");
        let mut sep = " ";
        if let Some(url) = &params.resource_metadata {
            push_param(&mut out, &mut sep, "resource_metadata", &quoted_string(url));
        }
        let scope = scopes.join(" ");
        if !scope.is_empty() {
            push_param(&mut out, &mut sep, "scope", &scope);
        }
        if let Some(code) = self.error_code() {
            push_param(&mut out, &mut sep, "error", code);
            push_param(
                &mut out,
                &mut sep,
                "error_description",
                &description_text(self.description()),
            );
        }
        if let Some(realm) = &params.realm {
            push_param(&mut out, &mut sep, "realm", &quoted_string(realm));
        }
        if sep == " " {
            // A bare `Bearer` is not a valid challenge (RFC 6750 §3): name a realm.
            push_param(&mut out, &mut sep, "realm", "api");
        }
        out
    }
}

fn push_param(out: &mut String, sep: &mut &'static str, name: &str, value: &str) {
    let _ = write!(out, "{sep}{name}=\"{value}\"");
    *sep = ", ";
}

/// Content of an RFC 9110 quoted-string: visible ASCII and spaces, `"` and `\` escaped,
/// anything else dropped.
fn quoted_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' | '!'..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

/// A scope token: %x21 / %x23-5B / %x5D-7E (RFC 6750 §3); other characters dropped.
fn scope_token(s: &str) -> String {
    s.chars()
        .filter(|&c| matches!(c, '!' | '#'..='[' | ']'..='~'))
        .collect()
}

/// `error_description` text: %x20-21 / %x23-5B / %x5D-7E; other characters dropped.
fn description_text(s: &str) -> String {
    s.chars()
        .filter(|&c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
        .collect()
}

/// gRPC `grpc-message` encoding: UTF-8 bytes outside %x20-%x24 / %x26-%x7E are percent-encoded.
pub(crate) fn percent_encode_grpc_message(msg: &str) -> String {
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

/// A request speaks gRPC when it is HTTP/2 and its `content-type` starts with
/// `application/grpc` (any case). An HTTP/1.1 request that only claims the content type gets
/// the HTTP answer: gRPC requires HTTP/2, and a gRPC "refusal" is an HTTP 200.
pub(crate) fn is_grpc(version: Version, headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    version == Version::HTTP_2
        && headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().len() >= GRPC.len() && v.as_bytes()[..GRPC.len()].eq_ignore_ascii_case(GRPC))
}

/// Renders a refusal in the protocol the request speaks.
pub(crate) fn render(
    error: AuthError,
    challenge: &ChallengeParams,
    version: Version,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    error.into_response(challenge, is_grpc(version, headers))
}

/// What every challenge from one layer carries: realm, the RFC 9728 metadata URL, and the
/// scopes to suggest on a 401.
#[derive(Debug, Clone, Default)]
pub struct ChallengeParams {
    pub(crate) realm: Option<Box<str>>,
    pub(crate) resource_metadata: Option<Box<str>>,
    pub(crate) scopes: Vec<Box<str>>,
}

impl ChallengeParams {
    /// Challenge parameters: an optional `realm`, an optional RFC 9728 `resource_metadata`
    /// URL, and the scopes to suggest on a 401. The layer builds these from its configuration;
    /// this constructor is for rendering challenges elsewhere (and for tests and fuzzing).
    pub fn new<I, S>(realm: Option<&str>, resource_metadata: Option<&str>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        ChallengeParams {
            realm: realm.map(Into::into),
            resource_metadata: resource_metadata.map(Into::into),
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }

    pub(crate) fn shared_default() -> Arc<ChallengeParams> {
        Arc::new(ChallengeParams::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChallengeParams {
        ChallengeParams {
            realm: Some("my \"api\"".into()),
            resource_metadata: Some("https://h/.well-known/oauth-protected-resource/mcp".into()),
            scopes: vec!["mcp:invoke".into()],
        }
    }

    #[test]
    fn missing_credentials_challenge_has_no_error() {
        let c = AuthError::MissingCredentials.challenge(&params());
        assert_eq!(
            c,
            "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:invoke\", realm=\"my \\\"api\\\"\""
        );
    }

    #[test]
    fn insufficient_scope_lists_required_then_granted_once() {
        let e = AuthError::InsufficientScope {
            required: vec!["tools:admin".into(), "mcp:invoke".into()],
            granted: vec!["mcp:invoke".into(), "bad\"scope".into()],
        };
        let c = e.challenge(&ChallengeParams::default());
        assert!(
            c.starts_with(
                "Bearer scope=\"tools:admin mcp:invoke badscope\", error=\"insufficient_scope\", error_description=\""
            ),
            "{c}"
        );
    }

    #[test]
    fn bare_challenge_gets_a_realm() {
        assert_eq!(
            AuthError::MissingCredentials.challenge(&ChallengeParams::default()),
            "Bearer realm=\"api\""
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(60_000)), 60);
        assert_eq!(retry_after_secs(Duration::from_millis(1_500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn insufficient_scope_message_names_the_requirement() {
        let e = |required: &[&str]| AuthError::InsufficientScope {
            required: required.iter().map(|s| (*s).to_owned()).collect(),
            granted: vec!["mcp:invoke".into()],
        };
        assert_eq!(e(&["a:b", "c:d"]).to_string(), "insufficient scope: requires a:b c:d");
        assert_eq!(
            e(&[]).to_string(),
            "insufficient scope: no permission grants access to this operation"
        );
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode_grpc_message("a b%c\né"), "a b%25c%0A%C3%A9");
    }
}
