//! Public data types observing a [`DevIssuer`](super::DevIssuer): the tokens it issued and
//! the clients it knows. None of them holds a credential, only hashes.

use std::time::SystemTime;

/// How an access token was obtained at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrantType {
    /// `grant_type=authorization_code`: exchanging an authorization code.
    AuthorizationCode,
    /// `grant_type=refresh_token`: redeeming (and rotating) a refresh token.
    RefreshToken,
}

/// One access token the issuer handed out and registered in the gateway.
///
/// Holds the token's SHA-256 ([`hash_token`](super::super::hash_token)), never the token.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// Lower-case hex SHA-256 of the access token, as the gateway stores it: compare with
    /// `hash_token(&access_token)`.
    pub token_sha256: String,
    /// The client it was issued to (`oc_…`, or the metadata document URL of a CIMD client).
    pub client_id: String,
    /// The scopes granted (registered in the gateway and answered as `scope`).
    pub scopes: Vec<String>,
    /// The scopes the client asked for (at authorization, or in the refresh request).
    pub requested_scopes: Vec<String>,
    /// The RFC 8707 `resource` it was issued for, registered as the grant's `oauth_resource`
    /// (the audience the resource server checks).
    pub resource: String,
    /// The Wacht resource URN registered as the grant's granted resource.
    pub granted_resource: String,
    /// How it was obtained.
    pub grant_type: GrantType,
    /// Whether a refresh token came with it (only for clients registered with the
    /// `refresh_token` grant type).
    pub with_refresh_token: bool,
    /// When it stops working.
    pub expires_at: SystemTime,
}

/// How the issuer came to know a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientKind {
    /// Registered through `POST /oauth/register` (RFC 7591).
    Dynamic,
    /// Its `client_id` is the URL of a Client ID Metadata Document, fetched at authorization.
    MetadataDocument,
    /// Registered by the test through
    /// [`DevIssuer::register_public_client`](super::DevIssuer::register_public_client).
    Preregistered,
}

/// A client the issuer knows, without its secret.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    /// Its `client_id`.
    pub client_id: String,
    /// How it was registered.
    pub kind: ClientKind,
    /// Its redirect URIs (matched exactly, except for the port of a loopback `http` URI).
    pub redirect_uris: Vec<String>,
    /// `none` (public client), `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    /// Its grant types (`authorization_code`, and `refresh_token` if it gets refresh tokens).
    pub grant_types: Vec<String>,
}
