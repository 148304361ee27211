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

mod book;
mod config;
mod count;
pub(crate) mod headers;
mod meter;
mod routes;
mod subject;

#[cfg(feature = "redis")]
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use self::book::Registry;
pub use self::config::{DEFAULT_FLEET_BATCH, RateLimitConfig, RateLimitHeaders, RateLimitMode};
pub(crate) use self::count::{Admission, Usage};
#[cfg(feature = "redis")]
pub(crate) use self::meter::Unflushed;
pub(crate) use self::meter::{Count, Meter, Rule};
pub(crate) use self::routes::{RouteMeters, RouteRef};
pub(crate) use self::subject::Subject;

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
            registry: Mutex::new(Registry::new()),
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

    /// Waits until a meter holds half a batch (the fleet's flusher); forever without the fleet.
    #[cfg(feature = "redis")]
    pub(crate) async fn half_full(&self) {
        match &self.shared {
            Some(shared) => shared.half_full.notified().await,
            None => std::future::pending().await,
        }
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
