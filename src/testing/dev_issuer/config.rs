//! How a [`DevIssuer`](super::DevIssuer) behaves: [`DevIssuerConfig`], [`ConsentPolicy`] and
//! [`IssForm`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::super::model::{EXAMPLE_DEPLOYMENT_ID, EXAMPLE_OWNER_USER_ID};

/// Default granted resource: the organization of the gateway protocol reference's examples.
pub const DEFAULT_GRANTED_RESOURCE: &str = "urn:wacht:organization:427001234567890561";

/// Which scopes the simulated user approves on the (skipped) consent screen.
///
/// Requested scopes outside the issuer's `scopes_supported` are refused with `invalid_scope`
/// before the policy applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsentPolicy {
    /// Grant every requested scope (the default).
    #[default]
    GrantAll,
    /// Grant the requested scopes that are in this list, and no others (possibly none): the
    /// user unticks the rest. Use it to make a client meet `403 insufficient_scope` and
    /// exercise step-up authorization.
    Only(Vec<String>),
    /// The user denies: the client is redirected with `error=access_denied`.
    Deny,
}

impl ConsentPolicy {
    /// [`ConsentPolicy::Only`] from anything yielding strings:
    /// `ConsentPolicy::only(["projects:read"])`.
    #[must_use]
    pub fn only<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ConsentPolicy::Only(scopes.into_iter().map(Into::into).collect())
    }

    /// The scopes granted for `requested` (already checked against `scopes_supported`), or
    /// `None` when the user denies.
    pub(super) fn grant(&self, requested: &[String]) -> Option<Vec<String>> {
        match self {
            ConsentPolicy::GrantAll => Some(requested.to_vec()),
            ConsentPolicy::Only(allowed) => Some(requested.iter().filter(|s| allowed.contains(s)).cloned().collect()),
            ConsentPolicy::Deny => None,
        }
    }
}

/// The form of the RFC 9207 `iss` parameter added to authorization responses.
///
/// Clients compare it with the `issuer` of the metadata by plain string equality: rmcp and
/// the Python SDK (2.3.0, which keeps a path-less URL as written) expect exactly the
/// published `issuer` and refuse the trailing-slash form. A client that normalises the
/// `issuer` as a URL (adding `/` to an empty path) expects the slash form. The metadata `issuer` itself never changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssForm {
    /// Exactly the metadata `issuer`, `http://127.0.0.1:PORT` (the default; what RFC 9207 and
    /// rmcp expect).
    #[default]
    Issuer,
    /// The issuer with a trailing slash, `http://127.0.0.1:PORT/` (what a client that
    /// normalises a path-less URL expects; rmcp and the Python SDK 2.3.0 refuse it, so a
    /// client that compares exactly must fail the check).
    TrailingSlash,
    /// No `iss` parameter, and `authorization_response_iss_parameter_supported: false` in the
    /// metadata (an authorization server without RFC 9207).
    Omitted,
}

/// Configuration of a [`DevIssuer`](super::DevIssuer): what it advertises, what consent
/// grants, what the tokens it registers in the [`FakeGateway`](super::super::FakeGateway)
/// carry, and how long its credentials live.
///
/// ```
/// use std::time::Duration;
/// use tower_wacht::testing::{ConsentPolicy, DevIssuerConfig, IssForm};
///
/// let config = DevIssuerConfig::new(["projects:read", "projects:write"])
///     .consent(ConsentPolicy::only(["projects:read"]))
///     .access_token_ttl(Duration::from_secs(300))
///     .iss_form(IssForm::TrailingSlash);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct DevIssuerConfig {
    pub(super) scopes_supported: Vec<String>,
    pub(super) consent: ConsentPolicy,
    pub(super) granted_resource: String,
    pub(super) access_token_ttl: Duration,
    pub(super) refresh_token_ttl: Duration,
    pub(super) code_ttl: Duration,
    pub(super) iss_form: IssForm,
    pub(super) metadata_documents: bool,
    pub(super) loopback_document_ports: Vec<u16>,
    pub(super) document_hosts: BTreeMap<String, Vec<IpAddr>>,
    pub(super) dynamic_registration: bool,
    pub(super) refresh_tokens: bool,
    pub(super) deployment_id: i64,
    pub(super) owner_user_id: i64,
    pub(super) port: u16,
}

impl DevIssuerConfig {
    /// An issuer whose OAuth app supports exactly `scopes_supported` (published in the
    /// metadata; any other requested scope is refused with `invalid_scope`), with the
    /// defaults: [`ConsentPolicy::GrantAll`], granted resource
    /// [`DEFAULT_GRANTED_RESOURCE`], access tokens for 1 hour, refresh tokens for 30 days,
    /// authorization codes for 60 seconds, [`IssForm::Issuer`], client ID metadata documents
    /// off (see [`client_id_metadata_documents`](Self::client_id_metadata_documents)),
    /// dynamic client registration on, the
    /// example deployment and end user ids of [`TokenGrant::new`](super::super::TokenGrant::new),
    /// and a free port.
    #[must_use]
    pub fn new<I, S>(scopes_supported: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        DevIssuerConfig {
            scopes_supported: scopes_supported.into_iter().map(Into::into).collect(),
            consent: ConsentPolicy::GrantAll,
            granted_resource: DEFAULT_GRANTED_RESOURCE.to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            iss_form: IssForm::Issuer,
            metadata_documents: false,
            loopback_document_ports: Vec::new(),
            document_hosts: BTreeMap::new(),
            dynamic_registration: true,
            refresh_tokens: true,
            deployment_id: EXAMPLE_DEPLOYMENT_ID,
            owner_user_id: EXAMPLE_OWNER_USER_ID,
            port: 0,
        }
    }

    /// The consent policy the issuer starts with (change it later with
    /// [`DevIssuer::set_consent_policy`](super::DevIssuer::set_consent_policy)).
    #[must_use]
    pub fn consent(mut self, policy: ConsentPolicy) -> Self {
        self.consent = policy;
        self
    }

    /// The Wacht resource URN the user picks at consent (`urn:wacht:organization:<id>`,
    /// `urn:wacht:workspace:<id>` or `urn:wacht:user:<id>`), registered as every token's
    /// granted resource. It decides which permissions the gateway derives from the scopes.
    #[must_use]
    pub fn granted_resource(mut self, urn: impl Into<String>) -> Self {
        self.granted_resource = urn.into();
        self
    }

    /// Lifetime of access tokens (`expires_in`, and their expiry in the gateway).
    #[must_use]
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_token_ttl = ttl;
        self
    }

    /// Lifetime of refresh tokens.
    #[must_use]
    pub fn refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_token_ttl = ttl;
        self
    }

    /// Lifetime of authorization codes.
    #[must_use]
    pub fn code_ttl(mut self, ttl: Duration) -> Self {
        self.code_ttl = ttl;
        self
    }

    /// Form of the `iss` parameter of authorization responses.
    #[must_use]
    pub fn iss_form(mut self, form: IssForm) -> Self {
        self.iss_form = form;
        self
    }

    /// Whether Client ID Metadata Documents are accepted (default: **no**): a `client_id`
    /// that is an `https` URL names a JSON document describing the client, which the issuer
    /// fetches at authorization. When on, the metadata advertises
    /// `client_id_metadata_document_supported: true`, and clients that prefer documents (Claude
    /// Code, VS Code, the official conformance client) use them; when off, it advertises
    /// `false`, a URL `client_id` is an unknown client, and those clients fall back to
    /// dynamic registration.
    ///
    /// Off by default because turning it on makes the issuer fetch URLs a browser hands it.
    /// It fetches only from public addresses, checked after name resolution and connected
    /// to as checked (no second lookup, no proxy, no redirects), at most 64 KiB within 5
    /// seconds, and caches a document as its `Cache-Control` allows (`max-age`, at most an
    /// hour; `no-store` and `no-cache` are not kept), 64 documents at most. Every failure
    /// after the URL's form was checked (an address refused, no connection, an error status,
    /// a document that does not describe the client) shows the same page, so the issuer cannot
    /// be used to tell which internal hosts answer; the reason goes to the debug log.
    #[must_use]
    pub fn client_id_metadata_documents(mut self, enabled: bool) -> Self {
        self.metadata_documents = enabled;
        self
    }

    /// **For tests and local development.** Also fetch client metadata documents from this
    /// port on this machine: `http` or `https` URLs whose host is `localhost` (resolved to
    /// `127.0.0.1` and `::1` without DNS), an address of `127.0.0.0/8` or `[::1]`, with
    /// exactly this port, so that a test or a client under development can serve its
    /// document itself. Call it once per port. Other loopback ports stay refused, as do
    /// IPv4-mapped forms of loopback (`[::ffff:7f00:1]`) and every other non-public address.
    /// Takes effect only with [`client_id_metadata_documents`](Self::client_id_metadata_documents)
    /// on.
    #[must_use]
    pub fn allow_loopback_metadata_document_port(mut self, port: u16) -> Self {
        if !self.loopback_document_ports.contains(&port) {
            self.loopback_document_ports.push(port);
        }
        self
    }

    /// **For tests.** When fetching a client metadata document, resolve `host` to these
    /// addresses instead of asking DNS (like curl's `--resolve`). The addresses are checked
    /// like a DNS answer: a name resolving to a private, link-local or loopback address is
    /// refused all the same, which is what a test of those rules needs, without a DNS server.
    #[must_use]
    pub fn resolve_metadata_document_host<I>(mut self, host: impl Into<String>, addresses: I) -> Self
    where
        I: IntoIterator<Item = IpAddr>,
    {
        self.document_hosts
            .insert(host.into().to_ascii_lowercase(), addresses.into_iter().collect());
        self
    }

    /// Whether `POST /oauth/register` (RFC 7591) is offered and advertised as
    /// `registration_endpoint` (default: yes; Wacht's `allow_dynamic_client_registration`).
    /// Without it, clients must use a metadata document or a pre-registered client.
    #[must_use]
    pub fn dynamic_registration(mut self, enabled: bool) -> Self {
        self.dynamic_registration = enabled;
        self
    }

    /// Whether refresh tokens are issued (default: yes, to clients registered for the
    /// `refresh_token` grant, rotated at each use). Without them the metadata advertises only
    /// `authorization_code`, registrations asking for `refresh_token` are answered without it
    /// (RFC 7591 lets the server register less than asked), and clients authorize again when
    /// their access token expires.
    ///
    /// Turning them off lets clients that refresh instead of re-authorizing on a 403
    /// `insufficient_scope` step up: the official TypeScript SDK 1.x (1.32.2, used by the MCP
    /// Inspector) answers the challenge with a refresh, which cannot widen the scope (RFC 6749
    /// §6), and then gives up ("Server returned 403 after trying upscoping"). Without a refresh
    /// token it goes through authorization with the challenged scopes, and the call succeeds.
    #[must_use]
    pub fn refresh_tokens(mut self, enabled: bool) -> Self {
        self.refresh_tokens = enabled;
        self
    }

    /// The Wacht deployment the issued tokens belong to.
    #[must_use]
    pub fn deployment_id(mut self, id: i64) -> Self {
        self.deployment_id = id;
        self
    }

    /// The end user who consents (the tokens' owner).
    #[must_use]
    pub fn owner_user_id(mut self, id: i64) -> Self {
        self.owner_user_id = id;
        self
    }

    /// Listen on this port of `127.0.0.1` instead of a free one (default `0`: any free port).
    /// A fixed port keeps the issuer URL stable across restarts (clients remember their
    /// authorization server by it); registrations, codes and tokens live in memory only and
    /// end with the issuer.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn consent_policies() {
        let requested = strings(&["projects:read", "projects:write"]);
        assert_eq!(ConsentPolicy::GrantAll.grant(&requested), Some(requested.clone()));
        assert_eq!(
            ConsentPolicy::only(["projects:read", "other"]).grant(&requested),
            Some(strings(&["projects:read"]))
        );
        assert_eq!(ConsentPolicy::only(["other"]).grant(&requested), Some(Vec::new()));
        assert_eq!(ConsentPolicy::Deny.grant(&requested), None);
    }
}
