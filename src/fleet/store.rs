//! The Redis side of fleet mode: one round trip per lookup (a Lua script reading the answer,
//! the rejection, the void markers and the epoch together), the lease, write-back, and the
//! shared state behind invalidations.
//!
//! Keys under the profile prefix `wacht:<profile>:`:
//!
//! | key | holds | lifetime |
//! | --- | --- | --- |
//! | `a:<hash>` | hash: `v` the sealed answer (with its own deadline, which wins over the key's expiry), `c` its client id (must match the sealed one) | `min(ttl, expires_at − now)` |
//! | `n:<hash>` | the sealed rejection | `negative_ttl` |
//! | `l:<hash>` | the lease of the replica asking the gateway | the longest gateway call |
//! | `v:<hash>` | the epoch of the token's last invalidation | longer than any answer in flight |
//! | `vc:<client id>` | the epoch of the client's last invalidation | same |
//! | `floor` | the epoch of the last invalidate-all | none |
//! | `epoch` | the fleet's invalidation counter | none |
//! | `denied` | set of denied client ids (under a prefix without the format version: denials outlive upgrades) | none |
//!
//! An answer records the epoch read before its gateway call; a reader refuses it when a void
//! marker, the client's marker or the floor is newer: an answer that was in flight during an
//! invalidation anywhere in the fleet is never served.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;

use super::{Event, Fleet};
use crate::gateway::{Decision, GatewayError};
use crate::principal::Grant;
use crate::telemetry;
use crate::token::TokenHash;

/// What the shared tier knows of a token.
pub(crate) enum Lookup {
    /// A shared verdict.
    Found(Shared),
    /// Nothing usable; `epoch` is the fleet's epoch now, to stamp a fresh answer with.
    Missing { epoch: u64 },
}

/// A verdict another replica shared.
pub(crate) enum Shared {
    /// A verified grant, with the shared entry's remaining lifetime.
    Allowed { grant: Box<Grant>, remaining: Duration },
    /// The gateway rejected it (within `negative_ttl`).
    Rejected,
}

/// KEYS: answer, rejection, token void, floor, epoch. ARGV: client void key prefix.
/// Returns: answer value, answer client, rejection, token void, floor, epoch, client void,
/// answer PTTL (as text).
/// Key kinds of the JWT session and token-id denials: sorted sets of ids scored by when each
/// denial ends.
const DENIED_SESSIONS: &str = "denied-sid";
const DENIED_TOKEN_IDS: &str = "denied-jti";
/// How long a JWT session or token-id denial is kept: as long as a replica keeps one (the
/// longest a Wacht access token lives, plus the largest leeway).
const JWT_DENIAL_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60 + 300);
/// Most denials of each kind kept in Redis (a replica keeps as many); past it the ones that
/// end soonest go first.
const MAX_JWT_DENIALS: isize = 100_000;

/// Members of a sorted set with their scores.
type ScoredIds = Vec<(String, f64)>;

/// What a replica re-reads when it (re)subscribes to the invalidation channel.
#[derive(Debug, Default)]
pub(crate) struct SharedView {
    /// The shared client deny set.
    pub(crate) denied_clients: Vec<String>,
    /// The invalidate-all floor.
    pub(crate) floor: u64,
    /// Live JWT session denials, each with when it ends.
    pub(crate) denied_sessions: Vec<(String, SystemTime)>,
    /// Live JWT token-id denials, each with when it ends.
    pub(crate) denied_token_ids: Vec<(String, SystemTime)>,
}

const LOOKUP: &str = r"
local a = redis.call('HMGET', KEYS[1], 'v', 'c')
local cv = false
if a[2] then cv = redis.call('GET', ARGV[1] .. a[2]) end
return {a[1], a[2], redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3]),
        redis.call('GET', KEYS[4]), redis.call('GET', KEYS[5]), cv,
        tostring(redis.call('PTTL', KEYS[1]))}
";

/// KEYS: epoch, void marker, then keys to delete. ARGV: marker lifetime (ms). Returns the new
/// epoch.
const VOID: &str = r"
local e = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], e, 'PX', ARGV[1])
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return e
";

/// KEYS: epoch, floor. Returns the new epoch, now the floor.
const FLOOR: &str = r"
local e = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], e)
return e
";

fn epoch_of(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Fleet {
    /// One round trip: what the shared tier holds for `hash`. `None` when Redis is
    /// unavailable or answers something unreadable.
    pub(crate) async fn lookup(&self, hash: &TokenHash) -> Option<Lookup> {
        let answer_key = self.codec.token_redis_key("a", hash);
        let rejection_key = self.codec.token_redis_key("n", hash);
        let script = Script::new(LOOKUP);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&answer_key)
            .key(&rejection_key)
            .key(self.codec.token_redis_key("v", hash))
            .key(self.codec.key("floor", ""))
            .key(self.codec.key("epoch", ""))
            .arg(self.codec.key("vc", ""));
        let mut conn = self.conn.clone();
        let values: Vec<Option<Vec<u8>>> = self
            .bounded("lookup", async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let [answer, client, rejection, token_void, floor, epoch, client_void, pttl] =
            <[Option<Vec<u8>>; 8]>::try_from(values).ok()?;
        let epoch_now = epoch_of(epoch.as_deref());
        let newest_void = epoch_of(token_void.as_deref()).max(epoch_of(floor.as_deref()));
        if let Some(value) = answer {
            // The client field (which picks the client's void marker) must name the sealed
            // answer's client: rewritten, it would dodge an `invalidate_client`.
            let sealed = self
                .codec
                .decode_answer(&answer_key, &value)
                .filter(|stored| client.as_deref() == Some(stored.grant.client_id.as_str().as_bytes()));
            match sealed {
                Some(stored) if stored.epoch >= newest_void.max(epoch_of(client_void.as_deref())) => {
                    // Redis's expiry can be extended by anyone who can write to it; the
                    // sealed deadline cannot.
                    let now = SystemTime::now();
                    let sealed_left = stored.valid_until.duration_since(now).unwrap_or(Duration::ZERO);
                    let remaining = Duration::from_millis(epoch_of(pttl.as_deref())).min(sealed_left);
                    if !remaining.is_zero() && stored.grant.expires_at > now {
                        return Some(Lookup::Found(Shared::Allowed {
                            grant: Box::new(stored.grant),
                            remaining,
                        }));
                    }
                }
                Some(_) => {}
                None => {
                    tracing::warn!(
                        key = answer_key,
                        "fleet: ignored a shared answer whose tag does not verify, or whose client field was changed"
                    );
                    telemetry::fleet_lookup("bad_mac");
                }
            }
        }
        if let Some(value) = rejection {
            match self.codec.decode_rejection(&rejection_key, &value) {
                Some(stamped) if stamped >= newest_void => return Some(Lookup::Found(Shared::Rejected)),
                Some(_) => {}
                None => {
                    tracing::warn!(
                        key = rejection_key,
                        "fleet: ignored a shared rejection whose tag does not verify"
                    );
                    telemetry::fleet_lookup("bad_mac");
                }
            }
        }
        telemetry::fleet_lookup("miss");
        Some(Lookup::Missing { epoch: epoch_now })
    }

    /// Takes the token's lease for this replica: `Some(true)` taken, `Some(false)` another
    /// replica holds it, `None` Redis unavailable.
    pub(crate) async fn take_lease(&self, hash: &TokenHash) -> Option<bool> {
        let key = self.codec.token_redis_key("l", hash);
        let ms = millis(self.profile.call_bound);
        let mut conn = self.conn.clone();
        let replica = self.replica;
        let taken: Option<String> = self
            .bounded("lease", async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(replica)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Some(taken.is_some())
    }

    /// Polls for the answer of the replica holding the lease, at most `lease_wait`.
    pub(crate) async fn wait_for_answer(&self, hash: &TokenHash) -> Option<Shared> {
        let deadline = tokio::time::Instant::now() + self.config.lease_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            tokio::time::sleep(pause).await;
            match self.lookup(hash).await? {
                Lookup::Missing { .. } => {}
                Lookup::Found(shared) => return Some(shared),
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return None;
            }
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// Shares the gateway's verdict (an allowed grant, or the 401), stamped with `epoch`, and
    /// releases the lease. Rate limits and errors are not shared.
    pub(crate) async fn write_back(&self, hash: &TokenHash, verdict: &Result<Decision, GatewayError>, epoch: u64) {
        let mut pipe = redis::pipe();
        pipe.atomic();
        match verdict {
            Ok(Decision::Allowed(grant)) => {
                let left = grant
                    .expires_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                let lifetime = self.profile.ttl.min(left);
                if lifetime.is_zero() {
                    return;
                }
                let key = self.codec.token_redis_key("a", hash);
                let value = self
                    .codec
                    .encode_answer(&key, grant, epoch, SystemTime::now() + lifetime);
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("v")
                    .arg(value)
                    .arg("c")
                    .arg(grant.client_id.as_str())
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(millis(lifetime)).ignore();
            }
            Ok(Decision::InvalidToken) => {
                // The newest verdict wins: an approval another replica shared earlier (its
                // lease waiter then asked the gateway itself) must not outlive this 401.
                pipe.cmd("DEL").arg(self.codec.token_redis_key("a", hash)).ignore();
                if !self.profile.negative_ttl.is_zero() {
                    let key = self.codec.token_redis_key("n", hash);
                    let value = self.codec.encode_rejection(&key, epoch);
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(millis(self.profile.negative_ttl))
                        .ignore();
                }
            }
            _ => {}
        }
        pipe.cmd("DEL").arg(self.codec.token_redis_key("l", hash)).ignore();
        let mut conn = self.conn.clone();
        let _: Option<()> = self
            .bounded("write", async move { pipe.query_async(&mut conn).await })
            .await;
    }

    /// How long a void marker must outlive the answers it voids.
    fn void_lifetime(&self) -> u64 {
        millis(self.profile.ttl + self.profile.call_bound + Duration::from_secs(5))
    }

    /// Queues a change made on this replica for the shared state (see `outbox`): call it
    /// before the local effect, so that from then on this replica's misses skip the shared
    /// tier until the change is written; then `drain`.
    pub(crate) fn enqueue(&self, event: Event) {
        self.outbox.push(event);
    }

    /// Writes the queued changes to Redis and publishes them, oldest first, each forgotten
    /// once Redis took it. False if Redis failed (the rest stays queued for the next
    /// heartbeat or reconnect). One drainer at a time: with `wait`, waits for a running one
    /// (then writes what is left); without, leaves the work to it. A drainer that ends looks
    /// again, so a change queued as it finished is not left behind.
    pub(crate) async fn drain(&self, wait: bool) -> bool {
        loop {
            let one_at_a_time = if wait {
                self.draining.lock().await
            } else {
                match self.draining.try_lock() {
                    Ok(guard) => guard,
                    Err(_) => return false,
                }
            };
            while let Some(queued) = self.outbox.front() {
                if !self.write_shared(&queued.event).await {
                    return false;
                }
                self.outbox.written(&queued);
            }
            drop(one_at_a_time);
            if self.outbox.is_empty() {
                return true;
            }
        }
    }

    /// The Redis writes of one change, then its event: true if Redis took all of them.
    async fn write_shared(&self, event: &Event) -> bool {
        let written = match event {
            Event::Heartbeat => true,
            Event::Token(hash) => {
                let keys = [
                    self.codec.key("epoch", ""),
                    self.codec.token_redis_key("v", hash),
                    self.codec.token_redis_key("a", hash),
                    self.codec.token_redis_key("n", hash),
                ];
                self.void(&keys).await
            }
            Event::Client(id) => self.void_client(id).await,
            Event::All => self.raise_floor().await,
            Event::Deny(id) => self.deny_set("deny", "SADD", id).await && self.void_client(id).await,
            Event::Allow(id) => self.deny_set("allow", "SREM", id).await,
            Event::DenySession(id) => self.record_jwt_denial(DENIED_SESSIONS, id).await,
            Event::DenyTokenId(id) => self.record_jwt_denial(DENIED_TOKEN_IDS, id).await,
        };
        written && self.publish(event).await
    }

    /// Voids one client's shared answers.
    async fn void_client(&self, client_id: &str) -> bool {
        let keys = [self.codec.key("epoch", ""), self.codec.key("vc", client_id)];
        self.void(&keys).await
    }

    /// Voids every shared answer: raises the floor to a new epoch.
    async fn raise_floor(&self) -> bool {
        let script = Script::new(FLOOR);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.codec.key("epoch", ""))
            .key(self.codec.key("floor", ""));
        let mut conn = self.conn.clone();
        let floor: Option<u64> = self
            .shared_state(
                "invalidate_all",
                async move { invocation.invoke_async(&mut conn).await },
            )
            .await;
        if let Some(floor) = floor {
            self.floor.fetch_max(floor, std::sync::atomic::Ordering::AcqRel);
        }
        floor.is_some()
    }

    /// Adds a client to the shared deny set (`SADD`) or removes it (`SREM`).
    async fn deny_set(&self, what: &'static str, command: &'static str, client_id: &str) -> bool {
        let key = self.codec.denials_key("denied");
        let id = client_id.to_owned();
        let mut conn = self.conn.clone();
        let done: Option<()> = self
            .shared_state(what, async move {
                redis::cmd(command).arg(key).arg(id).query_async(&mut conn).await
            })
            .await;
        done.is_some()
    }

    /// Records a JWT session or token-id denial in Redis, so that a replica that starts or
    /// reconnects later knows it. (JWT verdicts are not in the shared tier: nothing to void.)
    async fn record_jwt_denial(&self, kind: &str, id: &str) -> bool {
        let key = self.codec.denials_key(kind);
        let id = id.to_owned();
        let now = unix_millis(SystemTime::now());
        let until = now.saturating_add(millis(JWT_DENIAL_LIFETIME));
        let mut conn = self.conn.clone();
        let done: Option<()> = self
            .shared_state("deny", async move {
                redis::pipe()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(until)
                    .arg(id)
                    .ignore()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(now)
                    .ignore()
                    .cmd("ZREMRANGEBYRANK")
                    .arg(&key)
                    .arg(0)
                    .arg(-(MAX_JWT_DENIALS + 1))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(millis(JWT_DENIAL_LIFETIME))
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await;
        done.is_some()
    }

    /// The shared deny set, the invalidate-all floor and the live JWT session and token-id
    /// denials, for a replica that (re)subscribes.
    pub(crate) async fn shared_view(&self) -> redis::RedisResult<SharedView> {
        let mut conn = self.conn.clone();
        let now = unix_millis(SystemTime::now());
        let (denied_clients, floor, sessions, token_ids): (Vec<String>, Option<u64>, ScoredIds, ScoredIds) =
            redis::pipe()
                .cmd("SMEMBERS")
                .arg(self.codec.denials_key("denied"))
                .cmd("GET")
                .arg(self.codec.key("floor", ""))
                .cmd("ZRANGEBYSCORE")
                .arg(self.codec.denials_key(DENIED_SESSIONS))
                .arg(now)
                .arg("+inf")
                .arg("WITHSCORES")
                .cmd("ZRANGEBYSCORE")
                .arg(self.codec.denials_key(DENIED_TOKEN_IDS))
                .arg(now)
                .arg("+inf")
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
        // Whatever Redis holds, a denial lasts no longer than one made here would.
        let latest = SystemTime::now() + JWT_DENIAL_LIFETIME;
        let until = |(id, score): (String, f64)| {
            let at = Duration::try_from_secs_f64(score / 1000.0).map_or(latest, |d| UNIX_EPOCH + d);
            (id, at.min(latest))
        };
        Ok(SharedView {
            denied_clients,
            floor: floor.unwrap_or(0),
            denied_sessions: sessions.into_iter().map(until).collect(),
            denied_token_ids: token_ids.into_iter().map(until).collect(),
        })
    }

    /// Publishes an event on the profile's channel.
    pub(crate) async fn publish(&self, event: &Event) -> bool {
        let channel = self.codec.channel();
        let message = self.codec.encode_event(&channel, self.replica, event);
        let mut conn = self.conn.clone();
        let sent: Option<i64> = self
            .shared_state("publish", async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        if sent.is_some() && *event != Event::Heartbeat {
            telemetry::fleet_event("sent");
        }
        sent.is_some()
    }

    async fn void(&self, keys: &[String]) -> bool {
        let script = Script::new(VOID);
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(self.void_lifetime());
        let mut conn = self.conn.clone();
        let voided: Option<u64> = self
            .shared_state("invalidate", async move { invocation.invoke_async(&mut conn).await })
            .await;
        voided.is_some()
    }

    /// A change of shared state (invalidations, the deny set): not on the request path, so a
    /// longer bound than lookups, and not skipped by the breaker; failures are logged (the
    /// local effect has happened already, and the outbox keeps the change to send again).
    async fn shared_state<T, Fut>(&self, what: &'static str, op: Fut) -> Option<T>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(Duration::from_secs(2), op).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::warn!(operation = what, error = %error, "fleet: could not update the shared state");
                telemetry::fleet_error(what);
                None
            }
            Err(_) => {
                tracing::warn!(operation = what, "fleet: updating the shared state timed out");
                telemetry::fleet_error(what);
                None
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
