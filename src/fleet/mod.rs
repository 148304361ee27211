//! Fleet mode (feature `redis`): a decision tier and an invalidation channel shared by every
//! replica of a service, on Redis or Valkey.
//!
//! ```text
//! request ─► per-thread front ─► process (moka) ─► Redis (this module) ─► gateway
//!                                                    │ one gateway call per token per ttl, fleet-wide
//!                                                    └ invalidate / deny ─► every replica (pub/sub)
//! ```
//!
//! * **Shared tier.** A local miss asks Redis first (one round trip, bounded by
//!   [`FleetConfig::timeout`]). A hit fills the local cache for the shared entry's remaining
//!   lifetime. Gateway answers are written back with `PX = min(ttl, expires_at − now)`; the
//!   gateway's 401s go to a separate namespace for `negative_ttl`. Rate limits and gateway
//!   errors are never shared.
//! * **Fleet-wide single flight.** When replicas miss the same token at once, the one that
//!   takes a short lease (`SET NX PX`) calls the gateway; the others poll Redis for its answer
//!   for at most [`FleetConfig::lease_wait`], then ask the gateway themselves.
//! * **Safe to share.** Keys hold a keyed hash of the token, namespaced by the check profile;
//!   values and events carry an HMAC-SHA256 tag made with the fleet secret, so an entry written
//!   by anyone without it is ignored (and counted), never turned into a principal. Every
//!   shared answer still goes through this replica's pins and deny list.
//! * **Invalidation fan-out.** `invalidate(token)`, `invalidate_all()`, `invalidate_client`,
//!   `deny_client` and `allow_client` change the shared state (a void marker stamped with the
//!   fleet's epoch, so an answer in flight during the invalidation is refused when read; the
//!   deny set; the invalidate-all floor) and publish an event that every replica applies to
//!   its local tiers. `deny_session` and `deny_token_id` (JWT access tokens) add the id to a
//!   sorted set scored by when the denial ends (a replica that subscribes later reads the live
//!   ones) and publish an event; there is nothing to void, since JWT verdicts are verified on
//!   each replica and never shared. A change Redis does not take (down, hung, refusing
//!   writes) stays in the outbox of the replica that made it (in order, bounded) and is
//!   written and published again on its next heartbeat and when its channel is back: Redis's
//!   own entries, the other replicas and replicas started later all learn it. Until then,
//!   that replica's misses skip the shared tier, and it keeps its own queued change over
//!   what Redis or another replica says about the same client.
//! * **One format per fleet.** The keys of sealed entries and markers, and the channel,
//!   include the format version: replicas of tower-wacht releases with different formats
//!   share no entries (each asks the gateway as if alone), so during a rolling upgrade across
//!   such a change an invalidation reaches only the replicas of the release it was made on.
//!   The deny sets (plain ids) are shared by every release, so denials outlive upgrades.
//! * **Redis only speeds things up.** Down, slow or answering garbage, every replica behaves
//!   as without fleet mode (local cache and gateway), logs and counts it, and skips Redis for
//!   a second after a failure. The channel reconnects with capped backoff and resubscribes.
//!
//! What is guaranteed in each state of a replica's channel:
//!
//! | channel | an invalidation on another replica reaches this one | what this replica caches locally |
//! | --- | --- | --- |
//! | subscribed | when the event arrives (milliseconds on a LAN) | for `ttl`, as without fleet mode |
//! | lost (closed, or silent for 3 heartbeats) | not at all: so at the moment it notices, the replica drops everything it cached (entries it serves afterwards were verified after the loss) | for at most [`FleetConfig::disconnected_ttl`], until it has resubscribed and re-read the deny list and the invalidate-all floor |
//! | never connected yet | not at all | for at most `disconnected_ttl` |
//!
//! So an invalidation takes effect everywhere within the event's delivery time, or within
//! `heartbeat × 3 + disconnected_ttl` on a replica whose channel is lost.

mod channel;
mod codec;
mod outbox;
mod store;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) use self::channel::Replica;
use self::codec::Codec;
pub(crate) use self::codec::Event;
pub(crate) use self::store::SharedView;
use self::store::{Lookup, Shared};
use crate::error::ConfigError;
use crate::gateway::{Decision, GatewayError};
use crate::telemetry;
use crate::token::TokenHash;

/// The shortest fleet secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Settings of fleet mode: where Redis is, the secret every replica shares, and the bounds.
///
/// ```
/// use std::time::Duration;
/// use tower_wacht::fleet::FleetConfig;
///
/// let fleet = FleetConfig::new("redis://127.0.0.1:6379", "a fleet secret of at least 32 bytes!!")
///     .timeout(Duration::from_millis(20));
/// # let _ = fleet;
/// ```
#[derive(Clone)]
pub struct FleetConfig {
    pub(crate) redis_url: String,
    pub(crate) secret: Arc<[u8]>,
    pub(crate) timeout: Duration,
    pub(crate) lease_wait: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) disconnected_ttl: Duration,
    pub(crate) max_reconnect_backoff: Duration,
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password, the secret is a secret.
        f.debug_struct("FleetConfig")
            .field("redis_url", &"<redacted>")
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("lease_wait", &self.lease_wait)
            .field("heartbeat", &self.heartbeat)
            .field("disconnected_ttl", &self.disconnected_ttl)
            .field("max_reconnect_backoff", &self.max_reconnect_backoff)
            .finish()
    }
}

impl FleetConfig {
    /// Fleet mode on the Redis (or Valkey) at `redis_url` (`redis://[:password@]host:port[/db]`,
    /// `rediss://` for TLS is not built in), with `secret` (at least 32 bytes, the same on every
    /// replica) keying token hashes and authenticating entries and events.
    ///
    /// Defaults: `timeout` 30 ms, `lease_wait` 1 s, `heartbeat` 1 s, `disconnected_ttl` 5 s,
    /// `max_reconnect_backoff` 2 s.
    pub fn new(redis_url: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        FleetConfig {
            redis_url: redis_url.into(),
            secret: Arc::from(secret.as_ref()),
            timeout: Duration::from_millis(30),
            lease_wait: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
            disconnected_ttl: Duration::from_secs(5),
            max_reconnect_backoff: Duration::from_secs(2),
        }
    }

    /// Longest wait for one Redis round trip on the request path (default 30 ms); past it the
    /// replica goes on without Redis.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest a replica waits for another replica's gateway call on the same token before it
    /// asks the gateway itself (default 1 s).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// How often each replica proves its channel alive (default 1 s); three silent periods
    /// count as a lost channel.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Longest a replica caches an answer locally while its invalidation channel is lost
    /// (default 5 s): the bound on how late a missed invalidation can take effect there.
    pub fn disconnected_ttl(mut self, ttl: Duration) -> Self {
        self.disconnected_ttl = ttl;
        self
    }

    /// Longest wait between reconnection attempts (default 2 s).
    pub fn max_reconnect_backoff(mut self, backoff: Duration) -> Self {
        self.max_reconnect_backoff = backoff;
        self
    }

    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::invalid(
                "fleet secret",
                format!("must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        redis::Client::open(self.redis_url.as_str()).map_err(|e| ConfigError::invalid("redis URL", e.to_string()))?;
        for (name, d) in [
            ("fleet timeout", self.timeout),
            ("fleet heartbeat", self.heartbeat),
            ("fleet disconnected_ttl", self.disconnected_ttl),
            ("fleet max_reconnect_backoff", self.max_reconnect_backoff),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(name, "must be greater than zero"));
            }
        }
        Ok(())
    }
}

/// What the verifier knows of its check profile, for fleet mode.
pub(crate) struct Profile {
    /// Everything that changes a decision: gateway URL, method, resource, pins.
    pub(crate) id: String,
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    /// The longest a gateway call may take.
    pub(crate) call_bound: Duration,
}

/// A verdict and how long the local cache may keep it.
pub(crate) struct Answer {
    pub(crate) verdict: Result<Decision, GatewayError>,
    /// Cap on the local entry's lifetime (a shared entry's remaining life, or the
    /// disconnected bound).
    pub(crate) cap: Option<Duration>,
}

/// The running fleet tier of one verifier.
pub(crate) struct Fleet {
    codec: Codec,
    conn: redis::aio::ConnectionManager,
    client: redis::Client,
    config: FleetConfig,
    profile: Profile,
    /// This replica, in events (its own are not applied twice).
    replica: u64,
    /// Skip Redis until this instant (milliseconds since `started`) after a failure.
    failing_until: AtomicU64,
    started: Instant,
    /// Subscribed and re-synced.
    connected: AtomicBool,
    /// The invalidate-all floor last applied.
    floor: AtomicU64,
    /// The changes this replica made to the shared state, in order, until Redis took them.
    outbox: outbox::Outbox,
    /// Held by the one task writing the outbox.
    draining: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.codec.prefix())
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Connects lazily (nothing is sent until first used). Needs a running Tokio runtime.
    pub(crate) fn new(config: &FleetConfig, profile: Profile) -> Result<Self, ConfigError> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::invalid(
                "fleet",
                "fleet mode needs a running Tokio runtime when the layer is built",
            ));
        }
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| ConfigError::invalid("redis URL", e.to_string()))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout.max(Duration::from_millis(250))))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_max_delay(config.max_reconnect_backoff)
            .set_number_of_retries(2);
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| ConfigError::invalid("redis", e.to_string()))?;
        Ok(Fleet {
            codec: Codec::new(&config.secret, &profile.id),
            conn,
            client,
            config: config.clone(),
            profile,
            replica: random_u64(),
            failing_until: AtomicU64::new(0),
            started: Instant::now(),
            connected: AtomicBool::new(false),
            floor: AtomicU64::new(0),
            outbox: outbox::Outbox::default(),
            draining: tokio::sync::Mutex::new(()),
        })
    }

    /// The local cache key of a token's bytes: HMAC-SHA256 with the fleet secret.
    pub(crate) fn hash(&self, token: &[u8]) -> TokenHash {
        self.codec.hash_of(token)
    }

    /// The local cache key of a raw token string.
    pub(crate) fn hash_str(&self, token: &str) -> TokenHash {
        self.codec.hash_of(token.as_bytes())
    }

    /// The answer for a token the local tiers did not have: the shared tier's, another
    /// replica's (after waiting on its lease), or `ask`'s (the gateway), written back.
    pub(crate) async fn answer<F>(&self, hash: TokenHash, ask: F) -> Answer
    where
        F: Future<Output = Result<Decision, GatewayError>>,
    {
        let cap = self.disconnected_cap();
        if !self.outbox.is_empty() {
            // A change made here has not reached Redis yet: the gateway decides, and
            // nothing is shared (the answer's epoch could not be compared with it).
            tracing::debug!("fleet: shared tier skipped while an invalidation is on its way to Redis");
            return Answer {
                verdict: ask.await,
                cap,
            };
        }
        let Some(found) = self.lookup(&hash).await else {
            // Redis unavailable: exactly as without fleet mode.
            return Answer {
                verdict: ask.await,
                cap,
            };
        };
        let epoch = match found {
            Lookup::Found(shared) => {
                telemetry::fleet_lookup("hit");
                return shared_answer(shared, cap);
            }
            Lookup::Missing { epoch } => epoch,
        };
        match self.take_lease(&hash).await {
            Some(false) => {
                // Another replica is asking the gateway: wait for its answer, boundedly.
                if let Some(shared) = self.wait_for_answer(&hash).await {
                    telemetry::fleet_lease("waited");
                    return shared_answer(shared, cap);
                }
                telemetry::fleet_lease("timed_out");
            }
            Some(true) => telemetry::fleet_lease("won"),
            None => {}
        }
        let verdict = ask.await;
        self.write_back(&hash, &verdict, epoch).await;
        Answer { verdict, cap }
    }

    /// The lifetime cap while the invalidation channel is not subscribed.
    pub(crate) fn disconnected_cap(&self) -> Option<Duration> {
        (!self.connected.load(Ordering::Acquire)).then_some(self.config.disconnected_ttl)
    }

    /// True while the invalidation channel is subscribed and re-synced.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Runs a Redis operation under the request-path timeout and the failure breaker: `None`
    /// when Redis is skipped, slow or failing (logged and counted).
    async fn bounded<T, Fut>(&self, what: &'static str, op: Fut) -> Option<T>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let now = self.millis_since_start();
        if now < self.failing_until.load(Ordering::Acquire) {
            return None;
        }
        let outcome = tokio::time::timeout(self.config.timeout, op).await;
        match outcome {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.trip(what, &error.to_string());
                None
            }
            Err(_) => {
                self.trip(what, "timed out");
                None
            }
        }
    }

    /// After a failure, skip Redis on the request path for a second.
    fn trip(&self, what: &'static str, error: &str) {
        let until = self.millis_since_start() + 1000;
        let previous = self.failing_until.swap(until, Ordering::AcqRel);
        if previous < self.millis_since_start() {
            tracing::warn!(
                operation = what,
                error,
                "fleet: Redis unavailable; going on without it for 1 s"
            );
        }
        telemetry::fleet_error(what);
    }

    fn millis_since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A shared verdict as the local tiers take it: an allowed grant lives locally no longer than
/// its shared entry (nor than `cap`).
fn shared_answer(shared: Shared, cap: Option<Duration>) -> Answer {
    match shared {
        Shared::Allowed { grant, remaining } => Answer {
            verdict: Ok(Decision::Allowed(grant)),
            cap: Some(cap.map_or(remaining, |c| c.min(remaining))),
        },
        Shared::Rejected => Answer {
            verdict: Ok(Decision::InvalidToken),
            cap,
        },
    }
}

/// A random replica id (no new dependency: the standard library's randomly keyed hasher).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
