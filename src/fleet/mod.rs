//! Fleet mode (feature `redis`): a decision tier and an ordered, durable change log shared by
//! every replica of a service, on Redis or Valkey.
//!
//! ```text
//! request ─► per-thread front ─► process (moka) ─► Redis shared tier ─► gateway
//!                                                    │ one gateway call per token per ttl, fleet-wide
//! invalidate / deny / allow ─► outbox ─► one Lua script: records + log entry + notice
//!                                        └► every replica reads the log in order
//! ```
//!
//! * **Shared tier** (`store`). A local miss asks Redis first (one round trip, bounded by
//!   [`FleetConfig::timeout`]). A shared answer is used only if this replica has read the log
//!   up to Redis's head and no change logged after the answer's stamp covers it; otherwise
//!   the gateway decides. Gateway answers are written back for `min(ttl, expires_at − now)`,
//!   401s for `negative_ttl`; rate limits and errors are never shared. When replicas miss one
//!   token at once, the one holding a short lease asks the gateway and the others wait for it,
//!   at most [`FleetConfig::lease_wait`], and no longer than it holds the lease.
//! * **The change log** (`log`, `view`). Every change (invalidate a token, a client or
//!   everything; deny or allow a client; deny a JWT session or token id) is one Lua script
//!   that checks the head it was numbered from, updates the records, appends a sealed entry
//!   to a Redis Stream and publishes a notice. Entries are numbered without gaps and each
//!   names the link of the one before, so a replica reading the log applies every change once
//!   and in order, and tells a replayed, removed or forked entry from the next one. Per
//!   subject, the newest version wins: an allow lifts only the denial it names.
//! * **Redis losing state** (`sync`). Redis's head carries an incarnation; a replica that
//!   finds it missing, changed to an older one, gone backwards or forked drops its local
//!   cache, starts (or adopts) a new incarnation (which voids every shared answer of the old
//!   one) and re-asserts the denials it knows, with their versions and end times.
//! * **Changes Redis refuses** (`writer`, `outbox`). A change is applied here and queued
//!   before it is written; if Redis does not take it, it is announced on the channel (every
//!   heartbeat) so the replicas listening apply what restricts, heartbeats say changes are
//!   pending, and every replica skips the shared tier and caps its entries at
//!   `disconnected_ttl` until it is written. A replica that goes silent with changes pending
//!   has them taken over by the replicas that heard them.
//! * **Safe to share** (`codec`, `records`). Keys hold a keyed hash of the token,
//!   namespaced by the check profile; values, entries, records and notices carry an
//!   HMAC-SHA256 tag made with the fleet secret: anything written without it is ignored and
//!   counted. Every shared answer still goes through this replica's pins and deny lists.
//! * **Without the fleet** (`channel`). A replica that has not heard the fleet for three
//!   heartbeats drops everything it cached and caches for at most `disconnected_ttl`; past
//!   `3 × heartbeat + disconnected_ttl` it serves through the gateway (default) or answers
//!   503 ([`OutOfSync::FailClosed`]). It reconnects with jittered, capped backoff.
//! * **One secret per fleet** (`marker`). Replicas of one profile with different secrets
//!   share nothing; each writes a keyed fingerprint of its secret to a key that does not
//!   depend on the secret, and logs an error when it finds another.

mod bytes;
mod channel;
mod codec;
mod config;
mod log;
mod marker;
mod meters;
mod outbox;
mod records;
mod store;
mod sync;
mod view;
mod voids;
mod writer;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

pub(crate) use self::channel::Replica;
use self::codec::Codec;
pub use self::config::{FleetConfig, MIN_SECRET_LEN, OutOfSync};
pub(crate) use self::meters::MeterAdd;
pub(crate) use self::records::Change;
use self::store::{Lookup, Shared};
use self::view::View;
pub(crate) use self::view::{ClientState, Effect};
pub(crate) use self::writer::Submitted;
use crate::change::QueueReason;
use crate::error::ConfigError;
use crate::gateway::{Decision, GatewayError};
use crate::telemetry;
use crate::token::TokenHash;

/// What the verifier knows of its check profile, for fleet mode.
pub(crate) struct Profile {
    /// Everything that changes a decision: gateway URL, method, resource, pins, ttls.
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
    /// False while the fleet is unheard or degraded: the outage grace may not extend it.
    pub(crate) graceful: bool,
}

/// How this replica stands with the fleet, for health checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStatus {
    /// Subscribed to the notices and reading the change log.
    pub connected: bool,
    /// Some replica (this one included) holds changes Redis has not taken: shared answers
    /// are not used and local entries last at most `disconnected_ttl`.
    pub degraded: bool,
    /// Without the fleet for longer than `3 × heartbeat + disconnected_ttl`.
    pub out_of_sync: bool,
    /// Changes made here that Redis has not taken yet.
    pub pending_changes: usize,
    /// Other fleet secrets seen recently for this profile on this Redis (replicas that share
    /// nothing with this one).
    pub foreign_secrets: usize,
    /// The last change-log position this replica has applied.
    pub log_position: u64,
    /// Notices from other replicas ignored as replayed or stale since this replica started
    /// (someone publishing captured notices again, or clocks more than `3 × heartbeat` + 5 s
    /// apart).
    pub ignored_notices: u64,
}

/// The running fleet tier of one verifier.
pub(crate) struct Fleet {
    codec: Codec,
    conn: redis::aio::ConnectionManager,
    client: redis::Client,
    config: FleetConfig,
    profile: Profile,
    /// This replica, in entries and notices.
    replica: u64,
    /// Notices sent so far (each carries the next number, so a replayed one is told apart).
    notices_sent: AtomicU64,
    /// Skip Redis on the request path until this instant (ms since `started`) after a failure.
    failing_until: AtomicU64,
    started: Instant,
    /// Subscribed and reading the log.
    connected: AtomicBool,
    /// When the fleet was last heard (ms since `started`): the log read and a notice heard.
    last_contact: AtomicU64,
    /// Past the out-of-sync bound with [`OutOfSync::FailClosed`]: every request is refused.
    refusing: AtomicBool,
    foreign_secrets: std::sync::atomic::AtomicUsize,
    /// Notices ignored as replayed or stale.
    ignored_notices: AtomicU64,
    /// What this replica has applied of the log.
    view: Mutex<View>,
    /// One reader or writer of the log at a time.
    protocol: tokio::sync::Mutex<()>,
    /// The changes made here that Redis has not taken yet.
    outbox: outbox::Outbox,
    /// Why the last write failed (a [`QueueReason`] code).
    last_error: AtomicU8,
    /// True while a writer task runs.
    writing: AtomicBool,
    /// Where the next round of repeated announcements starts in the outbox.
    announce_cursor: Mutex<usize>,
    /// Held while a notice is numbered and sent.
    publishing: tokio::sync::Mutex<()>,
    /// True while a round of announcements runs.
    announcing: AtomicBool,
    /// The verifier this tier serves (set when its channel starts).
    owner: OnceLock<Weak<dyn Replica>>,
    /// Asks the channel task to read the log now.
    wake: tokio::sync::Notify,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.codec.prefix())
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Held while reading or writing the log.
pub(crate) type Held<'a> = tokio::sync::MutexGuard<'a, ()>;

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
        let client = config.client()?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout.max(Duration::from_millis(250))))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_max_delay(config.max_reconnect_backoff)
            .set_number_of_retries(2);
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| ConfigError::invalid("redis", e.to_string()))?;
        // Answers live at most ttl after their gateway call, which started at most the call
        // bound before; 5 s covers clock skew between replicas.
        let keep = profile.ttl + profile.call_bound + Duration::from_secs(5);
        Ok(Fleet {
            codec: Codec::new(&config.secret, &profile.id),
            conn,
            client,
            config: config.clone(),
            profile,
            replica: random_u64(),
            notices_sent: AtomicU64::new(0),
            failing_until: AtomicU64::new(0),
            started: Instant::now(),
            connected: AtomicBool::new(false),
            last_contact: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            foreign_secrets: std::sync::atomic::AtomicUsize::new(0),
            ignored_notices: AtomicU64::new(0),
            view: Mutex::new(View::new(keep)),
            protocol: tokio::sync::Mutex::new(()),
            outbox: outbox::Outbox::default(),
            last_error: AtomicU8::new(0),
            writing: AtomicBool::new(false),
            announce_cursor: Mutex::new(0),
            publishing: tokio::sync::Mutex::new(()),
            announcing: AtomicBool::new(false),
            owner: OnceLock::new(),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// This replica as the sender of its next notice.
    fn sender(&self) -> records::Sender {
        records::Sender {
            replica: self.replica,
            counter: self.notices_sent.fetch_add(1, Ordering::Relaxed) + 1,
            sent_at: records::unix_millis(std::time::SystemTime::now()),
        }
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The local cache key of a token's bytes: HMAC-SHA256 with the fleet secret.
    pub(crate) fn hash(&self, token: &[u8]) -> TokenHash {
        self.codec.hash_of(token)
    }

    /// The local cache key of a raw token string.
    pub(crate) fn hash_str(&self, token: &str) -> TokenHash {
        self.codec.hash_of(token.as_bytes())
    }

    /// True if the fleet denies `client` as far as this replica knows (denied in the log, or
    /// announced and not yet written).
    pub(crate) fn denies(&self, client: &str) -> bool {
        matches!(
            self.view().client(client),
            Some(ClientState::Denied { .. } | ClientState::Pending { .. })
        )
    }

    /// The clients the fleet denies as far as this replica knows.
    pub(crate) fn denied_clients(&self) -> Vec<String> {
        self.view().denied_clients().into_iter().map(|(id, _)| id).collect()
    }

    /// What this replica knows of a client's fleet-wide state.
    pub(crate) fn client_state(&self, client: &str) -> Option<ClientState> {
        self.view().client(client)
    }

    /// The answer for a token the local tiers did not have: the shared tier's, another
    /// replica's (after waiting on its lease), or `ask`'s (the gateway), written back.
    /// The cap and grace of a gateway answer asked for outside the shared tier: none while
    /// the fleet is settled, the disconnected bound (and no grace) otherwise, as
    /// [`answer`](Self::answer) gives.
    pub(crate) fn unshared_bounds(&self) -> (Option<Duration>, bool) {
        if self.is_connected() && !self.is_degraded() {
            (None, true)
        } else {
            (Some(self.config.disconnected_ttl), false)
        }
    }

    pub(crate) async fn answer<F>(&self, hash: TokenHash, ask: F) -> Answer
    where
        F: Future<Output = Result<Decision, GatewayError>>,
    {
        let settled = self.is_connected() && !self.is_degraded();
        let (cap, graceful) = if settled {
            (None, true)
        } else {
            (Some(self.config.disconnected_ttl), false)
        };
        if !settled {
            // Without the fleet, or with changes not yet in Redis: Redis may hold answers a
            // change voids that this replica cannot see, so the gateway decides.
            return Answer {
                verdict: ask.await,
                cap,
                graceful,
            };
        }
        let Some(found) = self.lookup(&hash).await else {
            // Redis unavailable: exactly as without fleet mode.
            return Answer {
                verdict: ask.await,
                cap,
                graceful,
            };
        };
        let stamp = match found {
            Lookup::Found(shared) => {
                telemetry::fleet_lookup("hit");
                return shared_answer(shared);
            }
            Lookup::Missing { stamp } => stamp,
        };
        match self.take_lease(&hash).await {
            Some(false) => {
                // Another replica is asking the gateway: wait for its answer, boundedly.
                if let Some(shared) = self.wait_for_answer(&hash).await {
                    telemetry::fleet_lease("waited");
                    return shared_answer(shared);
                }
                telemetry::fleet_lease("timed_out");
            }
            Some(true) => telemetry::fleet_lease("won"),
            None => {}
        }
        let verdict = ask.await;
        self.write_back(&hash, &verdict, stamp).await;
        Answer { verdict, cap, graceful }
    }

    /// True while subscribed to the notices and reading the change log.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// True while a change is pending here, or another replica says one is pending there.
    fn is_degraded(&self) -> bool {
        !self.outbox.is_empty() || self.view().others_pending(Instant::now(), self.config.heartbeat * 3)
    }

    /// True while this replica must refuse every request ([`OutOfSync::FailClosed`], past
    /// the bound).
    pub(crate) fn refuses_requests(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// How this replica stands with the fleet.
    pub(crate) fn status(&self) -> FleetStatus {
        let view = self.view();
        FleetStatus {
            connected: self.is_connected(),
            degraded: !self.outbox.is_empty() || view.others_pending(Instant::now(), self.config.heartbeat * 3),
            out_of_sync: self
                .millis_since_start()
                .saturating_sub(self.last_contact.load(Ordering::Acquire))
                > millis(self.config.out_of_sync_after()),
            pending_changes: self.outbox.len(),
            foreign_secrets: self.foreign_secrets.load(Ordering::Relaxed),
            log_position: view.seq(),
            ignored_notices: self.ignored_notices.load(Ordering::Relaxed),
        }
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
        match tokio::time::timeout(self.config.timeout, op).await {
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

    /// Records why a write failed.
    fn set_last_error(&self, reason: QueueReason) {
        let code = match reason {
            QueueReason::RedisUnavailable => 0,
            QueueReason::RedisRefusedWrite => 1,
            _ => 2,
        };
        self.last_error.store(code, Ordering::Relaxed);
    }

    /// Why the last write failed.
    fn last_error(&self) -> QueueReason {
        match self.last_error.load(Ordering::Relaxed) {
            0 => QueueReason::RedisUnavailable,
            1 => QueueReason::RedisRefusedWrite,
            _ => QueueReason::Resyncing,
        }
    }

    /// The verifier this tier serves, if it still runs.
    fn owner(&self) -> Option<std::sync::Arc<dyn Replica>> {
        self.owner.get().and_then(Weak::upgrade)
    }

    /// Applies effects to the verifier's local tiers.
    async fn apply_effects(&self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        let Some(owner) = self.owner() else { return };
        for effect in effects {
            owner.apply(effect).await;
            telemetry::fleet_event("applied");
        }
    }
}

/// A shared verdict as the local tiers take it: an allowed grant lives locally no longer than
/// its shared entry.
fn shared_answer(shared: Shared) -> Answer {
    match shared {
        Shared::Allowed { grant, remaining } => Answer {
            verdict: Ok(Decision::Allowed(grant)),
            cap: Some(remaining),
            graceful: true,
        },
        Shared::Rejected => Answer {
            verdict: Ok(Decision::InvalidToken),
            cap: None,
            graceful: true,
        },
    }
}

/// Milliseconds of a duration, at least 1.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A random id (no new dependency: the standard library's randomly keyed hasher).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
