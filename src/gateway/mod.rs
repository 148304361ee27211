//! The gateway seam: the [`Gateway`] trait (one async `check`), what it answers
//! ([`Decision`], [`GatewayError`]), and the real client [`HttpGateway`].

mod client;
pub(crate) mod wire;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use self::client::HttpGateway;
use crate::principal::{CredentialKind, Grant, RateLimitState};
use crate::token::BearerToken;

/// The caller's IP address, for the gateway's audit log and per-IP rate limits.
///
/// Insert it into the request extensions in front of the layer, or let the layer find it with
/// [`WachtAuthConfigBuilder::client_ip`](crate::WachtAuthConfigBuilder::client_ip); with the
/// `axum` feature, Axum's `ConnectInfo<SocketAddr>` is used when neither gives one. It is
/// sent only on cache misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// One authz check: the token and the request context sent with it.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    /// The access token or API key (redacted in `Debug`).
    pub token: BearerToken<'a>,
    /// What `token` is: [`CredentialKind::OAuthAccessToken`] (sent as
    /// `oauth_access_token`) or [`CredentialKind::ApiKey`] (sent as `api_key`).
    pub kind: CredentialKind,
    /// The HTTP method reported to the gateway: one of its allow-list (see
    /// [`route`](crate::route): the request's, or the configured one).
    pub method: &'a str,
    /// The resource path reported to the gateway (see [`route`](crate::route): the request's
    /// route, bounded, or the configured one).
    pub resource: &'a str,
    /// The caller's IP address, if known (audit and per-IP rate limits).
    pub client_ip: Option<&'a str>,
    /// The caller's `User-Agent`, if forwarded (audit only).
    pub user_agent: Option<&'a str>,
}

/// What the gateway decided about a token.
#[derive(Debug, Clone)]
pub enum Decision {
    /// HTTP 200 with `allowed: true`: the token is valid.
    Allowed(Box<Grant>),
    /// HTTP 200 with `reason: "permission_denied"`.
    PermissionDenied,
    /// HTTP 200 with `reason: "rate_limited"`; `retry_after` converted from milliseconds.
    #[non_exhaustive]
    RateLimited {
        /// When the client may retry, if the gateway said.
        retry_after: Option<Duration>,
        /// The label of the first rule that refused (`blocked_rule`, e.g. `1000/60s`), if
        /// the gateway named one.
        blocked_rule: Option<Arc<str>>,
        /// Every rule the gateway evaluated (`rate_limits[]`), the blocking ones with
        /// `remaining: 0`.
        rate_limits: Vec<RateLimitState>,
    },
    /// HTTP 401: unknown, expired, revoked or otherwise inactive token (for an API key also
    /// the gateway's plain-text `Invalid API key`).
    InvalidToken,
}

impl Decision {
    /// A rate-limited decision, as a custom [`Gateway`] answers one (the variant is
    /// `#[non_exhaustive]`): when the client may retry, the label of the rule that refused,
    /// and every rule evaluated (the refusing ones with `remaining: 0`). The layer answers
    /// 429 with `Retry-After`, and with the rate-limit headers of the named rule.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_wacht::gateway::Decision;
    /// use tower_wacht::principal::RateLimitState;
    ///
    /// let refused = Decision::rate_limited(
    ///     Some(Duration::from_secs(60)),
    ///     Some("1000/60s".into()),
    ///     vec![RateLimitState::new("1000/60s", 1000, 0)],
    /// );
    /// assert!(matches!(refused, Decision::RateLimited { .. }));
    /// ```
    pub fn rate_limited(
        retry_after: Option<Duration>,
        blocked_rule: Option<Arc<str>>,
        rate_limits: Vec<RateLimitState>,
    ) -> Decision {
        Decision::RateLimited {
            retry_after,
            blocked_rule,
            rate_limits,
        }
    }

    /// Decodes the body of a gateway `200` answer (`gateway-protocol.md` §3.3). Public for
    /// the fuzz targets; [`HttpGateway`] is its user.
    ///
    /// Unknown fields are ignored. Never yields [`Decision::Allowed`] unless the body says
    /// `"allowed": true` and carries an identity (deployment id and client id) and metadata with a
    /// parseable `expires_at`; anything else unusable is a [`GatewayError::Decode`].
    #[doc(hidden)]
    pub fn decode(body: &[u8]) -> Result<Decision, GatewayError> {
        wire::decode_decision(body, CredentialKind::OAuthAccessToken)
    }

    /// Decodes the body of a gateway `200` answer to an API-key check (`gateway-protocol.md`
    /// §4). Public for the fuzz targets.
    #[doc(hidden)]
    pub fn decode_api_key(body: &[u8]) -> Result<Decision, GatewayError> {
        wire::decode_decision(body, CredentialKind::ApiKey)
    }
}

/// The gateway could not give a decision. The layer answers 503 (fail closed) for all of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No answer within the request timeout (or the connect timeout).
    #[error("gateway request timed out")]
    Timeout,
    /// The connection could not be established or broke.
    #[error("could not reach the gateway: {0}")]
    Connect(String),
    /// A status the protocol does not use for decisions (5xx, 4xx other than 401, ...).
    #[error("gateway answered HTTP {0}")]
    Status(u16),
    /// The body could not be read or decoded, or is larger than allowed.
    #[error("gateway response could not be decoded: {0}")]
    Decode(String),
}

impl GatewayError {
    /// A short, stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Timeout => "timeout",
            GatewayError::Connect(_) => "connect",
            GatewayError::Status(_) => "status",
            GatewayError::Decode(_) => "decode",
        }
    }
}

/// Something that can check a token: the Wacht gateway over HTTP ([`HttpGateway`]), or a
/// test double.
///
/// The verifier calls it only on a cache miss, once per token however many requests wait.
pub trait Gateway: Send + Sync + 'static {
    /// Checks one token.
    fn check<'a>(&'a self, request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>>;
}

impl fmt::Debug for dyn Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gateway")
    }
}
