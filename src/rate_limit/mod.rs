//! Wacht's rate limits, kept on the requests the layer serves from its cache.
//!
//! The gateway counts only the calls it sees: a cache miss. Each of its answers reports the
//! app's rules that matched the request (`rate_limits[]`: the rule's label such as
//! `1000/60s`, its `limit`, and the `remaining` budget after counting that call). The layer
//! keeps one meter per rule and subject (whose requests the rule counts together: see
//! [`RateLimitMode`]) and counts there what it serves from cache. In a window (fixed, aligned
//! to Unix time), the requests served from cache plus what the gateway reported as used at
//! its latest answer may not exceed the rule's limit; past it a request gets `429` with
//! `Retry-After` (to the end of the window) until the window rolls. The gateway's own `429`
//! on a miss is passed on as before.
//!
//! The rules that apply depend on the route (a rule may name endpoints), so the layer learns
//! them per credential and route: the first request of a credential on a route it has not
//! seen asks the gateway (counted there), later ones are metered here.
//!
//! **The bound.** A replica alone serves at most the rule's limit per window. In fleet mode
//! (feature `redis`) the replicas add their counts to shared meters in Redis in batches
//! ([`RateLimitConfig::fleet_batch`]; no Redis call on the request path): the fleet serves
//! at most the rule's limit plus one batch per replica per window. While Redis is unreachable
//! each replica meters alone (at most the limit per replica). Windows here are fixed while
//! the gateway's slide, so a client may get up to twice the limit across a window boundary,
//! as with any fixed-window limiter.

mod config;
pub(crate) mod headers;
mod meter;
mod routes;
mod subject;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use self::config::{DEFAULT_FLEET_BATCH, RateLimitConfig, RateLimitHeaders, RateLimitMode};
#[cfg(feature = "redis")]
#[cfg(feature = "redis")]
pub(crate) use self::meter::Unflushed;
pub(crate) use self::meter::{Count, Meter, Rule};
use self::routes::distinct;
pub(crate) use self::routes::{RouteMeters, RouteRef};
pub(crate) use self::subject::Subject;
use crate::principal::RateLimitState;

/// The budget a response reports: its most constrained rule. Small (it travels with the
/// request to its response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    /// The rule: its label (the `RateLimit-Policy` name), limit, window and policy field.
    pub(crate) rule: Arc<Rule>,
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
}

impl Usage {
    fn of(meter: &Meter, count: Count) -> Usage {
        let (remaining, reset_ms) = match count {
            Count::Served {
                remaining, reset_ms, ..
            } => (remaining, reset_ms),
            Count::Spent { reset_ms } => (0, reset_ms),
            Count::Flush => (0, 0),
        };
        Usage {
            rule: Arc::clone(&meter.rule),
            remaining,
            reset: Duration::from_millis(reset_ms),
        }
    }

    /// The tighter of two: fewer remaining, then the later reset.
    fn tighter(self, other: Usage) -> Usage {
        if (other.remaining, std::cmp::Reverse(other.reset)) < (self.remaining, std::cmp::Reverse(self.reset)) {
            other
        } else {
            self
        }
    }
}

/// The budgets one request met: the tightest of those it was served by, and of those spent,
/// the one that resets last (until then the request would be refused).
#[derive(Default)]
struct Tally {
    served: Option<Usage>,
    spent: Option<Usage>,
}

impl Tally {
    fn served(&mut self, usage: Usage) {
        self.served = Some(match self.served.take() {
            Some(tightest) => tightest.tighter(usage),
            None => usage,
        });
    }

    fn spent(&mut self, usage: Usage) {
        self.spent = Some(match self.spent.take() {
            Some(latest) if latest.reset >= usage.reset => latest,
            _ => usage,
        });
    }

    fn admission(self) -> Admission {
        match self.spent {
            Some(usage) => Admission::Spent(usage),
            None => Admission::Served(self.served),
        }
    }
}

/// What the meters say of a request served from cache.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The credential was not seen on this route: ask the gateway (which counts it).
    Unknown,
    /// Served: counted by every rule of the route; the tightest budget, if any rule applies.
    Served(Option<Usage>),
    /// A rule's budget is spent: 429 until its window rolls (`Usage::reset`; the latest of the
    /// spent rules).
    Spent(Usage),
    /// Not counted: this replica holds a full batch of a rule the fleet shares; add it to the
    /// fleet's count, then ask again.
    Flush,
}

/// Unix milliseconds from a monotonic instant: one wall-clock reading at start, so the hit
/// path reads only the monotonic clock it already has.
#[derive(Debug)]
struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    fn new() -> Self {
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock {
            start: Instant::now(),
            start_unix_ms,
        }
    }

    #[inline]
    fn unix_ms(&self, now: Instant) -> u64 {
        // In u64 (`as_millis` divides a u128: most of this function's cost on a hit).
        let since = now.saturating_duration_since(self.start);
        let ms = since
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(since.subsec_millis()));
        self.start_unix_ms.saturating_add(ms)
    }
}

/// A meter key as the fleet's store names it (a keyed hash: no credential, no id in clear).
pub(crate) type FleetKey = Box<dyn Fn(&str) -> Box<str> + Send + Sync>;

/// The fleet's side of metering: how meters are named in its store, and whether it takes
/// counts now.
struct Shared {
    key_of: FleetKey,
    /// Until then (Unix ms) the store is not asked: it failed, and each replica meters alone.
    down_until_ms: std::sync::atomic::AtomicU64,
    /// One flush at a time.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the flusher early: a meter holds half a batch.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    half_full: tokio::sync::Notify,
}

/// How long meters count alone after the fleet's store failed a flush.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const FLEET_RETRY: Duration = Duration::from_secs(1);

/// One verifier's meters.
pub(crate) struct Metering {
    config: RateLimitConfig,
    by_ip: bool,
    clock: Clock,
    /// Every live meter by its key; dead ones pruned as the map grows.
    registry: Mutex<Registry>,
    /// Keys the rule book's resources (a per-process secret: a client cannot aim at a key).
    routes: std::hash::RandomState,
    /// In fleet mode: the meters are shared.
    shared: Option<Shared>,
    /// Whether a served request's budget is wanted (response headers, the audit trail).
    want_usage: bool,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering")
            .field("config", &self.config)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

/// The rules an app's scheme has on a route (by app and route key), and when a gateway
/// answer named them.
type RuleBook = HashMap<(Box<str>, u64), (Arc<[Rule]>, Instant)>;

#[derive(Debug, Default)]
struct Registry {
    meters: HashMap<String, Arc<Meter>>,
    prune_at: usize,
    /// The rules of an app's scheme on a route, as the gateway last named them, and when.
    book: RuleBook,
}

impl Registry {
    /// The live meter of `key`, or a new one (named in the fleet's store by `fleet`'s
    /// function, and holding at most its batch unflushed).
    ///
    /// The registry holds every meter until the window it counted in has ended and no
    /// credential's routes name it: a count outlives the cache entries that made it (a
    /// budget does not start over when a token's entry expires or its routes are relearned).
    fn meter(&mut self, key: String, rule: Rule, fleet: Option<(&FleetKey, u64)>, now_ms: u64) -> Arc<Meter> {
        if let Some(meter) = self.meters.get(&key)
            && *meter.rule == rule
        {
            return Arc::clone(meter);
        }
        let (fleet_key, batch) = match fleet {
            Some((name, batch)) => (Some(name(&key)), batch),
            None => (None, 1),
        };
        let meter = Arc::new(Meter::new(rule, fleet_key, batch));
        self.meters.insert(key, Arc::clone(&meter));
        if self.meters.len() >= self.prune_at {
            self.meters.retain(|_, m| Arc::strong_count(m) > 1 || !m.idle(now_ms));
            self.prune_at = (self.meters.len() * 2).max(1024);
        }
        meter
    }
}

/// How long the rules a gateway answer named for an app's route are used for the app's other
/// credentials before a gateway call names them again.
const RULE_BOOK_TTL: Duration = Duration::from_secs(600);

/// Most (app, route) rule sets remembered; past it the book starts over.
const RULE_BOOK_CAP: usize = 50_000;

impl Metering {
    /// The meters `config` asks for (shared through the fleet's store when `fleet_key` names
    /// them there); `None` when metering is off. `audited`: the audit trail reads each
    /// request's budget, as the headers do.
    pub(crate) fn new(config: &RateLimitConfig, fleet_key: Option<FleetKey>, audited: bool) -> Option<Self> {
        if !config.enabled {
            tracing::warn!(
                "rate-limit metering disabled (disable_metering_unsafe): requests served from cache are not counted against Wacht's rate limits"
            );
            return None;
        }
        Some(Metering {
            config: config.clone(),
            by_ip: config.by_ip(),
            clock: Clock::new(),
            registry: Mutex::new(Registry {
                meters: HashMap::new(),
                prune_at: 1024,
                book: HashMap::new(),
            }),
            routes: std::hash::RandomState::new(),
            want_usage: config.headers != RateLimitHeaders::None || audited,
            shared: fleet_key.map(|key_of| Shared {
                key_of,
                down_until_ms: std::sync::atomic::AtomicU64::new(0),
                flushing: tokio::sync::Mutex::new(()),
                half_full: tokio::sync::Notify::new(),
            }),
        })
    }

    /// True when the fleet shares meters and its store takes counts now (a shared meter
    /// holds at most a batch the fleet does not have).
    #[inline]
    fn fleet_takes_counts(&self, now_ms: u64) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.down_until_ms.load(std::sync::atomic::Ordering::Relaxed) <= now_ms)
    }

    /// True when a rule is counted per client IP (so the IP is part of a route's key).
    pub(crate) fn by_ip(&self) -> bool {
        self.by_ip
    }

    /// Which headers responses carry.
    pub(crate) fn headers(&self) -> RateLimitHeaders {
        self.config.headers
    }

    /// A route as the meters tell it apart: the resource reported to the gateway (its rules
    /// match endpoints by resource alone, whatever the method) and, when a rule counts per
    /// IP, the client's IP.
    #[inline]
    pub(crate) fn route<'a>(&self, resource: &'a str, ip: Option<&'a str>) -> RouteRef<'a> {
        RouteRef {
            resource,
            ip: if self.by_ip { ip } else { None },
        }
    }

    /// A request on `route` served from cache at `now`: counted by the route's meters.
    #[inline]
    pub(crate) fn admit(&self, meters: &RouteMeters, route: RouteRef<'_>, now: Instant) -> Admission {
        meters
            .with(route, |route_meters| self.count(route_meters, now, true))
            .unwrap_or(Admission::Unknown)
    }

    /// A request served from cache counted by `meters` at `now`. With `batched`, a shared
    /// meter holding a full batch the fleet does not have counts nothing ([`Admission::Flush`]:
    /// add the batch, then ask again); without, it counts anyway.
    pub(crate) fn count(&self, meters: &[Arc<Meter>], now: Instant, batched: bool) -> Admission {
        if meters.is_empty() {
            return Admission::Served(None);
        }
        let now_ms = self.clock.unix_ms(now);
        let mut tally = Tally::default();
        let mut half_full = false;
        // Every rule counts the request it allows, even when another refuses it (as the
        // gateway does).
        let fleet_up = batched && self.fleet_takes_counts(now_ms);
        if let [meter] = meters {
            // One rule (Wacht's default): nothing to take back.
            let (count, half_full) = meter.admit(now_ms, fleet_up);
            if half_full {
                self.wake_flusher();
            }
            return match count {
                Count::Served { .. } => Admission::Served(self.want_usage.then(|| Usage::of(meter, count))),
                Count::Spent { .. } => Admission::Spent(Usage::of(meter, count)),
                Count::Flush => Admission::Flush,
            };
        }
        // Where each rule before counted the request (0: it did not, being spent).
        let mut counted_in = [0u64; 4];
        let mut counted_in_more: Vec<u64> = Vec::new();
        for (i, meter) in meters.iter().enumerate() {
            let (count, half) = meter.admit(now_ms, fleet_up);
            half_full |= half;
            let window = match count {
                Count::Served { counted_in, .. } => counted_in,
                Count::Spent { .. } | Count::Flush => 0,
            };
            match counted_in.get_mut(i) {
                Some(slot) => *slot = window,
                None => counted_in_more.push(window),
            }
            match count {
                Count::Served { .. } if !self.want_usage => {}
                Count::Served { .. } => tally.served(Usage::of(meter, count)),
                Count::Spent { .. } => tally.spent(Usage::of(meter, count)),
                Count::Flush => {
                    // Not counted until the batch is added: neither by the rules before that
                    // counted it.
                    let windows = counted_in.iter().chain(&counted_in_more);
                    for (earlier, &window) in meters[..i].iter().zip(windows) {
                        if window != 0 {
                            earlier.uncount(window);
                        }
                    }
                    self.wake_flusher();
                    return Admission::Flush;
                }
            }
        }
        if half_full {
            // Added in the background before the batch fills, so that a request rarely waits.
            self.wake_flusher();
        }
        tally.admission()
    }

    fn wake_flusher(&self) {
        if let Some(shared) = &self.shared {
            shared.half_full.notify_one();
        }
    }

    /// The budget of the route's tightest rule if a gateway answer showed it spent by more
    /// than the request the gateway just counted (what was served here meanwhile).
    pub(crate) fn overspent(&self, meters: &RouteMeters, route: RouteRef<'_>) -> Option<Usage> {
        let now_ms = self.clock.unix_ms(Instant::now());
        meters.get(route)?.iter().find_map(|meter| {
            let count = meter.over(now_ms);
            matches!(count, Count::Spent { .. }).then(|| Usage::of(meter, count))
        })
    }

    /// The gateway refused a request on `route` as rate-limited: its meters there hold the
    /// budget spent for `retry_after` (at most to the end of their window).
    pub(crate) fn spend(&self, meters: &RouteMeters, route: RouteRef<'_>, retry_after: Duration) {
        let Some(route_meters) = meters.get(route) else {
            return;
        };
        let now_ms = self.clock.unix_ms(Instant::now());
        for meter in route_meters.iter() {
            // The gateway's `retry_after` is the window of the rule that refused.
            if meter.rule.window() == retry_after || route_meters.len() == 1 {
                meter.exhaust(now_ms);
            }
        }
    }

    /// A request served from cache on a route whose rules could not be learned (the gateway
    /// unavailable or at its cap): counted by every meter the credential already has on any
    /// route (its app's budgets among them). `Served(None)` when it has none.
    pub(crate) fn admit_known(&self, meters: &RouteMeters, now: Instant) -> Admission {
        self.count(&meters.all(), now, false)
    }

    /// Waits until a meter holds half a batch (the fleet's flusher); forever without the fleet.
    #[cfg(feature = "redis")]
    pub(crate) async fn half_full(&self) {
        match &self.shared {
            Some(shared) => shared.half_full.notified().await,
            None => std::future::pending().await,
        }
    }

    /// A gateway answer for `subject` on `route`: the route's rules (what the answer reported)
    /// recorded for the credential and its app, each meter told what the gateway counted.
    /// Returns the tightest budget (for the response's headers), or the spent one.
    pub(crate) fn learn(
        &self,
        meters: &RouteMeters,
        route: RouteRef<'_>,
        subject: &Subject<'_>,
        limits: &[RateLimitState],
    ) -> Admission {
        let now_ms = self.clock.unix_ms(Instant::now());
        // Each entry's rule, parsed once, with what the gateway said is left of it.
        let (rules, left): (Vec<Rule>, Vec<u64>) = limits
            .iter()
            .filter_map(|state| {
                let rule = Rule::parse(&state.rule, state.limit);
                if rule.is_none() {
                    tracing::debug!(
                        rule = &*state.rule,
                        "rate-limit rule label of an unknown form: not metered"
                    );
                }
                Some((rule?, state.remaining))
            })
            .unzip();
        let found = self.resolve(subject, &rules.into(), true);
        let mut tally = Tally::default();
        for (meter, remaining) in found.iter().zip(left) {
            let count = meter.observe(now_ms, remaining);
            let usage = Usage::of(meter, count);
            if matches!(count, Count::Spent { .. }) {
                tally.spent(usage.clone());
            }
            tally.served(usage);
        }
        meters.learn(route, distinct(found));
        tally.admission()
    }

    /// A credential on a route its meters have not seen: counted by the rules its app's
    /// scheme has there, if a gateway answer named them lately (for any of the app's
    /// credentials); else [`Admission::Unknown`], and the gateway is asked.
    pub(crate) fn admit_new_route(
        &self,
        meters: &RouteMeters,
        route: RouteRef<'_>,
        subject: &Subject<'_>,
        now: Instant,
    ) -> Admission {
        let rules = {
            let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match registry
                .book
                .get(&(Box::from(subject.book_key()), self.resource_key(subject.route)))
            {
                Some((rules, at)) if now.saturating_duration_since(*at) < RULE_BOOK_TTL => Arc::clone(rules),
                _ => return Admission::Unknown,
            }
        };
        meters.learn(route, distinct(self.resolve(subject, &rules, false)));
        self.admit(meters, route, now)
    }

    /// A credential on a route whose rules the fleet's rule book named: the rules recorded
    /// here (for the app, and for the credential's route), then the request counted.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn admit_with_rules(
        &self,
        meters: &RouteMeters,
        route: RouteRef<'_>,
        subject: &Subject<'_>,
        rules: &[(String, u64)],
        now: Instant,
    ) -> Admission {
        let rules: Arc<[Rule]> = rules
            .iter()
            .filter_map(|(label, limit)| Rule::parse(label, *limit))
            .collect::<Vec<_>>()
            .into();
        meters.learn(route, distinct(self.resolve(subject, &rules, true)));
        self.admit(meters, route, now)
    }

    /// The meters of `rules` for `subject` (found or made), and, for rules a gateway answer
    /// just named (`fresh`), the app's rule book updated.
    /// In the order of `rules` (one meter may appear twice: see [`distinct`]).
    fn resolve(&self, subject: &Subject<'_>, rules: &Arc<[Rule]>, fresh: bool) -> Vec<Arc<Meter>> {
        let now_ms = self.clock.unix_ms(Instant::now());
        let book = (Box::from(subject.book_key()), self.resource_key(subject.route));
        let mut registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fresh {
            if registry.book.len() >= RULE_BOOK_CAP {
                registry.book.clear();
            }
            registry.book.insert(book, (Arc::clone(rules), Instant::now()));
        }
        let fleet = self.shared.as_ref().map(|s| (&s.key_of, self.config.fleet_batch));
        rules
            .iter()
            .map(|rule| {
                let key = subject.key(self.config.mode_of(&rule.label), &rule.label);
                registry.meter(key, rule.clone(), fleet, now_ms)
            })
            .collect()
    }

    /// The key of a resource alone: what the rule book is kept by (rules match endpoints by
    /// resource; a client IP changes whose budget counts, not which rules apply).
    fn resource_key(&self, resource: &str) -> u64 {
        self.routes.hash_one(resource)
    }

    /// True if the rule book named the rules of `subject`'s app on its resource lately (a
    /// gateway answer about it need not be written to the fleet's book again).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn knows_rules(&self, subject: &Subject<'_>) -> bool {
        let book = (Box::from(subject.book_key()), self.resource_key(subject.route));
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        registry
            .book
            .get(&book)
            .is_some_and(|(_, at)| at.elapsed() < RULE_BOOK_TTL)
    }

    /// The tightest budget on `route` now, counting nothing (a miss's response headers).
    pub(crate) fn peek(&self, meters: &RouteMeters, route: RouteRef<'_>) -> Option<Usage> {
        let now_ms = self.clock.unix_ms(Instant::now());
        meters.get(route)?.iter().fold(None, |tightest, meter| {
            let usage = Usage::of(meter, meter.peek(now_ms));
            Some(match tightest {
                Some(t) => usage.tighter(t),
                None => usage,
            })
        })
    }

    /// The shared meters holding requests the fleet's count does not have, and those
    /// requests (one flush's worth); empty without the fleet. Holds the flush lock: one flush
    /// at a time.
    #[cfg(feature = "redis")]
    pub(crate) async fn unflushed(&self) -> Option<(tokio::sync::MutexGuard<'_, ()>, Vec<(Arc<Meter>, Unflushed)>)> {
        let shared = self.shared.as_ref()?;
        let guard = shared.flushing.lock().await;
        let now_ms = self.clock.unix_ms(Instant::now());
        let live: Vec<Arc<Meter>> = {
            let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            registry.meters.values().cloned().collect()
        };
        let batch = live
            .into_iter()
            .filter(|m| m.fleet_key.is_some())
            .map(|m| {
                let unflushed = m.unflushed(now_ms);
                (m, unflushed)
            })
            .filter(|(_, u)| u.served > 0)
            .collect();
        Some((guard, batch))
    }

    /// The fleet's store could not take a flush: meters count alone for a while.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fleet_down(&self) {
        if let Some(shared) = &self.shared {
            let until = self
                .clock
                .unix_ms(Instant::now())
                .saturating_add(FLEET_RETRY.as_millis() as u64);
            shared.down_until_ms.store(until, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The fleet's store took a flush.
    #[cfg(feature = "redis")]
    pub(crate) fn fleet_up(&self) {
        if let Some(shared) = &self.shared {
            shared.down_until_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// True when meters are shared through the fleet.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    fn shared_meter(label: &str, limit: u64) -> Arc<Meter> {
        let rule = Rule::parse(label, limit).unwrap_or_else(|| unreachable!("a plain label"));
        Arc::new(Meter::new(rule, Some(label.into()), 2))
    }

    #[test]
    fn a_spent_rule_is_not_uncounted_when_a_later_rule_waits_for_a_flush() {
        let config = RateLimitConfig::default().fleet_batch(2);
        let metering = Metering::new(&config, Some(Box::new(|key: &str| key.into())), false)
            .unwrap_or_else(|| unreachable!("metering is on"));
        // A: 20 a minute (batch 1); B: 1000 a minute (batch 2).
        let (a, b) = (shared_meter("20/60s", 20), shared_meter("1000/60s", 1000));
        let both = [Arc::clone(&a), Arc::clone(&b)];
        let now = Instant::now();
        let now_ms = metering.clock.unix_ms(now);
        // With the fleet's store down, both count freely.
        metering.fleet_down();
        for _ in 0..5 {
            assert!(matches!(metering.count(&both, now, true), Admission::Served(_)));
        }
        assert_eq!(a.unflushed(now_ms).served, 5);
        // A's budget is spent at the gateway; the store is back, and B holds a full batch.
        a.observe(now_ms, 0);
        metering.fleet_up();
        assert!(matches!(metering.count(&both, now, true), Admission::Flush));
        // A never counted that request: nothing of A's is taken back.
        assert_eq!(a.unflushed(now_ms).served, 5);
        assert_eq!(b.unflushed(now_ms).served, 5);
    }
}
