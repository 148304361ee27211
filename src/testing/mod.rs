//! Test doubles of Wacht: [`FakeGateway`], a real HTTP/1.1 server on loopback that speaks the
//! gateway authz-check protocol, and [`DevIssuer`], a loopback OAuth authorization server
//! playing a Wacht OAuth app's issuer, which registers the tokens it issues in a
//! `FakeGateway` (so MCP clients can complete the whole OAuth flow without a Wacht account).
//!
//! It answers `POST /v1/authz/check` like the hosted gateway does for OAuth access tokens
//! (status codes, plain-text extractor rejections, the JSON error envelope, `200` decisions
//! with identity, permissions, metadata, rate limits and the informational header map) and
//! `GET /health` with `OK`. Tokens are registered with [`FakeGateway::register`] and stored
//! only by their SHA-256, as the gateway does. [`Fault`]s inject latency, error statuses,
//! malformed or truncated bodies and dropped connections.
//!
//! ```ignore
//! let gateway = FakeGateway::start().await?;
//! gateway.set_scope_definitions(vec![ScopeDefinition::organization(
//!     "projects:read",
//!     "org:projects:read",
//! )]);
//! let token = generate_token();
//! gateway.register(
//!     &token,
//!     TokenGrant::new(generate_client_id())
//!         .scopes(["projects:read"])
//!         .granted_resource("urn:wacht:organization:427001234567890561"),
//! );
//! // Point the code under test at `gateway.url()`.
//! ```
//!
//! [`WebhookSigner`] signs webhook deliveries as Wacht does, to test a
//! [`WachtWebhooks`](crate::WachtWebhooks) endpoint (or your own).
//!
//! API keys ([`FakeGateway::register_api_key`], [`ApiKeyGrant`]) are answered as §4 of the
//! protocol says: the format check, the plain-text `401 Invalid API key` for an unknown or
//! revoked key, expiry, the union of the key's and its roles' permissions, its metadata.
//!
//! Rate limiting follows Wacht's rule semantics (§3.2 step 9): one scheme of
//! [`RateLimitRule`]s ([`FakeGateway::set_rate_limit_rules`]) filtered by endpoint, sorted by
//! priority, every rule evaluated and counted per its [`RateLimitMode`]; by default Wacht's
//! 1000 requests per minute, `per_app`.
//!
//! Not modelled: organization and workspace memberships and role permissions (assumed present), grant and
//! API-auth-app status (use [`FakeGateway::revoke`]), per-app and per-key rate-limit schemes
//! (one scheme applies to every principal), the gateway's bucketed sliding windows (an
//! exact sliding log here), audit publishing, database errors (use [`Fault::Status`]).

mod body;
mod dev_issuer;
mod ids;
mod jwks;
mod limiter;
mod loopback;
mod model;
mod protocol;
mod rate_limits;
mod server;
mod state;
mod webhooks;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use dev_issuer::{
    ClientKind, ConsentPolicy, DEFAULT_GRANTED_RESOURCE, DevIssuer, DevIssuerConfig, GrantType, IssForm, IssuedToken,
    RegisteredClient,
};
pub use ids::{generate_api_key, generate_client_id, generate_token, hash_token};
pub use jwks::{AccessTokenClaims, DEFAULT_JWT_AUDIENCE, JwksIssuer};
pub use model::{
    ApiKeyGrant, EXAMPLE_API_KEY_ID, EXAMPLE_CLIENT_KEY_ID, EXAMPLE_DEPLOYMENT_ID, EXAMPLE_ISSUER,
    EXAMPLE_OWNER_USER_ID, Fault, RecordedRequest, ScopeDefinition, TokenGrant,
};
pub use rate_limits::{RateLimitMode, RateLimitRule, RateLimitUnit};
pub use webhooks::WebhookSigner;

use loopback::Running;
use server::Shared;

/// A running fake gateway on `127.0.0.1`.
///
/// This is a cheap, cloneable handle. The server stops when [`FakeGateway::shutdown`] is
/// called on any handle or when the last handle is dropped; stopping closes the listener
/// and every open connection.
#[derive(Clone)]
pub struct FakeGateway {
    handle: Arc<Handle>,
}

/// The part whose drop stops the server.
struct Handle {
    shared: Arc<Shared>,
    server: Running,
}

impl fmt::Debug for FakeGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGateway")
            .field("addr", &self.handle.server.addr())
            .finish_non_exhaustive()
    }
}

impl FakeGateway {
    /// Binds `127.0.0.1:0` and spawns the server on the current tokio runtime.
    ///
    /// Must be called from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if the loopback listener cannot be bound.
    pub async fn start() -> io::Result<FakeGateway> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        let server = Running::spawn(listener, "fake gateway", move |req| {
            let state = Arc::clone(&state);
            async move { server::route(&state, req).await }
        })?;
        Ok(FakeGateway {
            handle: Arc::new(Handle { shared, server }),
        })
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.handle.server.addr())
    }

    /// The bound socket address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.handle.server.addr()
    }

    /// Registers (or replaces, un-revoking) `token` with `grant`. Only the SHA-256 of the
    /// trimmed token is stored.
    pub fn register(&self, token: &str, grant: TokenGrant) {
        self.handle.shared.lock().register(hash_token(token), grant);
    }

    /// Registers (or replaces, un-revoking) the API key `key` with `grant`. Only the SHA-256
    /// of the trimmed key is stored. An unregistered key is answered `401` with the plain-text
    /// body `Invalid API key`, as the gateway does.
    pub fn register_api_key(&self, key: &str, grant: ApiKeyGrant) {
        self.handle.shared.lock().register_api_key(hash_token(key), grant);
    }

    /// Revokes `token` (an access token or an API key): from now on it gets `401` (the error
    /// envelope; for a key, `Invalid API key`). Unknown ones are ignored (they already get
    /// `401`).
    pub fn revoke(&self, token: &str) {
        self.handle.shared.lock().revoke(&hash_token(token));
    }

    /// [`FakeGateway::revoke`] by the token's [`hash_token`], for callers that keep only the
    /// hash.
    pub(crate) fn revoke_sha256(&self, token_sha256: &str) {
        self.handle.shared.lock().revoke(token_sha256);
    }

    /// Replaces the OAuth app's scope definitions (scope to permission mapping), which
    /// take effect on the next check, as on the real gateway.
    pub fn set_scope_definitions(&self, defs: Vec<ScopeDefinition>) {
        self.handle.shared.lock().set_scope_definitions(defs);
    }

    /// Replaces the rate-limit scheme with one rule of `max_requests` per `window` (whole
    /// milliseconds: unit `millisecond`) for every resource, and clears all counters. The
    /// rule is a sliding window, mode `per_app`: one counter per deployment and app slug
    /// (`oauth_<owner_user_id>`), so all tokens of one end user share it.
    pub fn set_rate_limit(&self, max_requests: u32, window: Duration) {
        self.handle.shared.lock().set_rate_limit(max_requests, window);
    }

    /// Replaces the rate-limit scheme with `rules` and clears all counters.
    ///
    /// As on Wacht, a check evaluates the rules whose endpoints match its normalised resource
    /// (absent endpoints or `*` match everything), by priority ascending; each counts the
    /// request if it allows it, even after an earlier rule blocked. An empty `rules` (or one
    /// where no rule matches a resource) is a scheme that limits nothing: `rate_limits` is
    /// `[]`. [`FakeGateway::clear_rate_limit_rules`] restores the default rule.
    ///
    /// Counter keys use the credential `P` (for a token `token:<its SHA-256>`, since a
    /// [`TokenGrant`] has no grant id; for an API key `key:<key id>`) and the client IP: the
    /// body's `client_ip`, else the `x-original-client-ip` header, else the TCP peer's IP.
    pub fn set_rate_limit_rules(&self, rules: Vec<RateLimitRule>) {
        self.handle.shared.lock().set_rate_limit_rules(Some(rules));
    }

    /// Restores Wacht's default scheme (1000 requests per minute, `per_app`, every resource)
    /// and clears all counters.
    pub fn clear_rate_limit_rules(&self) {
        self.handle.shared.lock().set_rate_limit_rules(None);
    }

    /// Clears all rate-limit counters, keeping the rules.
    pub fn reset_rate_limits(&self) {
        self.handle.shared.lock().reset_rate_limits();
    }

    /// Sets (or with `None` clears) the fault applied to every `POST /v1/authz/check`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.handle.shared.lock().fault = fault;
    }

    /// Number of requests that reached `POST /v1/authz/check`, whatever their outcome
    /// (faults and `4xx` included).
    #[must_use]
    pub fn calls(&self) -> usize {
        self.handle.shared.lock().calls
    }

    /// Resets [`FakeGateway::calls`] to zero.
    pub fn reset_calls(&self) {
        self.handle.shared.lock().calls = 0;
    }

    /// The most recent schema-valid check requests (up to 1000), oldest first.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.handle.shared.lock().requests.iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.handle.shared.lock().requests.clear();
    }

    /// Stops the server (even if other handles exist): closes the listener and every open
    /// connection, and waits for the server task to finish.
    pub async fn shutdown(self) {
        self.handle.server.stop().await;
    }
}
