//! [`Generations`]: which cached answers an invalidation has voided.
//!
//! Every gateway answer is stamped with the generation current when its gateway call
//! *started*. An invalidation (of one token, one client, every JWT decision, or everything)
//! takes the next generation and records what it voided; an answer is usable only if no invalidation that
//! covers it came after its stamp. The check is made on every read of a shared tier (moka,
//! the outage grace), so an answer that was in flight during an invalidation is never served
//! from a cache, however the insert and the invalidation interleave. The per-thread front
//! cache only holds entries tagged with the current generation, so every invalidation empties
//! it at once.
//!
//! Records are needed only while an answer stamped before them can still be cached or held by
//! a streamed response: they are dropped once older than the longest an entry lives (flight +
//! ttl + outage grace) and than a stream's recheck bound. A stream that was not polled for
//! longer than that cannot tell whether a dropped record covered it
//! ([`is_current_since`](Generations::is_current_since) says no). Past a bounded number of
//! records, an invalidation voids everything older instead (safe, only costlier).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::change::Target;
use crate::principal::{Principal, VerifiedBy};
use crate::token::TokenHash;

/// More records than this and an invalidation voids every older answer instead.
const MAX_RECORDS: usize = 65_536;

/// The invalidation generations of one verifier.
#[derive(Debug)]
pub(crate) struct Generations {
    current: AtomicU64,
    /// Answers stamped below this are void (`invalidate_all`, or too many records).
    floor: AtomicU64,
    /// Answers verified from a JWT signature stamped below this are void (a JWKS key was
    /// withdrawn); opaque tokens' answers are not.
    jwt_floor: AtomicU64,
    /// True while `records` may hold something: the common case takes no lock.
    has_records: AtomicBool,
    /// The newest generation among the records dropped so far (0: none).
    dropped: AtomicU64,
    records: Mutex<Records>,
    /// How long a record matters: the longest time from a gateway call's start to the end of
    /// the last cache entry made from its answer.
    keep: Duration,
}

#[derive(Debug, Default)]
struct Records {
    tokens: HashMap<TokenHash, Voided>,
    clients: HashMap<Arc<str>, Voided>,
    /// JWT sessions (`sid`) and token ids (`jti`) cut off on this server.
    sessions: HashMap<Arc<str>, Voided>,
    token_ids: HashMap<Arc<str>, Voided>,
    /// Users, API keys, tenants and memberships (`invalidate_user` and its kin).
    targets: HashMap<Target, Voided>,
    /// Every record in the order made (when, its generation, what), to drop expired ones from
    /// the front.
    order: VecDeque<(Instant, u64, Subject)>,
}

/// What a record voids.
#[derive(Debug)]
enum Subject {
    Token(TokenHash),
    Client(Arc<str>),
    Session(Arc<str>),
    TokenId(Arc<str>),
    Target(Target),
}

impl Records {
    fn clear(&mut self) {
        self.targets.clear();
        self.tokens.clear();
        self.clients.clear();
        self.sessions.clear();
        self.token_ids.clear();
        self.order.clear();
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Drops the records older than `keep` (a later record of the same subject stays), and
    /// returns the generation of the newest one dropped.
    fn prune(&mut self, now: Instant, keep: Duration) -> Option<u64> {
        let mut dropped = None;
        while let Some((at, _, _)) = self.order.front()
            && now.duration_since(*at) >= keep
        {
            let Some((at, generation, subject)) = self.order.pop_front() else {
                break;
            };
            dropped = Some(generation);
            match subject {
                Subject::Token(hash) => {
                    if self.tokens.get(&hash).is_some_and(|v| v.at == at) {
                        self.tokens.remove(&hash);
                    }
                }
                Subject::Client(id) => remove_if_at(&mut self.clients, &id, at),
                Subject::Session(id) => remove_if_at(&mut self.sessions, &id, at),
                Subject::TokenId(id) => remove_if_at(&mut self.token_ids, &id, at),
                Subject::Target(target) => {
                    if self.targets.get(&target).is_some_and(|v| v.at == at) {
                        self.targets.remove(&target);
                    }
                }
            }
        }
        dropped
    }
}

/// Drops `id`'s record if it is the one made at `at` (not a later one).
fn remove_if_at(records: &mut HashMap<Arc<str>, Voided>, id: &Arc<str>, at: Instant) {
    if records.get(id).is_some_and(|v| v.at == at) {
        records.remove(id);
    }
}

/// One invalidation: answers stamped below `generation` are void.
#[derive(Debug, Clone, Copy)]
struct Voided {
    generation: u64,
    at: Instant,
}

impl Generations {
    /// `keep`: see the field.
    pub(crate) fn new(keep: Duration) -> Self {
        Generations {
            current: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            jwt_floor: AtomicU64::new(0),
            has_records: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            records: Mutex::new(Records::default()),
            keep,
        }
    }

    /// The current generation. Read it *before* checking an answer with
    /// [`is_current`](Self::is_current) and tag front-cache entries with it: an invalidation
    /// after the read moves the generation on, so the tag stops matching.
    pub(crate) fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// True unless an invalidation of this token, of its client, session or token id, of a
    /// user, API key, tenant or membership its grant names ([`Target::of`]), of every JWT
    /// decision (for a JWT's answer), or of everything came after `stamp` (the
    /// generation when the answer's verification started).
    pub(crate) fn is_current(&self, hash: &TokenHash, principal: &Principal, stamp: u64) -> bool {
        if stamp < self.floor.load(Ordering::Acquire) {
            return false;
        }
        if stamp < self.jwt_floor.load(Ordering::Acquire) && principal.verified_by() == VerifiedBy::JwtSignature {
            return false;
        }
        if !self.has_records.load(Ordering::Acquire) {
            return true;
        }
        let records = self.lock();
        let voids = |v: Option<&Voided>| v.is_some_and(|v| v.generation > stamp);
        let grant = principal.grant();
        let by_id = |map: &HashMap<Arc<str>, Voided>, id: Option<&Arc<str>>| {
            !map.is_empty() && voids(id.and_then(|id| map.get(id)))
        };
        let by_target = || {
            !records.targets.is_empty()
                && Target::of(grant)
                    .iter()
                    .flatten()
                    .any(|target| voids(records.targets.get(target)))
        };
        !(voids(records.tokens.get(hash))
            || voids(records.clients.get(grant.client_id.as_str()))
            || by_id(&records.sessions, grant.session_id.as_ref())
            || by_id(&records.token_ids, grant.token_id.as_ref())
            || by_target())
    }

    /// [`is_current`](Self::is_current) for an answer held since `stamp` by a streamed
    /// response, and false as well when a record made after `stamp` has already been dropped:
    /// the stream cannot tell whether it covered its answer.
    pub(crate) fn is_current_since(&self, hash: &TokenHash, principal: &Principal, stamp: u64) -> bool {
        self.dropped.load(Ordering::Acquire) <= stamp && self.is_current(hash, principal, stamp)
    }

    /// Voids every answer for this token obtained so far.
    pub(crate) fn invalidate_token(&self, hash: TokenHash) {
        self.record(|records, voided| {
            records.tokens.insert(hash, voided);
            Subject::Token(hash)
        });
    }

    /// Voids every answer for this client's tokens obtained so far.
    pub(crate) fn invalidate_client(&self, client_id: &str) {
        self.record(|records, voided| {
            let id: Arc<str> = Arc::from(client_id);
            records.clients.insert(Arc::clone(&id), voided);
            Subject::Client(id)
        });
    }

    /// Voids every answer for this JWT session's tokens obtained so far.
    pub(crate) fn invalidate_session(&self, session_id: &str) {
        self.record(|records, voided| {
            let id: Arc<str> = Arc::from(session_id);
            records.sessions.insert(Arc::clone(&id), voided);
            Subject::Session(id)
        });
    }

    /// Voids every answer for the JWT with this token id obtained so far.
    pub(crate) fn invalidate_token_id(&self, token_id: &str) {
        self.record(|records, voided| {
            let id: Arc<str> = Arc::from(token_id);
            records.token_ids.insert(Arc::clone(&id), voided);
            Subject::TokenId(id)
        });
    }

    /// Voids every answer whose grant names `target` obtained so far.
    pub(crate) fn invalidate_target(&self, target: Target) {
        self.record(|records, voided| {
            records.targets.insert(target, voided);
            Subject::Target(target)
        });
    }

    /// Voids every answer verified from a JWT signature so far; opaque tokens' answers stay.
    pub(crate) fn invalidate_jwt(&self) {
        // Under the lock, like every move of the generation; the floor before the generation:
        // a reader that sees the new generation sees the floor.
        let _records = self.lock();
        let next = self.current.load(Ordering::Acquire) + 1;
        self.jwt_floor.store(next, Ordering::Release);
        self.current.store(next, Ordering::Release);
    }

    /// Voids every answer obtained so far.
    pub(crate) fn invalidate_all(&self) {
        let mut records = self.lock();
        let next = self.current.load(Ordering::Acquire) + 1;
        self.floor.store(next, Ordering::Release);
        records.clear();
        self.has_records.store(false, Ordering::Release);
        self.current.store(next, Ordering::Release);
    }

    /// Takes the next generation and records what it voids, all under the lock: a reader
    /// that sees the new generation sees the record.
    fn record(&self, insert: impl FnOnce(&mut Records, Voided) -> Subject) {
        let mut records = self.lock();
        let now = Instant::now();
        let next = self.current.load(Ordering::Acquire) + 1;
        if let Some(dropped) = records.prune(now, self.keep) {
            self.dropped.fetch_max(dropped, Ordering::AcqRel);
        }
        if records.order.len() >= MAX_RECORDS {
            // Too many to track one by one: void everything older instead.
            self.floor.store(next, Ordering::Release);
            records.clear();
        } else {
            let subject = insert(
                &mut records,
                Voided {
                    generation: next,
                    at: now,
                },
            );
            records.order.push_back((now, next, subject));
        }
        self.has_records.store(!records.is_empty(), Ordering::Release);
        self.current.store(next, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Grant;
    use std::time::SystemTime;

    fn of(client_id: &str) -> Principal {
        Principal::from_grant(Grant::new(client_id, SystemTime::now()))
    }

    #[test]
    fn an_invalidation_voids_only_what_it_covers_and_only_older_answers() {
        let (oc_1, oc_2) = (&of("oc_1"), &of("oc_2"));
        let g = Generations::new(Duration::from_secs(60));
        let (a, b) = (TokenHash::of("oat_a"), TokenHash::of("oat_b"));
        let before = g.current();
        g.invalidate_token(a);
        assert!(
            !g.is_current(&a, oc_1, before),
            "answer in flight during the invalidation"
        );
        assert!(g.is_current(&b, oc_1, before), "another token");
        assert!(g.is_current(&a, oc_1, g.current()), "asked after the invalidation");
        let before = g.current();
        g.invalidate_client("oc_1");
        assert!(!g.is_current(&b, oc_1, before));
        assert!(g.is_current(&b, oc_2, before));
        let before = g.current();
        g.invalidate_all();
        assert!(!g.is_current(&b, oc_2, before));
        assert!(g.is_current(&b, oc_2, g.current()));

        let mut grant = Grant::new("oc_1", SystemTime::now());
        grant.session_id = Some("sid_1".into());
        grant.token_id = Some("jti_1".into());
        let jwt = Principal::from_grant(grant);
        let before = g.current();
        g.invalidate_session("sid_2");
        assert!(g.is_current(&a, &jwt, before), "another session");
        g.invalidate_session("sid_1");
        assert!(!g.is_current(&a, &jwt, before));
        let before = g.current();
        g.invalidate_token_id("jti_1");
        assert!(!g.is_current(&a, &jwt, before));
        assert!(g.is_current(&a, oc_1, before), "no token id");
    }

    #[test]
    fn a_target_voids_only_the_answers_whose_grant_names_it() {
        use crate::principal::{ApiKeyId, ApiKeyIdentity, MembershipId, ResourceUrn, UserId, WorkspaceId};
        let g = Generations::new(Duration::from_secs(60));
        let hash = TokenHash::of("oat_a");
        let mut grant = Grant::new("oc_1", SystemTime::now());
        grant.owner_user_id = Some(UserId(42));
        let token = Principal::from_grant(grant);
        let mut grant = Grant::new("billing", SystemTime::now());
        grant.owner_user_id = Some(UserId(42));
        let mut key = ApiKeyIdentity::new(ApiKeyId(7), "export", "billing");
        key.workspace_id = Some(WorkspaceId(5));
        key.workspace_membership_id = Some(MembershipId(77));
        grant.api_key = Some(Arc::new(key));
        let api_key = Principal::from_grant(grant);
        let mut grant = Grant::new("oc_1", SystemTime::now());
        grant.granted_resource = Some(ResourceUrn::User(UserId(43)));
        let own_data = Principal::from_grant(grant);

        let before = g.current();
        g.invalidate_target(Target::User(41));
        assert!(g.is_current(&hash, &token, before), "another user");
        g.invalidate_target(Target::User(42));
        assert!(!g.is_current(&hash, &token, before), "the user's token");
        assert!(!g.is_current(&hash, &api_key, before), "the user's API key");
        assert!(g.is_current(&hash, &own_data, before), "a token of another user");
        assert!(g.is_current(&hash, &token, g.current()), "asked after");
        let before = g.current();
        g.invalidate_target(Target::User(43));
        assert!(
            !g.is_current(&hash, &own_data, before),
            "granted for the user's own data"
        );
        let before = g.current();
        g.invalidate_target(Target::ApiKey(8));
        assert!(g.is_current(&hash, &api_key, before), "another key");
        g.invalidate_target(Target::ApiKey(7));
        assert!(!g.is_current(&hash, &api_key, before));
        assert!(g.is_current(&hash, &token, before), "a token is no key");
        for target in [Target::Workspace(5), Target::WorkspaceMembership(77)] {
            let before = g.current();
            g.invalidate_target(target);
            assert!(!g.is_current(&hash, &api_key, before), "{target:?}");
            assert!(g.is_current(&hash, &token, before), "{target:?}");
        }
    }

    #[test]
    fn a_jwt_invalidation_voids_only_older_jwt_answers() {
        let g = Generations::new(Duration::from_secs(60));
        let hash = TokenHash::of("oat_a");
        let opaque = of("oc_1");
        let mut grant = Grant::new("oc_1", SystemTime::now());
        grant.verified_by = VerifiedBy::JwtSignature;
        let jwt = Principal::from_grant(grant);
        let before = g.current();
        g.invalidate_jwt();
        assert!(g.current() > before, "the front cache's generation moves");
        assert!(!g.is_current(&hash, &jwt, before), "a JWT answer from before");
        assert!(
            g.is_current(&hash, &opaque, before),
            "an opaque token's answer from before"
        );
        assert!(g.is_current(&hash, &jwt, g.current()), "a JWT answer from after");
    }

    #[test]
    fn a_stream_that_missed_a_dropped_record_is_not_current() {
        let (oc_1, a) = (&of("oc_1"), TokenHash::of("oat_a"));
        let g = Generations::new(Duration::ZERO);
        let before = g.current();
        // A record about someone else, then another that drops it (it is older than `keep`).
        g.invalidate_client("oc_2");
        let checked = g.current();
        g.invalidate_client("oc_3");
        assert!(
            g.is_current(&a, oc_1, before),
            "a cached answer: the dropped record never covered it"
        );
        assert!(
            !g.is_current_since(&a, oc_1, before),
            "a stream that did not check since before the dropped record cannot tell"
        );
        assert!(g.is_current_since(&a, oc_1, checked), "it checked after that record");
    }

    #[test]
    fn records_expire_and_too_many_void_everything_older() {
        let g = Generations::new(Duration::ZERO);
        let before = g.current();
        g.invalidate_token(TokenHash::of("oat_a"));
        // The next record prunes the expired one.
        g.invalidate_token(TokenHash::of("oat_b"));
        assert_eq!(g.lock().tokens.len(), 1);

        let g = Generations::new(Duration::from_secs(60));
        for i in 0..=MAX_RECORDS {
            g.invalidate_token(TokenHash::of(&format!("oat_{i}")));
        }
        assert!(!g.is_current(&TokenHash::of("oat_unrelated"), &of("oc_1"), before));
        assert!(g.lock().tokens.len() < MAX_RECORDS);
    }
}
