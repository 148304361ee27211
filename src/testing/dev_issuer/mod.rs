//! [`DevIssuer`]: a loopback OAuth 2.1 authorization server playing a Wacht OAuth app's
//! issuer, so that MCP clients complete the whole authorization flow without a Wacht account.

mod cimd;
mod config;
mod endpoints;
mod model;
mod params;
mod redirect;
mod server;
mod state;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{ConsentPolicy, DEFAULT_GRANTED_RESOURCE, DevIssuerConfig, IssForm};
pub use model::{ClientKind, GrantType, IssuedToken, RegisteredClient};

use super::FakeGateway;
use super::loopback::Running;
use server::Inner;

/// A running development authorization server on `127.0.0.1`, issuing access tokens into a
/// [`FakeGateway`].
///
/// It answers Wacht's paths, `GET /oauth/authorize`, `POST /oauth/token` and
/// `POST /oauth/register`, and publishes RFC 8414 metadata at
/// `/.well-known/oauth-authorization-server` (and the same document at
/// `/.well-known/openid-configuration`). Its issuer is its URL, `http://127.0.0.1:PORT`,
/// without a path, so those root paths are also the path-aware discovery URLs clients build.
///
/// What it does, as MCP clients (2026-07-28) expect of an authorization server:
///
/// * **Clients**: dynamic registration (RFC 7591; public clients with
///   `token_endpoint_auth_method: none`, or confidential ones with a generated secret),
///   clients registered by the test ([`DevIssuer::register_public_client`]), and, when
///   [`DevIssuerConfig::client_id_metadata_documents`] is on (it is off by default), Client
///   ID Metadata Documents: a `client_id` that is an `https` URL names the client's document,
///   fetched at authorization from public addresses only (loopback only on the ports
///   [`DevIssuerConfig::allow_loopback_metadata_document_port`] names), kept as its
///   `Cache-Control` allows, and whose `client_id` must equal the URL.
/// * **Redirect URIs** match exactly, except on loopback: a registered
///   `http://127.0.0.1/callback`, `http://localhost/callback` or `http://[::1]/callback` (with
///   or without a port) matches that URI with any port (RFC 8252 §7.3), as native clients
///   listening on a port the system gives them need (Claude Code's metadata document lists
///   port-less loopback URIs; VS Code moves off 33418 when it is busy). Scheme, host, path
///   and query stay exact; the token request must repeat the URI of its authorization.
/// * **Authorization**: `response_type=code` with PKCE `S256` (plain or missing is refused),
///   a required RFC 8707 `resource`, scopes from [`DevIssuerConfig::new`]'s list. There is no
///   consent screen: the [`ConsentPolicy`] decides at once, then the browser is sent to
///   `redirect_uri?code=…&state=…&iss=…` ([`IssForm`]). Errors go back to the redirect URI
///   once it is known to be the client's; before that they are shown as a `400` page.
/// * **Tokens**: codes are single-use and short-lived (a code presented twice revokes the
///   tokens issued for it); the verifier, redirect URI, client and `resource` must match the
///   authorization. Refresh tokens (for clients registered with the `refresh_token` grant) are
///   rotated at each use; presenting a rotated one revokes the whole grant. Errors are RFC
///   6749 JSON answers (`invalid_request`, `invalid_client` with `401`, `invalid_grant`,
///   `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, and RFC 8707's
///   `invalid_target`).
/// * **The gateway**: every access token is registered in the [`FakeGateway`] with its client
///   id, granted scopes, the configured granted resource URN, `oauth_resource` = the requested
///   `resource`, and this issuer's URL as its issuer, so `WachtAuthLayer` verifies it through
///   the normal gateway path (pin `expected_issuer` to [`DevIssuer::url`]).
/// * **Browsers**: metadata, token and registration answers carry
///   `Access-Control-Allow-Origin: *` and preflights are answered, for clients such as the MCP
///   Inspector.
///
/// Codes, refresh tokens and client secrets are stored only as their SHA-256, and none of
/// them (nor access tokens) appears in `Debug` output or logs.
///
/// Not modelled: Wacht's hosted consent pages (`/oauth/consent`), introspection and
/// revocation endpoints, the client configuration endpoint of RFC 7592, `private_key_jwt`,
/// user login. Everything lives in memory and ends with the server.
///
/// This is a cheap, cloneable handle. The server stops when [`DevIssuer::shutdown`] is called
/// on any handle or when the last handle is dropped.
///
/// ```no_run
/// use tower_wacht::testing::{ConsentPolicy, DevIssuer, DevIssuerConfig, FakeGateway};
/// use tower_wacht::WachtAuthConfig;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let gateway = FakeGateway::start().await?;
/// let issuer = DevIssuer::start(
///     gateway.clone(),
///     DevIssuerConfig::new(["projects:read", "projects:write"]).consent(ConsentPolicy::GrantAll),
/// )
/// .await?;
/// let config = WachtAuthConfig::builder()
///     .gateway_url(gateway.url())
///     .api_key("sk_test_dev")
///     .expected_issuer(issuer.url())
///     .expected_audience("http://127.0.0.1:8080/mcp")
///     .build()?;
/// // Serve the MCP server with `WachtAuthLayer::new(config)?`, and name `issuer.url()` in
/// // its protected resource metadata's `authorization_servers`.
/// # let _ = config;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DevIssuer {
    handle: Arc<Handle>,
}

/// The part whose drop stops the server.
struct Handle {
    inner: Arc<Inner>,
    server: Running,
}

impl fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.handle.inner.issuer)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Binds `127.0.0.1` (on [`DevIssuerConfig::port`], by default a free port) and spawns the
    /// server on the current tokio runtime. Tokens it issues are registered in `gateway`.
    ///
    /// Must be called from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if the loopback listener cannot be bound.
    pub async fn start(gateway: FakeGateway, config: DevIssuerConfig) -> io::Result<DevIssuer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::new(config, format!("http://{addr}"), gateway));
        let state = Arc::clone(&inner);
        let server = Running::spawn(listener, "dev issuer", move |req| {
            let state = Arc::clone(&state);
            async move { Ok(server::route(&state, req).await) }
        })?;
        Ok(DevIssuer {
            handle: Arc::new(Handle { inner, server }),
        })
    }

    /// The issuer identifier and base URL, `http://127.0.0.1:PORT` (no trailing slash): the
    /// metadata's `issuer`, the issuer registered with every token, and the authorization
    /// server the MCP server's protected resource metadata should name.
    #[must_use]
    pub fn url(&self) -> String {
        self.handle.inner.issuer.clone()
    }

    /// The bound socket address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.handle.server.addr()
    }

    /// URL of the RFC 8414 metadata document.
    #[must_use]
    pub fn metadata_url(&self) -> String {
        format!("{}{}", self.handle.inner.issuer, server::OAUTH_METADATA_PATH)
    }

    /// URL of the authorization endpoint (`/oauth/authorize`).
    #[must_use]
    pub fn authorization_endpoint(&self) -> String {
        format!("{}{}", self.handle.inner.issuer, server::AUTHORIZE_PATH)
    }

    /// URL of the token endpoint (`/oauth/token`).
    #[must_use]
    pub fn token_endpoint(&self) -> String {
        format!("{}{}", self.handle.inner.issuer, server::TOKEN_PATH)
    }

    /// URL of the registration endpoint (`/oauth/register`; answered only with
    /// [`DevIssuerConfig::dynamic_registration`] on).
    #[must_use]
    pub fn registration_endpoint(&self) -> String {
        format!("{}{}", self.handle.inner.issuer, server::REGISTER_PATH)
    }

    /// The gateway the tokens are registered in.
    #[must_use]
    pub fn gateway(&self) -> &FakeGateway {
        &self.handle.inner.gateway
    }

    /// Registers a public client (`token_endpoint_auth_method: none`, grant types
    /// `authorization_code` and `refresh_token`) with these redirect URIs, as if created in
    /// the Wacht console, and returns its `client_id`. The URIs are not checked; they are
    /// matched exactly, except for the port of a loopback `http` URI (see [`DevIssuer`]).
    pub fn register_public_client<I, S>(&self, redirect_uris: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let uris = redirect_uris.into_iter().map(Into::into).collect();
        let grants = vec!["authorization_code".to_owned(), "refresh_token".to_owned()];
        let (client_id, _) = self
            .handle
            .inner
            .lock()
            .add_client(ClientKind::Preregistered, uris, "none", grants);
        client_id
    }

    /// Replaces the consent policy; it applies to the next authorization request.
    pub fn set_consent_policy(&self, policy: ConsentPolicy) {
        self.handle.inner.lock().consent = policy;
    }

    /// Every access token issued so far, oldest first (hashes only).
    #[must_use]
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.handle.inner.lock().issued.clone()
    }

    /// Every client known: registered, pre-registered, or described by a metadata document
    /// (as its document last read), in the order they became known.
    #[must_use]
    pub fn clients(&self) -> Vec<RegisteredClient> {
        self.handle.inner.lock().clients()
    }

    /// How many clients registered through `POST /oauth/register`.
    #[must_use]
    pub fn registrations(&self) -> usize {
        self.handle.inner.lock().registrations
    }

    /// How many requests for client metadata documents were sent: one per authorization
    /// request naming a document that is not cached, whose URL has an acceptable form and
    /// whose host resolved to addresses it may be fetched from, whatever the answer. A URL
    /// refused before any request left (its form, or where it points) is not counted.
    #[must_use]
    pub fn metadata_document_fetches(&self) -> usize {
        self.handle.inner.documents.fetches()
    }

    /// The `resource` of the latest authorization or token request that carried a
    /// well-formed one.
    #[must_use]
    pub fn last_resource(&self) -> Option<String> {
        self.handle.inner.lock().last_resource.clone()
    }

    /// Stops the server (even if other handles exist): closes the listener and every open
    /// connection, and waits for the server task to finish. The gateway keeps running.
    pub async fn shutdown(self) {
        self.handle.server.stop().await;
    }
}
