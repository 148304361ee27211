//! The shared tier: one round trip per lookup (a Lua script reading the answer, the
//! rejection, the lease and the log's head together), the lease, and write-back.
//!
//! | key | holds | lifetime |
//! | --- | --- | --- |
//! | `a:<hash>` | the sealed answer, stamped with the log's incarnation and position when its gateway call started, and with its own deadline (which wins over the key's expiry) | `min(ttl, expires_at − now)` |
//! | `n:<hash>` | the sealed rejection, stamped likewise | `negative_ttl` |
//! | `l:<hash>` | the lease of the replica asking the gateway | the longest gateway call |
//!
//! A reader uses a shared verdict only if it has applied the log up to the head read with it
//! and no change logged after the verdict's stamp covers it (its own view, not a key in
//! Redis, judges that: deleting or rewriting keys cannot undo an invalidation).

use std::time::{Duration, SystemTime};

use super::Fleet;
use super::records::{Incarnation, Stamp};
use crate::gateway::{Decision, GatewayError};
use crate::principal::Grant;
use crate::telemetry;
use crate::token::TokenHash;

/// What the shared tier knows of a token.
pub(crate) enum Lookup {
    /// A shared verdict.
    Found(Shared),
    /// Nothing usable; the stamp a fresh answer gets (`None`: Redis has no log, so nothing
    /// is shared until it does).
    Missing { stamp: Option<Stamp> },
}

/// A verdict another replica shared.
pub(crate) enum Shared {
    /// A verified grant, with the shared entry's remaining lifetime.
    Allowed { grant: Box<Grant>, remaining: Duration },
    /// The gateway rejected it (within `negative_ttl`).
    Rejected,
}

/// KEYS: answer, rejection, lease, head. Returns: answer, rejection, lease held (1/0), the
/// head's incarnation and seq, the answer's PTTL. (Whether Redis restarted since the head
/// was written, so that it may hold an older snapshot, is not asked here: a restart drops
/// the channel's connection, and the shared tier is not used until the channel has re-read
/// the log, which asks.)
const LOOKUP: &str = r"#!lua flags=no-writes
local inc, seq = false, false
if redis.call('TYPE', KEYS[4])['ok'] == 'hash' then
  local h = redis.call('HMGET', KEYS[4], 'inc', 'seq')
  inc, seq = h[1], h[2]
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('EXISTS', KEYS[3]),
        inc, seq, redis.call('PTTL', KEYS[1])}
";

/// A found lookup: what Redis holds for a token, and the head it read with it.
struct Found {
    answer: Option<Vec<u8>>,
    rejection: Option<Vec<u8>>,
    leased: bool,
    head: Option<Stamp>,
    pttl: i64,
}

/// The scripts, hashed once (`EVALSHA`, falling back to `EVAL` when Redis does not know them).
mod scripts {
    use std::sync::LazyLock;

    use redis::Script;

    pub(super) static LOOKUP: LazyLock<Script> = LazyLock::new(|| Script::new(super::LOOKUP));
}

impl Fleet {
    /// One round trip: what the shared tier holds for `hash`, judged by this replica's view.
    /// `None` when Redis is unavailable or answers something unreadable.
    pub(crate) async fn lookup(&self, hash: &TokenHash) -> Option<Lookup> {
        Some(self.judge(hash, self.read_token(hash).await?))
    }

    async fn read_token(&self, hash: &TokenHash) -> Option<Found> {
        let mut invocation = scripts::LOOKUP.prepare_invoke();
        invocation
            .key(self.codec.token_key("a", hash))
            .key(self.codec.token_key("n", hash))
            .key(self.codec.token_key("l", hash))
            .key(self.codec.head_key());
        let mut conn = self.conn.clone();
        type Reply = (
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            i64,
            Option<String>,
            Option<String>,
            i64,
        );
        let (answer, rejection, leased, inc, seq, pttl): Reply = self
            .bounded("lookup", async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let head = match (
            inc.as_deref().and_then(Incarnation::from_hex),
            seq.and_then(|s| s.parse().ok()),
        ) {
            (Some(incarnation), Some(seq)) => Some(Stamp { incarnation, seq }),
            _ => None,
        };
        Some(Found {
            answer,
            rejection,
            leased: leased == 1,
            head,
            pttl,
        })
    }

    /// A shared verdict is usable only if this replica has applied the log up to the head
    /// read with it, and nothing logged after its stamp voids it.
    fn judge(&self, hash: &TokenHash, found: Found) -> Lookup {
        let Some(head) = found.head else {
            return Lookup::Missing { stamp: None };
        };
        let caught_up = {
            let view = self.view();
            view.head
                .as_ref()
                .is_some_and(|mine| mine.incarnation == head.incarnation && mine.seq == head.seq)
        };
        if !caught_up {
            // The log moved on since this replica read it (or Redis's head is not one this
            // replica can vouch for): read it now, let the gateway decide this one, and share
            // nothing (a stamp is only ever a head this replica has applied).
            self.wake.notify_one();
            return Lookup::Missing { stamp: None };
        }
        if let Some(value) = found.answer {
            let key = self.codec.token_key("a", hash);
            match self.codec.decode_answer(&key, &value) {
                Some(stored) if self.view().answer_is_current(stored.stamp, hash, Some(&stored.grant)) => {
                    // Redis's expiry can be extended by anyone who can write to it; the
                    // sealed deadline cannot.
                    let now = SystemTime::now();
                    let sealed_left = stored.valid_until.duration_since(now).unwrap_or(Duration::ZERO);
                    let pttl = Duration::from_millis(u64::try_from(found.pttl).unwrap_or(0));
                    let remaining = pttl.min(sealed_left);
                    if !remaining.is_zero() && stored.grant.expires_at > now {
                        return Lookup::Found(Shared::Allowed {
                            grant: Box::new(stored.grant),
                            remaining,
                        });
                    }
                }
                Some(_) => {}
                None => {
                    tracing::warn!(key, "fleet: ignored a shared answer whose tag does not verify");
                    telemetry::fleet_lookup("bad_mac");
                }
            }
        }
        if let Some(value) = found.rejection {
            let key = self.codec.token_key("n", hash);
            match self.codec.decode_rejection(&key, &value) {
                Some(stamp) if self.view().answer_is_current(stamp, hash, None) => {
                    return Lookup::Found(Shared::Rejected);
                }
                Some(_) => {}
                None => {
                    tracing::warn!(key, "fleet: ignored a shared rejection whose tag does not verify");
                    telemetry::fleet_lookup("bad_mac");
                }
            }
        }
        telemetry::fleet_lookup("miss");
        Lookup::Missing { stamp: Some(head) }
    }

    /// Takes the token's lease for this replica: `Some(true)` taken, `Some(false)` another
    /// replica holds it, `None` Redis unavailable.
    pub(crate) async fn take_lease(&self, hash: &TokenHash) -> Option<bool> {
        let key = self.codec.token_key("l", hash);
        let ms = super::millis(self.profile.call_bound);
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

    /// Polls for the answer of the replica holding the lease, at most `lease_wait`, and no
    /// longer than it holds the lease (it lets go when done, whatever it got).
    pub(crate) async fn wait_for_answer(&self, hash: &TokenHash) -> Option<Shared> {
        let deadline = tokio::time::Instant::now() + self.config.lease_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            tokio::time::sleep(pause).await;
            let found = self.read_token(hash).await?;
            let leased = found.leased;
            match self.judge(hash, found) {
                Lookup::Found(shared) => return Some(shared),
                Lookup::Missing { .. } if !leased => return None,
                Lookup::Missing { .. } => {}
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return None;
            }
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// Shares the gateway's verdict (an allowed grant, or the 401), stamped with `stamp`, and
    /// releases the lease. Rate limits and errors are not shared; nothing is shared while
    /// Redis has no log (`stamp` is `None`).
    pub(crate) async fn write_back(
        &self,
        hash: &TokenHash,
        verdict: &Result<Decision, GatewayError>,
        stamp: Option<Stamp>,
    ) {
        let mut pipe = redis::pipe();
        pipe.atomic();
        match (verdict, stamp) {
            (Ok(Decision::Allowed(grant)), Some(stamp)) => {
                let left = grant
                    .expires_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                let lifetime = self.profile.ttl.min(left);
                if !lifetime.is_zero() {
                    let key = self.codec.token_key("a", hash);
                    let value = self
                        .codec
                        .encode_answer(&key, grant, stamp, SystemTime::now() + lifetime);
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(super::millis(lifetime))
                        .ignore();
                }
            }
            (Ok(Decision::InvalidToken), Some(stamp)) => {
                // The newest verdict wins: an approval another replica shared earlier (its
                // lease waiter then asked the gateway itself) must not outlive this 401.
                pipe.cmd("DEL").arg(self.codec.token_key("a", hash)).ignore();
                if !self.profile.negative_ttl.is_zero() {
                    let key = self.codec.token_key("n", hash);
                    let value = self.codec.encode_rejection(&key, stamp);
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(super::millis(self.profile.negative_ttl))
                        .ignore();
                }
            }
            _ => {}
        }
        pipe.cmd("DEL").arg(self.codec.token_key("l", hash)).ignore();
        let mut conn = self.conn.clone();
        let _: Option<()> = self
            .bounded("write", async move { pipe.query_async(&mut conn).await })
            .await;
    }
}
