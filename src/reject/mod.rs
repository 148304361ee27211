//! Why a request was refused ([`AuthError`], with its reasons as enums) and how every refusal
//! is written on the wire: an RFC 6750 challenge with an RFC 9457
//! problem body for HTTP, a trailers-only response for gRPC, a JSON-RPC error for MCP bodies
//! the guard cannot read.

mod challenge;
mod render;

use std::time::Duration;

use http::StatusCode;

pub use self::challenge::ChallengeParams;
#[cfg(feature = "axum")]
pub(crate) use self::render::RenderedAuthError;
pub(crate) use self::render::{
    Anonymous, BodyRefusal, challenge_of, grpc_trailers, is_grpc, rechallenge, refusal, render,
};

/// Why a request was refused.
///
/// Every variant maps to one HTTP status (and one gRPC code); descriptions are fixed text and
/// never contain the token. As an Axum response (`IntoResponse`) it renders with default
/// challenge parameters; behind [`WachtAuthLayer`](crate::WachtAuthLayer) the layer rewrites
/// the challenge with its own realm, scopes and `resource_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` credentials: 401 with a challenge and no `error` code.
    #[error("no bearer token was presented")]
    MissingCredentials,
    /// The request's credentials are malformed as a whole: 400 `invalid_request`.
    #[error("invalid request: {}", .0.description())]
    InvalidRequest(InvalidRequestReason),
    /// The token is malformed, unknown, expired, revoked, or not meant for this server:
    /// 401 `invalid_token`.
    #[error("invalid token: {}", .0.description())]
    InvalidToken(InvalidTokenReason),
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
    /// The token could not be verified because the gateway is unreachable, slow, overloaded
    /// or answered something unusable: 503 with `Retry-After`. Fail closed, never 401.
    #[error("authorization service unavailable; retry after {}s", retry_after_secs(*retry_after))]
    Unavailable {
        /// How long the client should wait.
        retry_after: Duration,
    },
}

/// Why a token was refused with 401 `invalid_token`. The description is the challenge's
/// `error_description`; the label names the reason in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidTokenReason {
    /// Outside the RFC 6750 token alphabet, empty, or longer than `max_token_len`.
    Malformed,
    /// The gateway does not know it: unknown, expired, revoked or otherwise inactive.
    Rejected,
    /// A JWT, and this server does not verify JWTs (see [`JwtConfig`](crate::jwt::JwtConfig)).
    JwtNotAccepted,
    /// Issued by another Wacht deployment than the pinned one.
    WrongDeployment,
    /// Issued by another issuer than the pinned one.
    WrongIssuer,
    /// Issued for another resource (audience) than this server.
    WrongAudience,
    /// Its OAuth client is denied on this server.
    DeniedClient,
    /// Its OAuth client (for an API key, its app) is not in this server's
    /// [`allowed_clients`](crate::WachtAuthConfigBuilder::allowed_clients).
    ClientNotAllowed,
    /// Its tenant (the granted resource: an organization, workspace or user; for an API key,
    /// its organization or workspace) is not in this server's
    /// [`accepted_tenants`](crate::WachtAuthConfigBuilder::accepted_tenants), or it names none.
    TenantNotAccepted,
    /// A JWT whose `exp` has passed.
    Expired,
    /// A JWT of a session or with a token id denied on this server
    /// ([`Verifier::deny_session`](crate::Verifier::deny_session),
    /// [`deny_token_id`](crate::Verifier::deny_token_id)).
    Revoked,
    /// An API key on a route that takes OAuth access tokens only
    /// ([`WachtAuthLayer::oauth_only`](crate::WachtAuthLayer::oauth_only)).
    ApiKeyNotAccepted,
    /// An access token on a route that takes API keys only
    /// ([`WachtAuthLayer::api_keys_only`](crate::WachtAuthLayer::api_keys_only)), or
    /// something other than an API key in the API-key header.
    ApiKeyRequired,
}

impl InvalidTokenReason {
    /// The `error_description` of the challenge.
    pub fn description(self) -> &'static str {
        match self {
            InvalidTokenReason::Malformed => "The access token is malformed.",
            InvalidTokenReason::Rejected => "The access token is invalid, expired or revoked.",
            InvalidTokenReason::JwtNotAccepted => "JWT access tokens are not accepted by this server.",
            InvalidTokenReason::WrongDeployment => "The access token was issued by another deployment.",
            InvalidTokenReason::WrongIssuer => "The access token was issued by another issuer.",
            InvalidTokenReason::WrongAudience => "The access token was not issued for this resource.",
            InvalidTokenReason::DeniedClient => "The OAuth client of this access token is not allowed here.",
            InvalidTokenReason::ClientNotAllowed => {
                "The access token was issued to a client this server does not serve."
            }
            InvalidTokenReason::TenantNotAccepted => {
                "The access token was granted for a tenant this server does not serve."
            }
            InvalidTokenReason::Expired => "The access token has expired.",
            InvalidTokenReason::Revoked => "The access token was revoked.",
            InvalidTokenReason::ApiKeyNotAccepted => "API keys are not accepted here; use an OAuth access token.",
            InvalidTokenReason::ApiKeyRequired => "This resource takes API keys only.",
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            InvalidTokenReason::Malformed => "malformed",
            InvalidTokenReason::Rejected => "rejected",
            InvalidTokenReason::JwtNotAccepted => "jwt_not_accepted",
            InvalidTokenReason::WrongDeployment => "wrong_deployment",
            InvalidTokenReason::WrongIssuer => "wrong_issuer",
            InvalidTokenReason::WrongAudience => "wrong_audience",
            InvalidTokenReason::DeniedClient => "denied_client",
            InvalidTokenReason::ClientNotAllowed => "client_not_allowed",
            InvalidTokenReason::TenantNotAccepted => "tenant_not_accepted",
            InvalidTokenReason::Expired => "expired",
            InvalidTokenReason::Revoked => "revoked",
            InvalidTokenReason::ApiKeyNotAccepted => "api_key_not_accepted",
            InvalidTokenReason::ApiKeyRequired => "api_key_required",
        }
    }
}

/// Why a request was refused with 400 `invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidRequestReason {
    /// More than one `Authorization` header.
    RepeatedAuthorization,
    /// Two credentials: an `Authorization` header and the API-key header, or the API-key
    /// header repeated.
    TwoCredentials,
}

impl InvalidRequestReason {
    /// The `error_description` of the challenge.
    pub fn description(self) -> &'static str {
        match self {
            InvalidRequestReason::RepeatedAuthorization => "The request carries more than one Authorization header.",
            InvalidRequestReason::TwoCredentials => "The request carries more than one credential.",
        }
    }
}

/// gRPC status codes used for refusals (google.rpc.Code).
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
/// open the operation (a method refused by `deny_unmapped`); say so instead of ending the
/// message in an empty list.
fn requirement_text(required: &[String]) -> String {
    if required.is_empty() {
        "no permission grants access to this operation".to_owned()
    } else {
        format!("requires {}", required.join(" "))
    }
}

/// `Retry-After` is whole seconds; round up so a client never retries too early, minimum 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
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

    /// A short, stable name of the outcome for logs and metrics (`invalid_token`,
    /// `rate_limited`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_credentials",
            AuthError::RateLimited { .. } => "rate_limited",
            AuthError::Unavailable { .. } => "unavailable",
            other => other.error_code().unwrap_or("invalid_token"),
        }
    }

    /// The human-readable description: the problem body's `detail` and the challenge's
    /// `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "A bearer access token is required.",
            AuthError::InvalidRequest(reason) => reason.description(),
            AuthError::InvalidToken(reason) => reason.description(),
            AuthError::InsufficientScope { .. } => "The access token lacks a permission this operation requires.",
            AuthError::RateLimited { .. } => "Too many requests for this client; retry later.",
            AuthError::Unavailable { .. } => "The token could not be verified right now; retry later.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_reason_has_its_own_description_and_label() {
        use InvalidTokenReason::*;
        let all = [
            Malformed,
            Rejected,
            JwtNotAccepted,
            WrongDeployment,
            WrongIssuer,
            WrongAudience,
            DeniedClient,
            ClientNotAllowed,
            TenantNotAccepted,
            Expired,
            Revoked,
        ];
        let descriptions: std::collections::HashSet<_> = all.iter().map(|r| r.description()).collect();
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.label()).collect();
        assert_eq!((descriptions.len(), labels.len()), (all.len(), all.len()));
        assert_eq!(
            AuthError::InvalidToken(WrongAudience).to_string(),
            "invalid token: The access token was not issued for this resource."
        );
    }
}
