//! A verdict → a cache entry or a refusal, in one place: the gateway's decision and the pins
//! (deployment, issuer, audience: the gateway checks none of them), or a JWT's verification
//! (which checked its own issuer and audience); then, for every grant whatever its source, the
//! allow lists (client, tenant) and the deny lists (the client deny list here, the session
//! and token-id denials in [`revoked`](super::revoked)). A grant enters the cache (and so the
//! outage grace) only through here: a cache hit pays for none of these checks.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::Url;

use super::Verifier;
use super::source::Verdict;
use crate::cache::Entry;
use crate::config::PinSettings;
use crate::gateway::{Decision, GatewayError};
use crate::jwt::{JwtFailure, Unavailable};
use crate::principal::{DeploymentId, Grant, ResourceUrn};
use crate::rate_limit::Usage;
use crate::reject::{AuthError, InvalidTokenReason};
use crate::telemetry;
use crate::token::TokenHash;

/// What a gateway answer teaches the meters (see [`Verifier::decide`]).
#[derive(Default)]
pub(super) struct Learn<'a> {
    /// The request the gateway answered about; `None` for a copy of the fleet's shared tier.
    pub(super) ctx: Option<&'a super::miss::MissContext>,
    /// The credential's meters, when the caller holds them.
    pub(super) meters: Option<Arc<crate::rate_limit::RouteMeters>>,
}

/// Used when the gateway rate-limits without saying for how long.
const DEFAULT_RATE_LIMIT_RETRY: Duration = Duration::from_secs(60);

impl Verifier {
    /// The entry to cache for a verdict, or the refusal to share with every waiting request.
    /// Refusals for good (the gateway's 401, a pin, a denied client) are remembered.
    ///
    /// A gateway answer is metered (see [`rate_limit`](crate::rate_limit)): `learn.ctx` is
    /// the request it answered (`None` for a copy of the fleet's shared tier, which reports no
    /// rate limits), `learn.meters` the credential's meters when known.
    pub(super) async fn decide(
        &self,
        verdict: Verdict,
        hash: TokenHash,
        stamp: u64,
        learn: Learn<'_>,
    ) -> Result<Entry, AuthError> {
        let gateway = matches!(verdict, Verdict::Gateway { .. });
        let (mut grant, cap, graceful) = match verdict {
            Verdict::Gateway {
                decision,
                cap,
                graceful,
            } => (self.gateway_grant(decision, hash, learn.ctx).await?, cap, graceful),
            Verdict::Jwt(Ok(verified)) => {
                // The entry ends when the key set that verified it may no longer be trusted (a
                // cap only when that comes before the ttl: it also turns refresh-ahead off).
                let cap = (verified.keys_valid_for < self.cache.ttl()).then_some(verified.keys_valid_for);
                (Box::new(verified.grant), cap, true)
            }
            Verdict::Jwt(Err(JwtFailure::Refused(refusal))) => {
                tracing::info!(reason = refusal.label(), "JWT access token refused");
                return Err(self.reject(hash, refusal.reason()).await);
            }
            // Nothing is remembered: the same token may verify once a fetch succeeds.
            Verdict::Jwt(Err(JwtFailure::Unavailable(why))) => {
                return Err(match why {
                    Unavailable::NoKeySet => {
                        tracing::warn!("no JWKS could be loaded for the token's issuer; failing closed");
                        self.unavailable()
                    }
                    // Logged at error level by the key set, once per set and per failed fetch.
                    Unavailable::KeySetExpired => {
                        tracing::debug!("the issuer's key set is past jwks_max_stale; failing closed");
                        self.unavailable()
                    }
                    Unavailable::KeyNotFetched { retry_after } => {
                        tracing::debug!(
                            "JWT names a kid no key set fetched since its iat holds; 503 until the next fetch"
                        );
                        AuthError::Unavailable {
                            retry_after: retry_after.unwrap_or(self.settings.unavailable_retry_after),
                        }
                    }
                });
            }
        };
        // Every grant, whatever its source (the gateway, the fleet's shared tier, a JWT): the
        // same grant gets the same answer whatever its format.
        if let Err(reason) = self.pins.admits(&grant) {
            tracing::info!(
                client_id = grant.client_id.as_str(),
                reason = reason.label(),
                "token refused by the allow lists"
            );
            telemetry::foreign_failure(reason.label());
            return Err(self.reject(hash, reason).await);
        }
        if self.is_denied(grant.client_id.as_str()) {
            tracing::info!(
                client_id = grant.client_id.as_str(),
                "token of a denied OAuth client rejected"
            );
            telemetry::failure(grant.client_id.as_str(), "denied_client");
            return Err(self.reject(hash, InvalidTokenReason::DeniedClient).await);
        }
        if self.revoked.covers(&grant) {
            tracing::info!(
                client_id = grant.client_id.as_str(),
                "JWT of a denied session or token id rejected"
            );
            telemetry::failure(grant.client_id.as_str(), "revoked");
            return Err(self.reject(hash, InvalidTokenReason::Revoked).await);
        }
        let limits = std::mem::take(&mut grant.rate_limits);
        // A budget this answer shows spent is the request's business (see `meter_miss`): the
        // entry is cached either way, so that the next requests are refused here, not asked
        // again.
        let meters = if gateway {
            self.learn_rates(&grant, &hash, learn.ctx, &limits, learn.meters)
        } else {
            None
        };
        let mut entry = self.cache.entry(
            *grant,
            Arc::clone(&self.challenge),
            Arc::clone(&self.hierarchy),
            stamp,
            cap,
            graceful,
        );
        entry.meters = meters;
        Ok(entry)
    }

    /// The grant of a gateway decision that passes the pins, or the refusal.
    async fn gateway_grant(
        &self,
        decision: Result<Decision, GatewayError>,
        hash: TokenHash,
        ctx: Option<&super::miss::MissContext>,
    ) -> Result<Box<Grant>, AuthError> {
        let grant = match decision {
            Ok(Decision::Allowed(grant)) => grant,
            Ok(Decision::InvalidToken) => return Err(self.reject(hash, InvalidTokenReason::Rejected).await),
            Ok(Decision::PermissionDenied) => {
                return Err(AuthError::InsufficientScope {
                    required: Vec::new(),
                    granted: Vec::new(),
                });
            }
            Ok(Decision::RateLimited {
                retry_after,
                blocked_rule,
                rate_limits,
                ..
            }) => {
                let retry_after = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_RETRY);
                // The gateway says a budget is spent: the token's meters on this route hold
                // it too, so its cached hits are refused as well; and the response names the
                // rule, even on a route (or for a token) the meters have not seen.
                self.spent_at_gateway(&hash, ctx, retry_after, blocked_rule.as_deref());
                if self.metering.is_some()
                    && let Some(ctx) = ctx
                    && let Some(budget) = Usage::refused_by_gateway(blocked_rule.as_deref(), &rate_limits, retry_after)
                {
                    let _ = ctx.notes.gateway_budget.set(budget);
                }
                return Err(AuthError::RateLimited { retry_after });
            }
            Err(error) => {
                tracing::warn!(error = %error, kind = error.kind(), "gateway unavailable; failing closed");
                return Err(self.unavailable());
            }
        };
        if let Err(reason) = self.pins.check(&grant) {
            tracing::info!(
                client_id = grant.client_id.as_str(),
                reason = reason.label(),
                "token rejected by pinning"
            );
            telemetry::foreign_failure("pinning");
            return Err(self.reject(hash, reason).await);
        }
        Ok(grant)
    }

    async fn reject(&self, hash: TokenHash, reason: InvalidTokenReason) -> AuthError {
        self.cache.remember_rejection(hash, reason).await;
        AuthError::InvalidToken(reason)
    }
}

/// What a token must match besides being valid: the pins (checked on gateway grants; a JWT's
/// verifier checks its own issuer and audience) and the allow lists (checked on every grant).
#[derive(Debug)]
pub(super) struct Pins {
    deployment_id: Option<DeploymentId>,
    issuer: Option<String>,
    audience: Option<Url>,
    /// The OAuth clients served; empty: any.
    clients: HashSet<Box<str>>,
    /// The tenants served; empty: any.
    tenants: HashSet<ResourceUrn>,
}

impl Pins {
    pub(super) fn new(settings: &PinSettings) -> Self {
        Pins {
            deployment_id: settings.expected_deployment_id,
            issuer: settings.expected_issuer.clone(),
            // Validated by the builder: a configured audience always parses.
            audience: settings.expected_audience.as_deref().and_then(|a| Url::parse(a).ok()),
            clients: settings.allowed_clients.iter().map(|c| Box::from(c.as_str())).collect(),
            // Validated by the builder: every configured tenant is a tenant URN.
            tenants: settings
                .accepted_tenants
                .iter()
                .map(|t| ResourceUrn::parse(t))
                .collect(),
        }
    }

    /// `Ok` when the grant's client and tenant are served here (each list, when not empty,
    /// names them). A grant that names no tenant is refused once tenants are listed.
    pub(super) fn admits(&self, grant: &Grant) -> Result<(), InvalidTokenReason> {
        if !self.clients.is_empty() && !self.clients.contains(grant.client_id.as_str()) {
            return Err(InvalidTokenReason::ClientNotAllowed);
        }
        if !self.tenants.is_empty()
            && !grant
                .granted_resource
                .as_ref()
                .is_some_and(|tenant| self.tenants.contains(tenant))
        {
            return Err(InvalidTokenReason::TenantNotAccepted);
        }
        Ok(())
    }

    /// `Ok` when the grant matches every configured pin.
    pub(super) fn check(&self, grant: &Grant) -> Result<(), InvalidTokenReason> {
        if let Some(expected) = self.deployment_id
            && grant.deployment_id != Some(expected)
        {
            return Err(InvalidTokenReason::WrongDeployment);
        }
        if grant.api_key.is_some() {
            // A key has no issuer or audience: its deployment is its pin (required by the
            // builder when keys are accepted). Routes that must take OAuth tokens only say so
            // (`WachtAuthLayer::oauth_only`).
            return Ok(());
        }
        if let Some(expected) = &self.issuer
            && !grant.issuer.as_deref().is_some_and(|iss| same_url(iss, expected))
        {
            return Err(InvalidTokenReason::WrongIssuer);
        }
        if let Some(expected) = &self.audience {
            let matches = grant
                .oauth_resource
                .as_deref()
                .and_then(|aud| Url::parse(aud).ok())
                .is_some_and(|aud| same_resource(&aud, expected));
            if !matches {
                return Err(InvalidTokenReason::WrongAudience);
            }
        }
        Ok(())
    }
}

/// OAuth client ids refused even when the gateway allows their tokens: those configured
/// (permanent), and those denied at run time here or by another replica of the fleet.
#[derive(Debug, Default)]
pub(super) struct DenyList {
    configured: HashSet<Arc<str>>,
    runtime: RwLock<HashSet<Arc<str>>>,
}

impl DenyList {
    pub(super) fn new(clients: &[String]) -> Self {
        DenyList {
            configured: clients.iter().map(|c| Arc::from(c.as_str())).collect(),
            runtime: RwLock::default(),
        }
    }

    pub(super) fn contains(&self, client_id: &str) -> bool {
        if self.configured.contains(client_id) {
            return true;
        }
        let runtime = self.runtime.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        !runtime.is_empty() && runtime.contains(client_id)
    }

    /// Adds a run-time denial (here, or from the fleet).
    pub(super) fn insert(&self, client_id: &str) {
        self.runtime
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(Arc::from(client_id));
    }

    /// True if the configuration denies the client (for good).
    pub(super) fn is_configured(&self, client_id: &str) -> bool {
        self.configured.contains(client_id)
    }

    /// Lifts a run-time denial (configured ones stay); true if there was one.
    pub(super) fn remove(&self, client_id: &str) -> bool {
        self.runtime
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(client_id)
    }

    /// The ids, sorted.
    pub(super) fn list(&self) -> Vec<String> {
        let runtime = self.runtime.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ids: Vec<String> = self
            .configured
            .iter()
            .chain(runtime.iter())
            .map(|c| c.to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

fn same_url(a: &str, b: &str) -> bool {
    match (Url::parse(a), Url::parse(b)) {
        (Ok(a), Ok(b)) => same_resource(&a, &b),
        _ => a == b,
    }
}

/// Resource identifiers compare exactly, except that scheme and host are case-insensitive
/// (`Url` lower-cases them) and an empty path equals `/`.
fn same_resource(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        && a.query() == b.query()
        && a.username() == b.username()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WachtAuthConfig;
    use crate::gateway::{CheckRequest, Gateway, GatewayError};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    /// Allows every token, for a grant issued to another resource.
    struct ForeignAudience(Arc<AtomicUsize>);

    impl Gateway for ForeignAudience {
        fn check<'a>(
            &'a self,
            _request: CheckRequest<'a>,
        ) -> futures_util::future::BoxFuture<'a, Result<Decision, GatewayError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                let mut grant = Grant::new("oc_foreign", SystemTime::now() + Duration::from_secs(3600));
                grant.oauth_resource = Some("https://other.example.com/mcp".into());
                grant.deployment_id = Some(DeploymentId(1));
                Ok(Decision::Allowed(Box::new(grant)))
            })
        }
    }

    #[tokio::test]
    async fn negative_cache_repeats_the_original_reason() {
        let config = WachtAuthConfig::builder()
            .expected_deployment_id(1)
            .expected_audience("https://api.example.com/mcp")
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let verifier = Verifier::with_gateway(&config, ForeignAudience(Arc::clone(&calls))).unwrap();
        for _ in 0..3 {
            assert_eq!(
                verifier.verify("oat_token").await.unwrap_err(),
                AuthError::InvalidToken(InvalidTokenReason::WrongAudience)
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "repeats come from the negative cache");
    }

    #[test]
    fn resource_comparison_is_canonical_but_strict() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_resource(
            &u("HTTPS://API.example.com/mcp"),
            &u("https://api.example.com/mcp")
        ));
        assert!(same_resource(
            &u("https://api.example.com"),
            &u("https://api.example.com/")
        ));
        assert!(same_resource(
            &u("https://api.example.com:443/mcp"),
            &u("https://api.example.com/mcp")
        ));
        assert!(!same_resource(
            &u("https://api.example.com/mcp"),
            &u("https://api.example.com/other")
        ));
        assert!(!same_resource(
            &u("https://api.example.com/MCP"),
            &u("https://api.example.com/mcp")
        ));
        assert!(!same_resource(
            &u("https://evil.example.com/mcp"),
            &u("https://api.example.com/mcp")
        ));
        assert!(!same_resource(
            &u("http://api.example.com/mcp"),
            &u("https://api.example.com/mcp")
        ));
    }
}
