//! The decision cache: every tier that remembers a verdict, and the rules they keep.
//!
//! ```text
//! hit:   per-thread front ──miss──► shared moka (positive) ──miss──► the verifier's flight
//! miss:  negative (rejections) ─► single flight in moka ─► answer stamped with its generation
//! grace: outage grace (stale_if_error), read only when the gateway is unavailable
//! ```
//!
//! * [`front`]: a small per-thread table in front of moka for hot tokens.
//! * Positive cache (moka): SHA-256 of the token → [`Entry`], served until
//!   `min(insertion + ttl, expires_at)`, weighed in estimated bytes. Single flight: concurrent
//!   misses for one token share one flight (`try_get_with`); only verified principals are
//!   ever stored, refusals are shared with the waiters and never cached here.
//! * Negative cache (moka, separate and smaller): tokens refused for good and why, for a short
//!   ttl, so floods of a bad token do not reach the gateway and cannot evict good entries.
//! * [`OutageGrace`]: principals kept past their entry for `stale_if_error`.
//! * [`Generations`]: every answer is stamped; an invalidation voids older answers in every
//!   tier, checked on every read.

mod entry;
mod front;
mod generations;
mod intern;
mod stale;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use moka::future::Cache;
use moka::ops::compute::Op;

pub(crate) use self::entry::{Entry, Refresh, weight};
pub(crate) use self::generations::Generations;
use self::intern::Interner;
use self::stale::OutageGrace;
use crate::config::CacheSettings;
use crate::principal::{Grant, Principal, VerifiedBy};
use crate::reject::{AuthError, ChallengeParams, InvalidTokenReason};
use crate::scopes::ScopeHierarchy;
use crate::telemetry::Metrics;
use crate::token::TokenHash;

/// Largest table allocated up front (entries); a larger `max_capacity` grows past it.
const INITIAL_CAPACITY_LIMIT: u64 = 1 << 17;

/// Distinguishes caches in the per-thread front cache (one cache per check profile).
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A cache hit on the request path.
pub(crate) struct Hit {
    pub(crate) principal: Principal,
    /// Which tier had it.
    pub(crate) tier: HitTier,
    /// When it was looked up.
    pub(crate) now: Instant,
    /// The token key it was found under.
    pub(crate) hash: TokenHash,
    /// Set when this request should start the background refresh (refresh-ahead).
    pub(crate) refresh: Option<Arc<Refresh>>,
    /// A generation the principal was current at (the stamp a stream of it starts from).
    pub(crate) generation: u64,
}

/// What a lookup hands the caller's `meter` while the entry is lent: the hit, and what the
/// credential counts against (rate-limit metering), if metered. The meters are borrowed, so
/// a hit writes no reference count of theirs (hits of one token on many cores would all write
/// the same one).
pub(crate) type Meters<'e> = Option<&'e Arc<crate::rate_limit::RouteMeters>>;

impl Hit {
    /// What a hit keeps of `entry`: the principal, and the refresh-ahead state only when a
    /// refresh is due.
    fn of(entry: &Entry, hash: TokenHash, front: bool, now: Instant, generation: u64) -> Hit {
        let tier = match (front, entry.verified_at) {
            (true, _) => HitTier::Front,
            (false, Some(_)) => HitTier::Shared,
            (false, None) => HitTier::Fleet,
        };
        Hit {
            refresh: entry.refresh_due(now).cloned(),
            principal: entry.principal.clone(),
            tier,
            now,
            hash,
            generation,
        }
    }
}

/// Which tier a hit came from (the audit trail's `front`, `cache` and `fleet` sources).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HitTier {
    /// This thread's front cache.
    Front,
    /// The shared in-process cache, holding an answer verified here.
    Shared,
    /// The shared in-process cache, holding a copy of the fleet's shared tier.
    Fleet,
}

/// What a single flight gave one waiting request.
pub(crate) enum Loaded {
    /// A principal to serve.
    Allowed(Principal),
    /// A refusal, shared by every request that waited on the flight.
    Refused(Arc<AuthError>),
    /// The answer found is unusable (it ended before this request began, or an invalidation
    /// voided it while in flight): ask again.
    Stale,
}

/// Every tier of one verifier's decisions (see the module docs).
pub(crate) struct DecisionCache {
    id: u64,
    positive: Cache<TokenHash, Entry, DigestHasher>,
    /// Tokens refused for good, and why (so a repeat gets the same `error_description`).
    negative: Option<Cache<TokenHash, InvalidTokenReason, DigestHasher>>,
    grace: Option<OutageGrace>,
    generations: Generations,
    interner: Interner,
    metrics: Metrics,
    ttl: Duration,
    refresh_ahead: Option<Duration>,
    /// How often a streamed response asks whether its caller still stands.
    stream_recheck: Duration,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("ttl", &self.ttl)
            .field("cached", &self.positive.entry_count())
            .finish_non_exhaustive()
    }
}

impl DecisionCache {
    /// The tiers `settings` describe. `longest_flight` bounds how long an answer can be in
    /// flight before it is stored (invalidation records are kept that long past an entry's
    /// life).
    pub(crate) fn new(settings: &CacheSettings, longest_flight: Duration) -> Self {
        let min_weight = (settings.max_cache_bytes / settings.max_capacity.max(1)).max(1);
        let builder = Cache::builder()
            // Weighed in estimated bytes, each entry at least budget / max_capacity: both
            // bounds hold with one moka capacity.
            .max_capacity(settings.max_cache_bytes)
            // Sized for the entry limit from the start: a cache filling up under new tokens
            // does not rehash its table as it grows.
            .initial_capacity(usize::try_from(settings.max_capacity.min(INITIAL_CAPACITY_LIMIT)).unwrap_or(0))
            .weigher(move |_key, entry: &Entry| weight(&entry.principal, min_weight))
            // A flat ttl; an entry whose token expires sooner is never served past its
            // `deadline` (checked on every read).
            .time_to_live(settings.ttl)
            .support_invalidation_closures();
        #[cfg(feature = "metrics")]
        let builder = builder.eviction_listener(|_key, _value, cause| {
            use moka::notification::RemovalCause;
            crate::telemetry::eviction(match cause {
                RemovalCause::Expired => "expired",
                RemovalCause::Size => "size",
                RemovalCause::Explicit => "explicit",
                RemovalCause::Replaced => "replaced",
            });
        });
        let negative = (!settings.negative_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(settings.negative_max_capacity)
                .time_to_live(settings.negative_ttl)
                .build_with_hasher(DigestHasher)
        });
        let grace = settings
            .stale_if_error
            .map(|grace| OutageGrace::new(grace, settings.ttl, settings.max_cache_bytes, min_weight));
        // A record must also outlive the gap between two checks of a streamed response.
        let keep_records = (longest_flight + settings.ttl + settings.stale_if_error.unwrap_or_default())
            .max(settings.stream_recheck)
            .saturating_add(Duration::from_secs(5));
        DecisionCache {
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            positive: builder.build_with_hasher(DigestHasher),
            negative,
            grace,
            generations: Generations::new(keep_records),
            interner: Interner::default(),
            metrics: Metrics::new(),
            ttl: settings.ttl,
            refresh_ahead: settings.refresh_ahead.map(|w| w.min(settings.ttl)),
            stream_recheck: settings.stream_recheck,
        }
    }

    /// The hot path: this thread's front cache, then the shared cache; `meter` is given the
    /// hit and the credential's meters while the entry is lent.
    pub(crate) fn hit<R>(&self, hash: &TokenHash, meter: impl FnOnce(&Hit, Meters<'_>) -> R) -> Option<(Hit, R)> {
        let found = self.lookup(hash, |_, _| true, meter)?;
        tracing::trace!(
            client_id = found.0.principal.client_id().as_str(),
            cache = "hit",
            outcome = "allowed"
        );
        Some(found)
    }

    /// [`hit`](Self::hit) for a `max_cache_age` layer: only an entry verified at most
    /// `max_age` ago (one of unknown age, a copy of the fleet's shared tier, never).
    pub(crate) fn hit_within<R>(
        &self,
        hash: &TokenHash,
        max_age: Duration,
        meter: impl FnOnce(&Hit, Meters<'_>) -> R,
    ) -> Option<(Hit, R)> {
        self.lookup(
            hash,
            |e, now| {
                e.verified_at
                    .is_some_and(|at| now.saturating_duration_since(at) <= max_age)
            },
            meter,
        )
    }

    /// Counts a hit the verifier served (once its meters let it through; a hit they refuse
    /// is counted as their refusal).
    pub(crate) fn served_hit(&self) {
        self.metrics.hit_served();
    }

    /// Which verifier's tiers these are (unique in the process).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// This thread's front cache, then the shared cache, for an entry `usable` takes at the
    /// lookup's instant, handed to `meter` while lent; a hit or a miss is counted.
    fn lookup<R>(
        &self,
        hash: &TokenHash,
        usable: impl Fn(&Entry, Instant) -> bool,
        meter: impl FnOnce(&Hit, Meters<'_>) -> R,
    ) -> Option<(Hit, R)> {
        let generation = self.generations.current();
        let now = Instant::now();
        let mut meter = Some(meter);
        let front = front::get(self.id, generation, hash, now, |entry| {
            if !usable(entry, now) {
                return None;
            }
            let hit = Hit::of(entry, *hash, true, now, generation);
            let metered = meter.take()?(&hit, entry.meters.as_ref());
            Some((hit, metered))
        });
        if front.is_some() {
            self.metrics.cache_hit();
            return front;
        }
        // moka's `get` completes on its first poll unless it must wait for maintenance; if it
        // would wait, the miss path asks again properly.
        let entry = self
            .positive
            .get(hash)
            .now_or_never()
            .flatten()
            .filter(|e| now < e.deadline && self.is_current(hash, e) && usable(e, now));
        let Some(entry) = entry else {
            self.metrics.cache_miss();
            return None;
        };
        let hit = Hit::of(&entry, *hash, false, now, generation);
        let metered = meter.take()?(&hit, entry.meters.as_ref());
        front::put(self.id, generation, *hash, entry);
        self.metrics.cache_hit();
        Some((hit, metered))
    }

    /// Removes the token's entry if it was verified more than `max_age` ago (or at an unknown
    /// time), so the next flight asks again; a younger answer stored meanwhile stays.
    pub(crate) async fn drop_older(&self, hash: TokenHash, max_age: Duration) {
        self.positive
            .entry(hash)
            .and_compute_with(|current| {
                std::future::ready(match current {
                    Some(e) if e.value().verified_at.is_none_or(|at| at.elapsed() > max_age) => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
    }

    /// True if a verified answer for the token is cached here (any tier but the grace).
    pub(crate) fn has_answer(&self, hash: &TokenHash) -> bool {
        self.positive.contains_key(hash)
    }

    /// How long an entry is served at most.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The stamp of an answer whose verification starts now: an invalidation from here on
    /// voids it.
    pub(crate) fn stamp(&self) -> u64 {
        self.generations.current()
    }

    /// True unless an invalidation that covers this principal came after `stamp` (for a
    /// streamed response holding it since then); false too when the record that could tell
    /// has already been dropped.
    pub(crate) fn still_current(&self, hash: &TokenHash, principal: &Principal, stamp: u64) -> bool {
        self.generations.is_current_since(hash, principal, stamp)
    }

    /// How often a streamed response asks whether its caller still stands.
    pub(crate) fn stream_recheck(&self) -> Duration {
        self.stream_recheck
    }

    /// The cache entry for a verified grant: served until `min(now + ttl, its expiry, now +
    /// cap)` (which is now already when the token has expired by this clock: then it serves
    /// the requests waiting for it and nobody after). `cap` comes from the verdict's source
    /// (a shared entry's remaining life, fleet mode's disconnected bound); an entry that is
    /// not `graceful` is never served past it by the outage grace.
    pub(crate) fn entry(
        &self,
        grant: Grant,
        challenge: Arc<ChallengeParams>,
        hierarchy: Arc<ScopeHierarchy>,
        stamp: u64,
        cap: Option<Duration>,
        graceful: bool,
    ) -> Entry {
        let remaining = grant
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let principal = Principal::new(self.interner.grant(grant), challenge, hierarchy);
        let now = Instant::now();
        let lifetime = self.ttl.min(remaining).min(cap.unwrap_or(Duration::MAX));
        // Refresh only entries that end because of the ttl: a token about to expire cannot be
        // renewed by asking again.
        let refresh = self
            .refresh_ahead
            .filter(|_| remaining > self.ttl && cap.is_none())
            .map(|window| Arc::new(Refresh::new(now + lifetime.saturating_sub(window))));
        Entry {
            principal,
            deadline: now + lifetime,
            stamp,
            refresh,
            graceful,
            verified_at: Some(now),
            meters: None,
        }
    }

    /// The meters of the token's cached entry, if it has one (without waiting).
    pub(crate) fn meters_of(&self, hash: &TokenHash) -> Option<Arc<crate::rate_limit::RouteMeters>> {
        self.positive.get(hash).now_or_never().flatten()?.meters
    }

    /// Why the token was refused, if it was within the negative ttl.
    pub(crate) async fn rejected(&self, hash: &TokenHash) -> Option<InvalidTokenReason> {
        self.negative.as_ref()?.get(hash).await
    }

    /// One flight per token however many requests miss it at once: `flight` runs for the
    /// first, the others wait for its outcome. `started` is when the asking request began.
    pub(crate) async fn load(
        &self,
        hash: TokenHash,
        started: Instant,
        flight: impl Future<Output = Result<Entry, AuthError>>,
    ) -> Loaded {
        let result = self.positive.try_get_with(hash, flight).await;
        // Read before the entry is judged: the front cache keeps it only while no
        // invalidation has happened since.
        let generation = self.generations.current();
        let entry = match result {
            Ok(entry) => entry,
            Err(refusal) => return Loaded::Refused(refusal),
        };
        if !self.is_current(&hash, &entry) {
            // Voided by an invalidation while in flight: the answer may predate a revocation.
            self.remove_unusable(hash).await;
            return Loaded::Stale;
        }
        let now = Instant::now();
        if now < entry.deadline {
            front::put(self.id, generation, hash, entry.clone());
            if let Some(grace) = &self.grace {
                grace.keep(hash, &entry).await;
            }
            return Loaded::Allowed(entry.principal);
        }
        self.remove_unusable(hash).await;
        if entry.deadline >= started {
            // Answered for this request, and already at its end (the token expires now by
            // this clock): served once, kept by nobody.
            Loaded::Allowed(entry.principal)
        } else {
            Loaded::Stale
        }
    }

    /// Stores a fresh answer outside a flight (refresh-ahead). An answer voided while in
    /// flight is not stored; one voided after the insert is never read.
    pub(crate) async fn store(&self, hash: TokenHash, entry: Entry) {
        if !self.is_current(&hash, &entry) || Instant::now() >= entry.deadline {
            return;
        }
        if let Some(grace) = &self.grace {
            grace.keep(hash, &entry).await;
        }
        self.positive.insert(hash, entry).await;
    }

    /// A token refused for good (the gateway's 401, a pin, a denied client): remembered in the
    /// negative cache, and dropped from the outage grace so an outage cannot bring it back.
    pub(crate) async fn remember_rejection(&self, hash: TokenHash, reason: InvalidTokenReason) {
        if let Some(negative) = &self.negative {
            negative.insert(hash, reason).await;
        }
        if let Some(grace) = &self.grace {
            grace.invalidate(&hash).await;
        }
    }

    /// A principal from the outage grace, if the token has one still usable.
    pub(crate) async fn outage_grace(&self, hash: &TokenHash) -> Option<Principal> {
        self.grace.as_ref()?.get(hash, &self.generations).await
    }

    /// Voids every verified answer for one token, in every tier (its rejection, if any,
    /// stays: see [`forget_rejection`](Self::forget_rejection)).
    pub(crate) async fn invalidate_token(&self, hash: TokenHash) {
        // First: from here on, no answer obtained before counts, wherever it is stored.
        self.generations.invalidate_token(hash);
        self.positive.invalidate(&hash).await;
        if let Some(grace) = &self.grace {
            grace.invalidate(&hash).await;
        }
    }

    /// Forgets that a token was refused, so its next use asks again.
    pub(crate) async fn forget_rejection(&self, hash: &TokenHash) {
        if let Some(negative) = &self.negative {
            negative.invalidate(hash).await;
        }
    }

    /// Voids every answer for one client's tokens, in every tier (its rejections stay).
    pub(crate) fn invalidate_client(&self, client_id: &str) {
        self.generations.invalidate_client(client_id);
        let id = client_id.to_owned();
        if self
            .positive
            .invalidate_entries_if(move |_, entry| entry.principal.client_id().as_str() == id)
            .is_err()
        {
            // Cannot happen (closures are enabled at construction); stay correct regardless.
            self.positive.invalidate_all();
        }
        if let Some(grace) = &self.grace {
            let id = client_id.to_owned();
            grace.invalidate_where(move |p| p.client_id().as_str() == id);
        }
    }

    /// Voids every answer for one JWT session's tokens (`sid`), in every tier.
    pub(crate) fn invalidate_session(&self, session_id: &str) {
        self.generations.invalidate_session(session_id);
        let id = session_id.to_owned();
        self.invalidate_where(move |p| p.session_id() == Some(id.as_str()));
    }

    /// Voids every answer for the JWT with this token id (`jti`), in every tier.
    pub(crate) fn invalidate_token_id(&self, token_id: &str) {
        self.generations.invalidate_token_id(token_id);
        let id = token_id.to_owned();
        self.invalidate_where(move |p| p.token_id() == Some(id.as_str()));
    }

    /// Voids every answer whose grant names `target` (a user, an API key, a tenant, a
    /// membership), in every tier, answers in flight and open streams included.
    ///
    /// Only the generation record: every read of moka and of the outage grace checks it, and
    /// the front cache empties with the generation's move. The voided entries are not
    /// searched for: `invalidate_entries_if` leaves its predicate to be evaluated on every
    /// moka read until a scan of the whole cache has passed it, and these invalidations come
    /// in bursts (webhooks), so each would tax the hit path. A voided entry is removed when
    /// its token is next used (the miss path drops it) or at its ttl, within the cache's
    /// bounds meanwhile.
    pub(crate) fn invalidate_target(&self, target: crate::change::Target) {
        self.generations.invalidate_target(target);
    }

    /// Drops the positive entries whose principal matches (every read also checks the
    /// generations, so this frees memory and nothing else).
    fn invalidate_where(&self, matches: impl Fn(&Principal) -> bool + Send + Sync + 'static) {
        if self
            .positive
            .invalidate_entries_if(move |_, entry| matches(&entry.principal))
            .is_err()
        {
            self.positive.invalidate_all();
        }
    }

    /// Voids every answer verified from a JWT signature (a JWKS key was withdrawn), in every
    /// tier. Opaque tokens' answers and every rejection stay: re-verifying a JWT costs no
    /// gateway call, re-asking for every opaque token would.
    pub(crate) fn invalidate_jwt(&self) {
        self.generations.invalidate_jwt();
        let is_jwt = |p: &Principal| p.verified_by() == VerifiedBy::JwtSignature;
        self.invalidate_where(is_jwt);
        if let Some(grace) = &self.grace {
            grace.invalidate_where(is_jwt);
        }
    }

    /// Voids every answer, in every tier.
    pub(crate) fn invalidate_all(&self) {
        self.generations.invalidate_all();
        self.positive.invalidate_all();
        if let Some(negative) = &self.negative {
            negative.invalidate_all();
        }
        if let Some(grace) = &self.grace {
            grace.invalidate_all();
        }
    }

    /// True unless an invalidation voided the entry's answer after its verification started.
    fn is_current(&self, hash: &TokenHash, entry: &Entry) -> bool {
        self.generations.is_current(hash, &entry.principal, entry.stamp)
    }

    /// Removes the token's entry if it has ended or was voided, atomically: a fresh answer
    /// that another request stored after ours was read stays.
    async fn remove_unusable(&self, hash: TokenHash) {
        self.positive
            .entry(hash)
            .and_compute_with(|current| {
                std::future::ready(match current {
                    Some(e) if Instant::now() >= e.value().deadline || !self.is_current(&hash, e.value()) => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
    }

    /// A previously verified principal without waiting or asking anyone.
    pub(crate) fn peek(&self, hash: &TokenHash) -> Option<Principal> {
        self.hit(hash, |_, _| ()).map(|(hit, ())| hit.principal)
    }

    /// Number of verified tokens cached (approximate, as moka counts).
    pub(crate) fn cached_count(&self) -> u64 {
        self.positive.entry_count()
    }

    /// Weighted size of the positive cache (see [`crate::Verifier::cached_bytes`]).
    pub(crate) fn cached_bytes(&self) -> u64 {
        self.positive.weighted_size()
    }

    /// Number of refused tokens remembered (approximate).
    pub(crate) fn negative_count(&self) -> u64 {
        self.negative.as_ref().map_or(0, Cache::entry_count)
    }

    /// Runs every tier's pending maintenance now (tests and benchmarks).
    pub(crate) async fn run_pending_tasks(&self) {
        self.positive.run_pending_tasks().await;
        if let Some(negative) = &self.negative {
            negative.run_pending_tasks().await;
        }
        if let Some(grace) = &self.grace {
            grace.run_pending_tasks().await;
        }
    }
}

/// `BuildHasher` for maps keyed by [`TokenHash`]: the key is already a SHA-256 digest, uniformly distributed and not attacker-steerable, so its first 8 bytes are the hash (no SipHash pass).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DigestHasher;

/// The hasher built by [`DigestHasher`].
#[derive(Default)]
pub(crate) struct DigestState(u64);

impl BuildHasher for DigestHasher {
    type Hasher = DigestState;
    fn build_hasher(&self) -> DigestState {
        DigestState(0)
    }
}

impl Hasher for DigestState {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `TokenHash` (which calls `write_u64`): fold bytes in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}
