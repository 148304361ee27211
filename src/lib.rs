//! # tower-wacht
//!
//! Protect Axum, Tonic and MCP servers with OAuth access tokens issued by
//! [Wacht](https://wacht.dev): one Tower layer verifies every request's bearer token through
//! the Wacht gateway, caches the verdict briefly (keyed by the token's SHA-256, never the
//! token), and hands handlers a [`Principal`].
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use tower_wacht::{Principal, RequirePermissionsLayer, WachtAuthConfig, WachtAuthLayer};
//!
//! async fn whoami(principal: Principal) -> String {
//!     format!("{} acting on {:?} with {:?}", principal.client_id(), principal.granted_resource(), principal.scopes())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = WachtAuthConfig::builder()           // or WachtAuthConfig::from_env()?
//!     .api_key("sk_live_...")
//!     .expected_deployment_id(418223109876543489)   // your Wacht deployment: refuse other tenants' tokens
//!     .expected_issuer("https://auth.example.com")  // your OAuth app's issuer
//!     .expected_audience("https://api.example.com") // reject tokens issued for other servers
//!     .build()?;
//! let auth = WachtAuthLayer::new(config)?;
//!
//! let app: Router = Router::new()
//!     .route("/tools/invoke", post(|| async { "invoked" }))
//!     .route_layer(RequirePermissionsLayer::all(["mcp:invoke"]))  // 403 insufficient_scope otherwise
//!     .route("/whoami", get(whoami))
//!     .layer(auth);                                          // 401 / 429 / 503 before any handler
//! # let _ = app; Ok(()) }
//! ```
//!
//! What a client sees when a request is refused:
//!
//! | condition | HTTP | challenge / header | gRPC |
//! | --- | --- | --- | --- |
//! | no token (or another scheme) | 401 | `WWW-Authenticate: Bearer realm=...` (no `error`) | 16 UNAUTHENTICATED |
//! | malformed, unknown, expired, revoked, wrong deployment/issuer/audience | 401 | `error="invalid_token"` | 16 UNAUTHENTICATED |
//! | repeated `Authorization` headers | 400 | `invalid_request` in the body | 3 INVALID_ARGUMENT |
//! | missing permission | 403 | `error="insufficient_scope", scope="..."` | 7 PERMISSION_DENIED |
//! | gateway rate limit | 429 | `Retry-After: <seconds>` | 8 RESOURCE_EXHAUSTED |
//! | gateway down, slow or answering garbage | 503 | `Retry-After: <seconds>` | 14 UNAVAILABLE |
//!
//! A response that streams (SSE, an MCP GET stream, a gRPC server stream) ends with its token:
//! at the token's expiry, and within
//! [`stream_recheck`](WachtAuthConfigBuilder::stream_recheck) (5 s) of an `invalidate` or a
//! denial that covers its caller; a gRPC stream then ends with UNAUTHENTICATED in its trailers
//! (see [`body::ResponseBody`]).
//!
//! Features: `axum` (default) makes [`Principal`] an extractor; `test-util` provides
//! `testing::FakeGateway`, a real loopback server speaking the gateway protocol; `metrics`
//! records the counters listed in [`telemetry`] through the `metrics` facade.
//!
//! [`WachtWebhooks`] receives Wacht's webhooks (signed deliveries: a session deleted, a user
//! deleted, an API key rotated, ...) and ends the cached access they name, on every replica in
//! fleet mode.
//!
//! Integrations: [`ProtectedResourceMetadata`] and [`McpGuardLayer`] for MCP servers (RFC
//! 9728 discovery; step-up per tool, resource, prompt and for tasks; lists filtered to what the
//! caller may use), [`RequireMethodPermissionsLayer`] for per-method gRPC
//! guards; the same layer serves Tonic (`Server::builder().layer(auth)`) and answers gRPC in
//! gRPC.
//!
//! The crate root holds what most users name. The rest lives in modules: [`config`],
//! [`layer`] (the service and [`ClientIp`]), [`guard`] (guards and their services),
//! [`future`] (every response future), [`body`], [`reject`] (refusal reasons and rendering
//! parameters), [`principal`] (ids and the grant), [`route`] (what the gateway is told a request
//! accesses), [`token`] (parsing and hashing), [`gateway`] (the gateway seam and its wire types),
//! [`metadata`], [`webhooks`], [`telemetry`] and, with
//! `test-util`, [`testing`]. `ARCHITECTURE.md` maps the modules.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api_key;
pub mod audit;
#[cfg(feature = "axum")]
mod axum;
pub mod body;
mod cache;
pub mod change;
pub mod config;
pub mod cors;
mod error;
#[cfg(feature = "redis")]
pub mod fleet;
pub mod gateway;
pub mod guard;
mod json;
pub mod jwt;
pub mod layer;
pub mod metadata;
pub mod principal;
pub mod rate_limit;
pub mod reject;
pub mod route;
pub mod scopes;
pub mod stepup;
pub mod telemetry;
mod timefmt;
pub mod token;
mod verify;
pub mod webhooks;

#[cfg(feature = "test-util")]
pub mod testing;

/// Every response future of the crate's services.
pub mod future {
    pub use crate::cors::McpCorsFuture;
    pub use crate::guard::future::GuardFuture;
    pub use crate::guard::mcp::McpGuardFuture;
    #[allow(deprecated)]
    pub use crate::guard::mcp::McpToolGuardFuture;
    pub use crate::layer::future::ResponseFuture;
    pub use crate::webhooks::WachtWebhooksFuture;
}

#[cfg(feature = "axum")]
pub use crate::axum::PrincipalRejection;
pub use crate::change::ChangeOutcome;
pub use crate::config::{WachtAuthConfig, WachtAuthConfigBuilder};
pub use crate::cors::McpCorsLayer;
pub use crate::error::ConfigError;
pub use crate::gateway::ClientIp;
#[allow(deprecated)]
pub use crate::guard::McpToolGuardLayer;
#[doc(hidden)]
pub use crate::guard::classify_mcp_body;
pub use crate::guard::{McpGuardLayer, Permissions, RequireMethodPermissionsLayer, RequirePermissionsLayer};
pub use crate::layer::WachtAuthLayer;
pub use crate::metadata::ProtectedResourceMetadata;
pub use crate::principal::{ApiKeyIdentity, CredentialKind, Principal, ResourceUrn};
pub use crate::reject::AuthError;
pub use crate::stepup::InsufficientScope;
pub use crate::verify::Verifier;
pub use crate::webhooks::WachtWebhooks;
