//! # tower-wacht
//!
//! Protect Axum, Tonic and MCP servers with OAuth access tokens issued by
//! [Wacht](https://wacht.dev): one Tower layer verifies every request's bearer token through
//! the Wacht gateway, caches the verdict briefly (keyed by the token's SHA-256, never the
//! token), and hands handlers a [`Principal`].
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use tower_wacht::{Principal, RequirePermissions, WachtAuthConfig, WachtAuthLayer};
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
//!     .route_layer(RequirePermissions::all(["mcp:invoke"]))  // 403 insufficient_scope otherwise
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
//! Features: `axum` (default) makes [`Principal`] an extractor; `test-util` provides
//! `testing::FakeGateway`, a real loopback server speaking the gateway protocol; `metrics`
//! records the counters listed in [`telemetry`] through the `metrics` facade.
//!
//! Integrations: [`ProtectedResourceMetadata`] and [`McpToolGuard`] for MCP servers (RFC 9728
//! discovery, per-tool step-up), [`RequireMethodPermissions`] for per-method gRPC guards; the
//! same layer serves Tonic (`Server::builder().layer(auth)`) and answers gRPC in gRPC.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
mod axum;
mod body;
mod cache;
mod config;
mod gateway;
mod grpc;
mod guard;
mod layer;
mod mcp;
mod metadata;
mod principal;
mod reject;
pub mod telemetry;
mod timefmt;
mod token;
mod verify;

#[cfg(feature = "test-util")]
pub mod testing;

#[cfg(feature = "axum")]
pub use crate::axum::PrincipalRejection;
pub use crate::body::ResponseBody;
pub use crate::config::{ApiKey, ConfigError, DEFAULT_GATEWAY_URL, WachtAuthConfig, WachtAuthConfigBuilder};
pub use crate::gateway::{CheckRequest, Decision, Gateway, GatewayError, HttpGateway};
pub use crate::grpc::{RequireMethodPermissions, RequireMethodPermissionsService, Unmapped};
pub use crate::guard::{
    GuardFuture, GuardService, Permissions, RequirePermissions, RequirePermissionsService, Requirement,
};
pub use crate::layer::{ClientIp, ResponseFuture, WachtAuth, WachtAuthLayer};
#[doc(hidden)]
pub use crate::mcp::classify_mcp_body;
pub use crate::mcp::{DEFAULT_MAX_BODY_BYTES, McpGuardFuture, McpToolGuard, McpToolGuardService};
pub use crate::metadata::{ProtectedResourceMetadata, ProtectedResourceMetadataBuilder, WELL_KNOWN_PREFIX};
pub use crate::principal::{
    ClientId, DeploymentId, Grant, OrganizationId, Principal, RequestId, ResourceUrn, StringSet, UserId, WorkspaceId,
};
pub use crate::reject::{AuthError, ChallengeParams, grpc_code};
pub use crate::token::{
    BearerToken, DEFAULT_MAX_TOKEN_LEN, TokenError, TokenHash, bearer_from_headers, parse_authorization,
};
pub use crate::verify::Verifier;
