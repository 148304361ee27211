//! Invalidations by log position: what a replica has read from the change log that voids
//! shared answers stamped before it, kept while such an answer can still live.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::change::Target;
use crate::principal::Grant;
use crate::token::TokenHash;

/// Most void records kept; past it, older answers are voided wholesale (safe, costlier).
pub(crate) const MAX_VOIDS: usize = 65_536;

/// Invalidations by log position, kept while an answer stamped before them can still live.
#[derive(Debug)]
pub(crate) struct Voids {
    tokens: HashMap<TokenHash, u64>,
    clients: HashMap<String, u64>,
    /// Users, API keys, tenants and memberships.
    targets: HashMap<Target, u64>,
    /// Answers stamped below this are void (invalidate-all, a reset, or pruning past the
    /// bound).
    floor: u64,
    order: VecDeque<(Instant, u64, Subject)>,
    keep: Duration,
}

#[derive(Debug)]
enum Subject {
    Token(TokenHash),
    Client(String),
    Target(Target),
}

impl Voids {
    pub(crate) fn new(keep: Duration) -> Self {
        Voids {
            tokens: HashMap::new(),
            clients: HashMap::new(),
            targets: HashMap::new(),
            floor: 0,
            order: VecDeque::new(),
            keep,
        }
    }

    /// True if an answer stamped `stamp` for `hash` (and `grant`, for an approval; `None`
    /// for a rejection) is void.
    pub(crate) fn covers(&self, stamp: u64, hash: &TokenHash, grant: Option<&Grant>) -> bool {
        let after = |v: Option<&u64>| v.is_some_and(|v| stamp < *v);
        stamp < self.floor
            || after(self.tokens.get(hash))
            || grant.is_some_and(|grant| {
                after(self.clients.get(grant.client_id.as_str()))
                    || (!self.targets.is_empty()
                        && Target::of(grant)
                            .iter()
                            .flatten()
                            .any(|target| after(self.targets.get(target))))
            })
    }

    pub(crate) fn token(&mut self, hash: TokenHash, seq: u64, now: Instant) {
        self.prune(now);
        self.tokens.insert(hash, seq);
        self.order.push_back((now, seq, Subject::Token(hash)));
    }

    pub(crate) fn client(&mut self, client: &str, seq: u64, now: Instant) {
        self.prune(now);
        self.clients.insert(client.to_owned(), seq);
        self.order.push_back((now, seq, Subject::Client(client.to_owned())));
    }

    pub(crate) fn target(&mut self, target: Target, seq: u64, now: Instant) {
        self.prune(now);
        self.targets.insert(target, seq);
        self.order.push_back((now, seq, Subject::Target(target)));
    }

    pub(crate) fn all(&mut self, seq: u64) {
        self.reset(seq);
    }

    pub(crate) fn reset(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
        self.tokens.clear();
        self.clients.clear();
        self.targets.clear();
        self.order.clear();
    }

    /// Forgets records older than `keep`; past the bound, voids everything up to the oldest
    /// record dropped.
    fn prune(&mut self, now: Instant) {
        while let Some((at, seq, _)) = self.order.front() {
            let expired = now.duration_since(*at) >= self.keep;
            if !expired && self.order.len() < MAX_VOIDS {
                break;
            }
            if !expired {
                self.floor = self.floor.max(*seq);
            }
            let Some((_, seq, subject)) = self.order.pop_front() else {
                break;
            };
            // A later record of the same subject stays.
            match subject {
                Subject::Token(hash) => {
                    if self.tokens.get(&hash) == Some(&seq) {
                        self.tokens.remove(&hash);
                    }
                }
                Subject::Client(id) => {
                    if self.clients.get(&id) == Some(&seq) {
                        self.clients.remove(&id);
                    }
                }
                Subject::Target(target) => {
                    if self.targets.get(&target) == Some(&seq) {
                        self.targets.remove(&target);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_voids_are_forgotten_and_too_many_raise_the_floor() {
        let mut voids = Voids::new(Duration::from_millis(10));
        let t0 = Instant::now();
        let hash = TokenHash::of("oat_x");
        voids.token(hash, 5, t0);
        assert!(voids.covers(4, &hash, None));
        voids.client("c", 6, t0 + Duration::from_millis(20));
        assert!(!voids.covers(4, &hash, Some(&grant("d"))), "the token's record expired");
        let mut voids = Voids::new(Duration::from_secs(600));
        for seq in 0..(MAX_VOIDS as u64 + 10) {
            voids.client(&format!("c{seq}"), seq, t0);
        }
        assert!(voids.order.len() <= MAX_VOIDS);
        assert!(
            voids.covers(3, &hash, Some(&grant("unrelated"))),
            "pruned past the bound: void wholesale"
        );
    }

    fn grant(client: &str) -> Grant {
        Grant::new(client, std::time::SystemTime::now())
    }

    #[test]
    fn a_target_voids_the_answers_whose_grant_names_it() {
        use crate::principal::{ApiKeyId, ApiKeyIdentity, OrganizationId, ResourceUrn, UserId};
        let mut voids = Voids::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let hash = TokenHash::of("oat_x");
        let mut token = grant("c");
        token.owner_user_id = Some(UserId(42));
        let mut key = grant("app");
        let mut identity = ApiKeyIdentity::new(ApiKeyId(7), "k", "app");
        identity.organization_id = Some(OrganizationId(9));
        key.api_key = Some(std::sync::Arc::new(identity));
        let mut tenant = grant("c");
        tenant.granted_resource = Some(ResourceUrn::Organization(OrganizationId(9)));
        voids.target(Target::User(42), 10, t0);
        assert!(voids.covers(9, &hash, Some(&token)), "the user's token");
        assert!(!voids.covers(10, &hash, Some(&token)), "stamped after the invalidation");
        assert!(!voids.covers(9, &hash, Some(&key)), "another user's key");
        assert!(!voids.covers(9, &hash, None), "a rejection names no user");
        voids.target(Target::ApiKey(7), 11, t0);
        assert!(voids.covers(10, &hash, Some(&key)));
        voids.target(Target::Organization(9), 12, t0);
        assert!(voids.covers(11, &hash, Some(&key)), "a key acting for the tenant");
        assert!(voids.covers(11, &hash, Some(&tenant)), "a grant for the tenant");
        assert!(!voids.covers(11, &hash, Some(&token)), "a grant for no tenant");
    }
}
