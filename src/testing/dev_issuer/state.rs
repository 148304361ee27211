//! What the issuer remembers (clients, codes, refresh-token families, what it issued) and the
//! grant logic that runs under its lock. Credentials are kept only as their SHA-256.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::super::FakeGateway;
use super::super::ids::{generate_client_id, generate_secret, generate_token, hash_token};
use super::super::model::{EXAMPLE_CLIENT_KEY_ID, TokenGrant};
use super::config::{ConsentPolicy, DevIssuerConfig};
use super::model::{ClientKind, GrantType, IssuedToken, RegisteredClient};
use super::params::s256;

/// How long a used or expired authorization code is remembered, so that its replay is
/// recognised (and the tokens issued for it revoked) rather than merely refused.
const USED_CODE_MEMORY: Duration = Duration::from_secs(600);

/// An OAuth error answer: the RFC 6749 `error` code and a description that never contains a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OAuthError {
    pub(super) code: &'static str,
    pub(super) description: String,
}

impl OAuthError {
    pub(super) fn new(code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
        }
    }

    pub(super) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub(super) fn invalid_client(description: impl Into<String>) -> Self {
        Self::new("invalid_client", description)
    }

    pub(super) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    pub(super) fn invalid_target(description: impl Into<String>) -> Self {
        Self::new("invalid_target", description)
    }
}

/// A client with what authenticates it.
#[derive(Debug, Clone)]
pub(super) struct Client {
    pub(super) info: RegisteredClient,
    /// SHA-256 of the client secret of a confidential client.
    secret_sha256: Option<String>,
    /// The internal numeric id the gateway answers as `identity.key_id`.
    key_id: i64,
}

impl Client {
    fn refresh_allowed(&self) -> bool {
        self.info.grant_types.iter().any(|g| g == "refresh_token")
    }

    /// Whether `secret` is this client's secret (a public client has none).
    pub(super) fn secret_matches(&self, secret: &str) -> bool {
        self.secret_sha256.as_deref() == Some(hash_token(secret).as_str())
    }

    pub(super) fn is_public(&self) -> bool {
        self.secret_sha256.is_none()
    }
}

/// What the consent approved, waiting for its code to be exchanged.
#[derive(Debug)]
pub(super) struct Approval {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) resource: String,
    pub(super) requested_scopes: Vec<String>,
    pub(super) scopes: Vec<String>,
}

#[derive(Debug)]
enum CodeSlot {
    Fresh {
        approval: Approval,
        expires_at: Instant,
    },
    /// Exchanged (or expired, or refused): the family its tokens belong to, if any.
    Used {
        family: Option<usize>,
        forget_at: Instant,
    },
}

/// The tokens descending from one authorization code.
#[derive(Debug)]
struct Family {
    client_id: String,
    scopes: Vec<String>,
    resource: String,
    access_sha256: Vec<String>,
    revoked: bool,
}

#[derive(Debug)]
struct RefreshSlot {
    family: usize,
    /// False once redeemed: the token was rotated.
    active: bool,
    expires_at: Instant,
}

/// A successful token request: what the token endpoint answers.
#[derive(Debug)]
pub(super) struct TokenAnswer {
    pub(super) access_token: String,
    pub(super) refresh_token: Option<String>,
    pub(super) expires_in: u64,
    pub(super) scopes: Vec<String>,
}

/// The token request's parameters, checked for presence by the endpoint.
#[derive(Debug)]
pub(super) struct CodeExchange<'a> {
    pub(super) code: &'a str,
    pub(super) redirect_uri: Option<&'a str>,
    pub(super) code_verifier: Option<&'a str>,
    pub(super) resource: Option<&'a str>,
}

/// Everything the issuer knows; guarded by one mutex, never held across an await.
#[derive(Debug)]
pub(super) struct State {
    pub(super) consent: ConsentPolicy,
    clients: HashMap<String, Client>,
    codes: HashMap<String, CodeSlot>,
    refresh: HashMap<String, RefreshSlot>,
    families: Vec<Family>,
    pub(super) issued: Vec<IssuedToken>,
    pub(super) registrations: usize,
    pub(super) last_resource: Option<String>,
    next_key_id: i64,
}

/// What a token is issued with, besides the state.
pub(super) struct Issue<'a> {
    pub(super) config: &'a DevIssuerConfig,
    pub(super) issuer: &'a str,
    pub(super) gateway: &'a FakeGateway,
}

impl State {
    pub(super) fn new(consent: ConsentPolicy) -> Self {
        State {
            consent,
            clients: HashMap::new(),
            codes: HashMap::new(),
            refresh: HashMap::new(),
            families: Vec::new(),
            issued: Vec::new(),
            registrations: 0,
            last_resource: None,
            next_key_id: EXAMPLE_CLIENT_KEY_ID,
        }
    }

    /// Adds a client and returns its id and, for a confidential one, its secret.
    pub(super) fn add_client(
        &mut self,
        kind: ClientKind,
        redirect_uris: Vec<String>,
        token_endpoint_auth_method: &str,
        grant_types: Vec<String>,
    ) -> (String, Option<String>) {
        let client_id = generate_client_id();
        let secret = (token_endpoint_auth_method != "none").then(|| generate_secret("ocs_"));
        let info = RegisteredClient {
            client_id: client_id.clone(),
            kind,
            redirect_uris,
            token_endpoint_auth_method: token_endpoint_auth_method.to_owned(),
            grant_types,
        };
        self.insert_client(info, secret.as_deref().map(hash_token));
        if kind == ClientKind::Dynamic {
            self.registrations += 1;
        }
        (client_id, secret)
    }

    /// Records (or replaces) a metadata-document client as its document now reads.
    pub(super) fn put_document_client(&mut self, info: RegisteredClient) {
        match self.clients.get_mut(&info.client_id) {
            Some(existing) => existing.info = info,
            None => self.insert_client(info, None),
        }
    }

    fn insert_client(&mut self, info: RegisteredClient, secret_sha256: Option<String>) {
        self.next_key_id += 1;
        let client = Client {
            info,
            secret_sha256,
            key_id: self.next_key_id,
        };
        self.clients.insert(client.info.client_id.clone(), client);
    }

    pub(super) fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients.get(client_id)
    }

    pub(super) fn clients(&self) -> Vec<RegisteredClient> {
        let mut clients: Vec<_> = self.clients.values().map(|c| (c.key_id, c.info.clone())).collect();
        clients.sort_by_key(|(key, _)| *key);
        clients.into_iter().map(|(_, info)| info).collect()
    }

    /// Stores an approved authorization and returns its code.
    pub(super) fn issue_code(&mut self, approval: Approval, ttl: Duration) -> String {
        let now = Instant::now();
        self.codes.retain(|_, slot| match slot {
            CodeSlot::Fresh { expires_at, .. } => now < *expires_at + USED_CODE_MEMORY,
            CodeSlot::Used { forget_at, .. } => now < *forget_at,
        });
        let code = generate_secret("oac_");
        self.codes.insert(
            hash_token(&code),
            CodeSlot::Fresh {
                approval,
                expires_at: now + ttl,
            },
        );
        code
    }

    /// `grant_type=authorization_code` for the authenticated `client`. The code is used up by
    /// any attempt, successful or not; a code presented again revokes what it produced.
    pub(super) fn exchange_code(
        &mut self,
        client: &Client,
        request: &CodeExchange<'_>,
        issue: &Issue<'_>,
    ) -> Result<TokenAnswer, OAuthError> {
        let now = Instant::now();
        let hash = hash_token(request.code);
        let forget_at = now + USED_CODE_MEMORY;
        let slot = self.codes.insert(
            hash.clone(),
            CodeSlot::Used {
                family: None,
                forget_at,
            },
        );
        let approval = match slot {
            None => return Err(OAuthError::invalid_grant("unknown authorization code")),
            Some(CodeSlot::Used { family, .. }) => {
                // Put back what the code produced, so that a third use is recognised too.
                self.codes.insert(hash, CodeSlot::Used { family, forget_at });
                if let Some(family) = family {
                    self.revoke_family(family, issue.gateway);
                }
                return Err(OAuthError::invalid_grant(
                    "authorization code already used; the tokens issued for it are revoked",
                ));
            }
            Some(CodeSlot::Fresh { approval, expires_at }) => {
                if now >= expires_at {
                    return Err(OAuthError::invalid_grant("authorization code expired"));
                }
                approval
            }
        };
        if approval.client_id != client.info.client_id {
            return Err(OAuthError::invalid_grant("authorization code issued to another client"));
        }
        if request.redirect_uri != Some(approval.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the one of the authorization request",
            ));
        }
        let Some(verifier) = request.code_verifier else {
            return Err(OAuthError::invalid_request("code_verifier is required (PKCE)"));
        };
        if !super::params::is_valid_verifier(verifier) || s256(verifier) != approval.code_challenge {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        let Some(resource) = request.resource else {
            return Err(OAuthError::invalid_request("resource is required (RFC 8707)"));
        };
        if resource != approval.resource {
            return Err(OAuthError::invalid_target(
                "resource differs from the one of the authorization request",
            ));
        }
        let family = self.families.len();
        self.families.push(Family {
            client_id: client.info.client_id.clone(),
            scopes: approval.scopes.clone(),
            resource: approval.resource.clone(),
            access_sha256: Vec::new(),
            revoked: false,
        });
        self.codes.insert(
            hash,
            CodeSlot::Used {
                family: Some(family),
                forget_at,
            },
        );
        Ok(self.issue_tokens(
            client,
            family,
            approval.scopes,
            approval.requested_scopes,
            GrantType::AuthorizationCode,
            issue,
        ))
    }

    /// `grant_type=refresh_token` for the authenticated `client`: rotates the refresh token. A
    /// rotated one presented again revokes its whole family (RFC 9700 §4.14.2).
    pub(super) fn refresh(
        &mut self,
        client: &Client,
        refresh_token: &str,
        resource: &str,
        scope: Option<Vec<String>>,
        issue: &Issue<'_>,
    ) -> Result<TokenAnswer, OAuthError> {
        let now = Instant::now();
        self.refresh.retain(|_, slot| now < slot.expires_at);
        let hash = hash_token(refresh_token);
        let Some(slot) = self.refresh.get(&hash) else {
            return Err(OAuthError::invalid_grant("unknown or expired refresh token"));
        };
        let family_id = slot.family;
        let active = slot.active;
        let Some(family) = self.families.get(family_id) else {
            return Err(OAuthError::invalid_grant("unknown or expired refresh token"));
        };
        if family.client_id != client.info.client_id {
            return Err(OAuthError::invalid_grant("refresh token issued to another client"));
        }
        if family.revoked {
            return Err(OAuthError::invalid_grant("refresh token revoked"));
        }
        if !active {
            self.revoke_family(family_id, issue.gateway);
            return Err(OAuthError::invalid_grant(
                "refresh token already used (rotated); every token of this grant is revoked",
            ));
        }
        if resource != family.resource {
            return Err(OAuthError::invalid_target("resource differs from the one of the grant"));
        }
        let requested = scope.unwrap_or_else(|| family.scopes.clone());
        if let Some(extra) = requested.iter().find(|s| !family.scopes.contains(s)) {
            return Err(OAuthError::new(
                "invalid_scope",
                format!("scope `{extra}` was not granted to this refresh token"),
            ));
        }
        if let Some(slot) = self.refresh.get_mut(&hash) {
            slot.active = false;
        }
        Ok(self.issue_tokens(
            client,
            family_id,
            requested.clone(),
            requested,
            GrantType::RefreshToken,
            issue,
        ))
    }

    /// Mints an access token (registered in the gateway) and, if the client may refresh, a
    /// refresh token, both belonging to `family`.
    fn issue_tokens(
        &mut self,
        client: &Client,
        family: usize,
        scopes: Vec<String>,
        requested_scopes: Vec<String>,
        grant_type: GrantType,
        issue: &Issue<'_>,
    ) -> TokenAnswer {
        let config = issue.config;
        let resource = self
            .families
            .get(family)
            .map(|f| f.resource.clone())
            .unwrap_or_default();
        let access_token = generate_token();
        let access_sha256 = hash_token(&access_token);
        let expires_at = SystemTime::now() + config.access_token_ttl;
        issue.gateway.register(
            &access_token,
            TokenGrant::new(client.info.client_id.clone())
                .client_key_id(client.key_id)
                .deployment_id(config.deployment_id)
                .owner_user_id(config.owner_user_id)
                .issuer(issue.issuer)
                .scopes(scopes.iter().cloned())
                .granted_resource(config.granted_resource.clone())
                .oauth_resource(resource.clone())
                .expires_at(expires_at),
        );
        let refresh_token = (config.refresh_tokens && client.refresh_allowed()).then(|| {
            let token = generate_secret("ort_");
            self.refresh.insert(
                hash_token(&token),
                RefreshSlot {
                    family,
                    active: true,
                    expires_at: Instant::now() + config.refresh_token_ttl,
                },
            );
            token
        });
        if let Some(f) = self.families.get_mut(family) {
            f.access_sha256.push(access_sha256.clone());
        }
        self.issued.push(IssuedToken {
            token_sha256: access_sha256,
            client_id: client.info.client_id.clone(),
            scopes: scopes.clone(),
            requested_scopes,
            resource,
            granted_resource: config.granted_resource.clone(),
            grant_type,
            with_refresh_token: refresh_token.is_some(),
            expires_at,
        });
        TokenAnswer {
            access_token,
            refresh_token,
            expires_in: config.access_token_ttl.as_secs(),
            scopes,
        }
    }

    /// Revokes every access token of `family` in the gateway and every refresh token of it.
    fn revoke_family(&mut self, family: usize, gateway: &FakeGateway) {
        let Some(f) = self.families.get_mut(family) else {
            return;
        };
        f.revoked = true;
        for hash in &f.access_sha256 {
            gateway.revoke_sha256(hash);
        }
        self.refresh.retain(|_, slot| slot.family != family);
        tracing::debug!(client_id = %f.client_id, "dev issuer: grant revoked after a credential was replayed");
    }
}
