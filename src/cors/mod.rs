//! [`McpCorsLayer`]: CORS for MCP endpoints, so that browser clients (the MCP Inspector in
//! direct mode, web apps) can call `/mcp` and read its answers, refusals and their
//! `WWW-Authenticate` challenge included.
//!
//! Put it *outside* [`WachtAuthLayer`](crate::WachtAuthLayer):
//!
//! ```text
//! McpCors ─ a preflight from an allowed origin? ─► 204 with the allowance (nothing inner runs)
//!         └ anything else ─► WachtAuth ─► guards ─► the MCP service
//!                     answer ◄─ Access-Control-Allow-Origin + Expose-Headers (allowed origins)
//! ```
//!
//! A browser sends a preflight without credentials, so it cannot pass the auth layer; this
//! layer answers it itself and never calls the service inside for it. What counts as a
//! preflight is exactly what the auth layer's
//! [`pass_cors_preflight`](crate::WachtAuthConfigBuilder::pass_cors_preflight) would pass:
//! `OPTIONS` with `Origin` and `Access-Control-Request-Method`, without a body, `Content-Type`,
//! `TE` or `Transfer-Encoding` (so never a gRPC call). Anything else, a preflight from an origin
//! that is not allowed included, goes on to the auth layer, which refuses it without a token:
//! this layer lets nothing through that the auth layer would not.
//!
//! Every answer to a request from an allowed origin (`200`, and the layer's `401`, `403`, `429`
//! and `503` alike) carries `Access-Control-Allow-Origin: <that origin>` and
//! `Access-Control-Expose-Headers: WWW-Authenticate, Mcp-Session-Id, Mcp-Protocol-Version,
//! Retry-After`; every answer carries `Vary: Origin`. No `*` and no
//! `Access-Control-Allow-Credentials`: MCP clients send their token in `Authorization`, which
//! needs neither, and a wildcard cannot be combined with credentials anyway.
//!
//! ```
//! # fn main() -> Result<(), tower_wacht::ConfigError> {
//! use tower_wacht::McpCorsLayer;
//!
//! let cors = McpCorsLayer::new(["https://app.example.com", "http://localhost:*"])?;
//! // app = Router::new().route_service("/mcp", mcp).layer(guard).layer(auth).layer(cors)
//! # let _ = cors; Ok(()) }
//! ```
//!
//! rmcp checks `Origin` itself when told to (`StreamableHttpServerConfig::with_allowed_origins`,
//! which MCP's transport rules call for): give it [`McpCorsLayer::allowed_origins`], so that
//! every origin this layer lets a browser read answers from is one rmcp serves.

mod origin;
mod service;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use self::origin::AllowedOrigin;
pub(crate) use self::service::is_preflight;
pub use self::service::{McpCors, McpCorsFuture};
use crate::error::ConfigError;

/// Request headers an MCP client sends: what a preflight may ask for. `Mcp-Param-*` (tool
/// arguments mirrored into headers, MCP 2026-07-28) is allowed by its prefix.
const MCP_REQUEST_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// Response headers a browser client must be able to read: the challenge, the session, the
/// negotiated version, and when to retry a 429 or 503.
const EXPOSED_HEADERS: [&str; 4] = [
    "www-authenticate",
    "mcp-session-id",
    "mcp-protocol-version",
    "retry-after",
];

/// Chromium's cap on how long a preflight's answer is kept (Firefox keeps one for a day).
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7200);

/// Tower layer answering CORS for MCP endpoints (see the [module docs](self)): preflights
/// from the allowed origins, and the allowance on every answer to them. Layers are applied
/// outside in: `.layer(auth).layer(cors)` in Axum puts it in front of the auth layer.
///
/// Defaults: no origin is allowed until listed; methods `GET`, `POST`, `DELETE`; request
/// headers `Authorization`, `Content-Type`, `Accept`, `Mcp-Session-Id`, `Mcp-Protocol-Version`,
/// `Mcp-Method`, `Mcp-Name`, `Last-Event-ID` and `Mcp-Param-*`; exposed `WWW-Authenticate`,
/// `Mcp-Session-Id`, `Mcp-Protocol-Version`, `Retry-After`; preflights kept for 2 hours. A
/// preflight asking for Private Network Access (a public page calling a server on the user's
/// machine) is granted for an allowed origin.
#[derive(Debug, Clone)]
pub struct McpCorsLayer {
    settings: Arc<Settings>,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    origins: Vec<AllowedOrigin>,
    /// Request headers allowed beyond [`MCP_REQUEST_HEADERS`].
    extra_request_headers: Vec<HeaderName>,
    /// Response headers exposed beyond [`EXPOSED_HEADERS`].
    extra_exposed_headers: Vec<HeaderName>,
    /// `Access-Control-Expose-Headers`, written once.
    exposed: HeaderValue,
    /// `Access-Control-Max-Age`.
    max_age: HeaderValue,
}

impl McpCorsLayer {
    /// Allows browser pages on `origins` to call the service: each `scheme://host`,
    /// `scheme://host:port` or `scheme://host:*` (any port), as a browser sends `Origin`; no
    /// port means the scheme's default (`https://app.example.com` is port 443 only). Hosts
    /// compare case-insensitively; IPv6 hosts in brackets (`http://[::1]:*`).
    ///
    /// Refused: `*` (every site could read your answers; list them), `null` (the origin of
    /// sandboxed frames and local files, which any page can make), and anything with a path,
    /// query, user or other text an `Origin` never has.
    pub fn new<I, S>(origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        McpCorsLayer::allowing(Vec::new()).allow_origins(origins)
    }

    /// Allows pages served from loopback on any port: `http://localhost:*`,
    /// `http://127.0.0.1:*` and `http://[::1]:*` (the MCP Inspector at `http://localhost:6274`,
    /// a web client under development).
    pub fn loopback() -> Self {
        McpCorsLayer::allowing(AllowedOrigin::loopback())
    }

    fn allowing(origins: Vec<AllowedOrigin>) -> Self {
        McpCorsLayer {
            settings: Arc::new(Settings {
                origins,
                extra_request_headers: Vec::new(),
                extra_exposed_headers: Vec::new(),
                exposed: exposed_value(&[]),
                max_age: HeaderValue::from(DEFAULT_MAX_AGE.as_secs()),
            }),
        }
    }

    /// Allows more origins (the forms [`new`](Self::new) takes).
    pub fn allow_origins<I, S>(mut self, origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let settings = Arc::make_mut(&mut self.settings);
        for origin in origins {
            let origin = AllowedOrigin::parse(origin.as_ref())?;
            if !settings.origins.contains(&origin) {
                settings.origins.push(origin);
            }
        }
        Ok(self)
    }

    /// Allows a preflight to ask for more request headers than an MCP client sends (your
    /// own, sent by your web app).
    pub fn allow_headers<I: IntoIterator<Item = HeaderName>>(mut self, names: I) -> Self {
        let settings = Arc::make_mut(&mut self.settings);
        for name in names {
            if !settings.extra_request_headers.contains(&name) {
                settings.extra_request_headers.push(name);
            }
        }
        self
    }

    /// Lets browser clients read more response headers than the MCP ones.
    pub fn expose_headers<I: IntoIterator<Item = HeaderName>>(mut self, names: I) -> Self {
        let settings = Arc::make_mut(&mut self.settings);
        for name in names {
            if !settings.extra_exposed_headers.contains(&name) {
                settings.extra_exposed_headers.push(name);
            }
        }
        settings.exposed = exposed_value(&settings.extra_exposed_headers);
        self
    }

    /// How long a browser may keep a preflight's answer (default: 2 hours), in whole seconds.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        Arc::make_mut(&mut self.settings).max_age = HeaderValue::from(max_age.as_secs());
        self
    }

    /// The allowed origins with their ports spelled out (`https://app.example.com:443`,
    /// `http://localhost:*`), as rmcp's `StreamableHttpServerConfig::with_allowed_origins`
    /// reads them: hand them to rmcp so that it serves every origin this layer allows (rmcp
    /// reads an entry without a port as any port).
    pub fn allowed_origins(&self) -> Vec<String> {
        self.settings.origins.iter().map(AllowedOrigin::to_rmcp).collect()
    }
}

impl<S> tower_layer::Layer<S> for McpCorsLayer {
    type Service = McpCors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        McpCors::new(inner, Arc::clone(&self.settings))
    }
}

/// `Access-Control-Expose-Headers` for the MCP headers and `extra`.
fn exposed_value(extra: &[HeaderName]) -> HeaderValue {
    let mut names: Vec<&str> = EXPOSED_HEADERS.to_vec();
    names.extend(
        extra
            .iter()
            .map(HeaderName::as_str)
            .filter(|n| !EXPOSED_HEADERS.contains(n)),
    );
    // Header names are tokens; joined with ", " they are a valid value.
    HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("www-authenticate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_null_and_urls_are_not_origins() {
        for bad in [
            "*",
            "null",
            "https://*.example.com",
            "https://app.example.com/",
            "https://app.example.com/mcp",
            "https://user@app.example.com",
            "https://app.example.com?x",
            "app.example.com",
            "https://app.example.com:99999",
            "https://app.example.com:*:*",
            "",
        ] {
            assert!(McpCorsLayer::new([bad]).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn allowed_origins_spell_out_their_ports_for_rmcp() {
        let layer = McpCorsLayer::new(["HTTPS://App.Example.com", "http://localhost:*", "http://[::1]:8080"])
            .unwrap()
            .allow_origins(["https://app.example.com:443"])
            .unwrap();
        assert_eq!(
            layer.allowed_origins(),
            ["https://app.example.com:443", "http://localhost:*", "http://[::1]:8080"]
        );
        assert_eq!(
            McpCorsLayer::loopback().allowed_origins(),
            ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
        );
    }

    #[test]
    fn extra_exposed_headers_follow_the_mcp_ones() {
        let layer = McpCorsLayer::loopback().expose_headers([HeaderName::from_static("x-request-id")]);
        assert_eq!(
            layer.settings.exposed,
            "www-authenticate, mcp-session-id, mcp-protocol-version, retry-after, x-request-id"
        );
    }
}
