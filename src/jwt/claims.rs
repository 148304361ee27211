//! The claims of a Wacht JWT access token: read strictly, then checked against the policy
//! (token use, lifetime, audience) and turned into the same [`Grant`] the gateway path
//! produces. Which clients and tenants are served is not a JWT rule: the verifier checks it
//! for every grant, whatever its source.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::Refusal;
use super::permissions::{ScopeDefinition, effective_permissions};
use crate::json::parse_strict;
use crate::principal::{Grant, ResourceUrn, StringSet, UserId, VerifiedBy};

/// Longest claim string accepted (ids, client ids; `scope` has its own bound).
const MAX_ID: usize = 256;
/// Longest `scope` accepted.
const MAX_SCOPE: usize = 4096;
/// Longest lifetime (`exp - iat`) accepted: Wacht's largest access-token ttl is 24 hours.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The claims of a token whose signature is not yet checked.
#[derive(Debug)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    sub: String,
    aud: Option<String>,
    exp: i64,
    iat: i64,
    nbf: Option<i64>,
    jti: String,
    client_id: String,
    scope: String,
    sid: Option<String>,
    token_use: Option<String>,
}

/// What the claims must satisfy besides the issuer.
#[derive(Debug, Default)]
pub(crate) struct ClaimPolicy {
    pub(crate) leeway: Duration,
    pub(crate) definitions: Vec<ScopeDefinition>,
}

impl ClaimPolicy {
    pub(crate) fn from_config(config: &super::JwtConfig) -> Self {
        ClaimPolicy {
            leeway: config.leeway,
            definitions: config.definitions.clone(),
        }
    }
}

impl Claims {
    /// Reads the payload: a JSON object without repeated keys, every claim Wacht always sets
    /// present with its type.
    pub(crate) fn parse(payload: &[u8]) -> Result<Claims, Refusal> {
        let Some(Value::Object(map)) = parse_strict(payload) else {
            return Err(Refusal::Malformed);
        };
        Ok(Claims {
            iss: string(&map, "iss", MAX_ID)?.ok_or(Refusal::Malformed)?,
            sub: string(&map, "sub", MAX_ID)?.ok_or(Refusal::Malformed)?,
            aud: match map.get("aud") {
                Some(Value::String(aud)) if aud.len() <= MAX_ID => Some(aud.clone()),
                // An array, an over-long or a missing audience is no Wacht tenant URN.
                _ => None,
            },
            exp: seconds(&map, "exp")?.ok_or(Refusal::Malformed)?,
            iat: seconds(&map, "iat")?.ok_or(Refusal::Malformed)?,
            nbf: seconds(&map, "nbf")?,
            jti: string(&map, "jti", MAX_ID)?.ok_or(Refusal::Malformed)?,
            client_id: string(&map, "client_id", MAX_ID)?.ok_or(Refusal::Malformed)?,
            scope: string(&map, "scope", MAX_SCOPE)?.ok_or(Refusal::Malformed)?,
            sid: string(&map, "sid", MAX_ID)?,
            token_use: string(&map, "token_use", MAX_ID)?,
        })
    }

    /// The time rules at `now`: not expired, not issued or valid only in the future, a
    /// lifetime of at most 24 hours. Checked before the signature too: a token that breaks
    /// them is refused whoever signed it, without looking for its key.
    pub(crate) fn check_times(&self, leeway: Duration, now: SystemTime) -> Result<(), Refusal> {
        let now = unix_seconds(now);
        let leeway = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        if now >= self.exp.saturating_add(leeway) {
            return Err(Refusal::Expired);
        }
        if self.iat > now.saturating_add(leeway) || self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(Refusal::NotYetValid);
        }
        let max_lifetime = i64::try_from(MAX_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        if self.exp.saturating_sub(self.iat) > max_lifetime {
            return Err(Refusal::LifetimeTooLong);
        }
        Ok(())
    }

    /// The latest moment, by this server's clock, at which the token can have been signed:
    /// its `iat` (whole seconds, so one more second), plus the leeway for the issuer's clock
    /// running behind this one. A key set fetched from then on holds the token's key, unless
    /// the issuer withdrew it. `None` if that moment cannot be represented.
    pub(crate) fn signed_by(&self, leeway: Duration) -> Option<SystemTime> {
        match u64::try_from(self.iat) {
            Ok(iat) => UNIX_EPOCH
                .checked_add(Duration::from_secs(iat.saturating_add(1)))?
                .checked_add(leeway),
            // Before 1970: any key set is later.
            Err(_) => Some(UNIX_EPOCH),
        }
    }

    /// Checks the claims of a token whose signature verified, at `now`, and builds its grant.
    pub(crate) fn into_grant(self, policy: &ClaimPolicy, now: SystemTime) -> Result<Grant, Refusal> {
        if self.token_use.as_deref() != Some("access_token") {
            // An id_token (no `token_use`) is signed by the same key: never an access token.
            return Err(Refusal::WrongTokenUse);
        }
        self.check_times(policy.leeway, now)?;
        let sub = canonical_id(&self.sub).ok_or(Refusal::Malformed)?;
        let resource = match self.aud.as_deref().map(ResourceUrn::parse) {
            Some(urn @ (ResourceUrn::Organization(_) | ResourceUrn::Workspace(_))) => urn,
            Some(ResourceUrn::User(user)) if user == sub => ResourceUrn::User(user),
            Some(ResourceUrn::User(_)) => return Err(Refusal::UserMismatch),
            _ => return Err(Refusal::WrongAudience),
        };
        if self.client_id.is_empty() {
            return Err(Refusal::Malformed);
        }
        let scopes: Vec<&str> = self.scope.split_ascii_whitespace().collect();
        let permissions = effective_permissions(&scopes, &resource, &policy.definitions);
        let expires_at = UNIX_EPOCH + Duration::from_secs(u64::try_from(self.exp).unwrap_or(0));
        let mut grant = Grant::new(self.client_id, expires_at);
        grant.scopes = StringSet::new(scopes);
        grant.permissions = permissions;
        grant.granted_resource = Some(resource);
        grant.issuer = Some(Arc::from(self.iss));
        grant.owner_user_id = Some(sub);
        grant.session_id = self.sid.map(Arc::from);
        grant.token_id = Some(Arc::from(self.jti));
        grant.verified_by = VerifiedBy::JwtSignature;
        Ok(grant)
    }
}

/// A string claim: absent is `None`, any other type or an over-long value is malformed.
fn string(map: &Map<String, Value>, name: &str, max: usize) -> Result<Option<String>, Refusal> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(_) => Err(Refusal::Malformed),
    }
}

/// A NumericDate claim in whole seconds (Wacht writes integers; a fraction is malformed).
fn seconds(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, Refusal> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(Refusal::Malformed),
        Some(_) => Err(Refusal::Malformed),
    }
}

/// A positive decimal id without sign or leading zero.
fn canonical_id(s: &str) -> Option<UserId> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    canonical.then(|| s.parse().ok().map(UserId)).flatten()
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_782_741_911;

    fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Result<Grant, Refusal> {
        let mut map = json!({
            "iss": "https://auth.example.com", "sub": "432119876543210241",
            "aud": "urn:wacht:organization:427001234567890561", "exp": NOW + 3600, "iat": NOW,
            "jti": "593812470098765432", "client_id": "oc_client", "scope": "openid projects:read",
            "sid": "590011223344556677", "token_use": "access_token"
        });
        if let Value::Object(m) = &mut map {
            edit(m);
        }
        let policy = ClaimPolicy {
            leeway: Duration::from_secs(30),
            ..ClaimPolicy::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(NOW as u64);
        Claims::parse(map.to_string().as_bytes())?.into_grant(&policy, now)
    }

    #[test]
    fn a_wacht_access_token_becomes_a_grant() {
        let grant = claims(|_| {}).unwrap();
        assert_eq!(grant.client_id.as_str(), "oc_client");
        assert_eq!(grant.owner_user_id, Some(UserId(432119876543210241)));
        assert_eq!(grant.scopes.iter().collect::<Vec<_>>(), ["openid", "projects:read"]);
        assert_eq!(grant.session_id.as_deref(), Some("590011223344556677"));
        assert_eq!(grant.token_id.as_deref(), Some("593812470098765432"));
        assert_eq!(grant.verified_by, VerifiedBy::JwtSignature);
        assert_eq!(grant.deployment_id, None);
        assert_eq!(grant.oauth_resource, None);
    }

    #[test]
    fn every_claim_rule_refuses() {
        type Edit = Box<dyn FnOnce(&mut Map<String, Value>)>;
        let cases: Vec<(Edit, Refusal)> = vec![
            (Box::new(|m| drop(m.remove("token_use"))), Refusal::WrongTokenUse),
            (
                Box::new(|m| drop(m.insert("token_use".into(), json!("id_token")))),
                Refusal::WrongTokenUse,
            ),
            (
                Box::new(|m| drop(m.insert("exp".into(), json!(NOW - 30)))),
                Refusal::Expired,
            ),
            (
                Box::new(|m| drop(m.insert("exp".into(), json!(NOW as f64 + 3600.5)))),
                Refusal::Malformed,
            ),
            (Box::new(|m| drop(m.remove("exp"))), Refusal::Malformed),
            (
                Box::new(|m| drop(m.insert("iat".into(), json!(NOW + 31)))),
                Refusal::NotYetValid,
            ),
            (
                Box::new(|m| drop(m.insert("nbf".into(), json!(NOW + 31)))),
                Refusal::NotYetValid,
            ),
            (
                Box::new(|m| {
                    m.insert("iat".into(), json!(NOW - 90_000));
                    m.insert("exp".into(), json!(NOW + 3600));
                }),
                Refusal::LifetimeTooLong,
            ),
            (
                Box::new(|m| drop(m.insert("aud".into(), json!("oc_client")))),
                Refusal::WrongAudience,
            ),
            (
                Box::new(|m| drop(m.insert("aud".into(), json!(["urn:wacht:organization:1"])))),
                Refusal::WrongAudience,
            ),
            (
                Box::new(|m| drop(m.insert("aud".into(), json!("urn:wacht:user:7")))),
                Refusal::UserMismatch,
            ),
            (
                Box::new(|m| drop(m.insert("sub".into(), json!("0012")))),
                Refusal::Malformed,
            ),
            (Box::new(|m| drop(m.insert("sid".into(), json!(5)))), Refusal::Malformed),
            (Box::new(|m| drop(m.remove("jti"))), Refusal::Malformed),
            (
                Box::new(|m| drop(m.insert("client_id".into(), json!("")))),
                Refusal::Malformed,
            ),
        ];
        for (edit, refusal) in cases {
            assert_eq!(claims(edit).map(|_| ()), Err(refusal));
        }
        // Within the leeway.
        assert!(claims(|m| drop(m.insert("exp".into(), json!(NOW - 29)))).is_ok());
        assert!(claims(|m| drop(m.insert("iat".into(), json!(NOW + 30)))).is_ok());
        assert!(claims(|m| drop(m.insert("aud".into(), json!("urn:wacht:user:432119876543210241")))).is_ok());
    }
}
