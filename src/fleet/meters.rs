//! The fleet's rate-limit meters (see [`rate_limit`](crate::rate_limit)): each replica adds
//! the requests it served from cache to one Redis hash per meter and window, in batches, and
//! reads back the fleet's count and the highest gateway report.
//!
//! | key | holds | lifetime |
//! | --- | --- | --- |
//! | `m:<meter>:<window>` | `n`: requests the replicas served in the window; `s`: the most any gateway answer reported used | two windows |
//!
//! `<meter>` is a keyed hash of the meter's subject and rule: no credential, no id in clear.
//! The counts are not sealed: a writer to Redis can change them, as it can delete any key;
//! what it gains is at most the limits' worth of requests (the gateway still counts misses).

use super::Fleet;
use crate::telemetry;

/// A replica's batch for one meter: requests served in a window, and the gateway's highest
/// report of what was used there.
#[derive(Debug, Clone)]
pub(crate) struct MeterAdd<'a> {
    pub(crate) meter: &'a str,
    pub(crate) window: u64,
    pub(crate) window_ms: u64,
    pub(crate) served: u64,
    pub(crate) seen: u64,
}

/// KEYS: one hash per meter and window. ARGV: per key, the requests to add, the gateway's
/// report, the key's lifetime in ms. Returns, per key, the fleet's count and highest report.
const ADD: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local served = tonumber(ARGV[3 * i - 2])
  local seen = tonumber(ARGV[3 * i - 1])
  local n = redis.call('HINCRBY', key, 'n', served)
  local s = tonumber(redis.call('HGET', key, 's') or '0')
  if seen > s then
    redis.call('HSET', key, 's', seen)
    s = seen
  end
  redis.call('PEXPIRE', key, ARGV[3 * i])
  out[i] = {n, s}
end
return out
";

mod scripts {
    use std::sync::LazyLock;

    use redis::Script;

    pub(super) static ADD: LazyLock<Script> = LazyLock::new(|| Script::new(super::ADD));
}

impl Fleet {
    /// Runs a metering operation bounded by the fleet's timeout. Unlike the shared tier's
    /// operations, a failure here does not make the request path skip Redis: metering and
    /// revocation do not wait on each other.
    async fn on_the_side<T, Fut>(&self, what: &'static str, op: Fut) -> Option<T>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.config.timeout, op).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::debug!(operation = what, %error, "fleet: a metering call failed");
                telemetry::fleet_error(what);
                None
            }
            Err(_) => {
                tracing::debug!(operation = what, "fleet: a metering call timed out");
                telemetry::fleet_error(what);
                None
            }
        }
    }

    /// The store's name of a meter (its subject and rule), keyed with the fleet secret.
    pub(crate) fn meter_name(&self, meter: &str) -> Box<str> {
        super::codec::hex(self.codec.hash_of(meter.as_bytes()).as_bytes()).into()
    }

    /// Adds every batch in one round trip; per batch, the fleet's count and highest gateway
    /// report. `None` when Redis did not take them.
    pub(crate) async fn add_to_meters(&self, adds: &[MeterAdd<'_>]) -> Option<Vec<(u64, u64)>> {
        if adds.is_empty() {
            return Some(Vec::new());
        }
        let mut invocation = scripts::ADD.prepare_invoke();
        for add in adds {
            invocation
                .key(self.codec.key("m", &format!("{}:{}", add.meter, add.window)))
                .arg(add.served)
                .arg(add.seen)
                .arg(add.window_ms.saturating_mul(2).max(1000));
        }
        let mut conn = self.conn.clone();
        let counts: Vec<(u64, u64)> = self
            .on_the_side("meters", async move { invocation.invoke_async(&mut conn).await })
            .await?;
        (counts.len() == adds.len()).then_some(counts)
    }
}

/// The rules an app's scheme has on a route, as a gateway answer named them
/// (`<label>=<limit>` joined by `,`), sealed, in `rb:<app>` under the route's field, for ten
/// minutes: a replica that got a credential from the shared tier learns its route's
/// rules from here rather than from the gateway.
const RULE_BOOK_TTL_MS: u64 = 600_000;

impl Fleet {
    fn rule_book_key(&self, app: &str) -> String {
        self.codec.key("rb", &self.meter_name(app))
    }

    /// Writes the rules of `app` on `route` (both as the store names them: keyed hashes).
    pub(crate) async fn put_rules(&self, app: &str, route: &str, rules: &[(std::sync::Arc<str>, u64)]) {
        let text: Vec<String> = rules.iter().map(|(label, limit)| format!("{label}={limit}")).collect();
        let field = self.meter_name(route);
        let sealed = self.codec.seal_text(&format!("rb:{field}"), &text.join(","));
        let key = self.rule_book_key(app);
        let mut conn = self.conn.clone();
        let _: Option<()> = self
            .on_the_side("rules", async move {
                redis::pipe()
                    .hset(&key, &*field, sealed)
                    .ignore()
                    .pexpire(&key, RULE_BOOK_TTL_MS as i64)
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await;
    }

    /// The rules of `app` on `route`, if a replica wrote them lately: `Some(None)` when none
    /// did (or what is there does not verify), `None` when Redis did not answer.
    pub(crate) async fn rules(&self, app: &str, route: &str) -> Option<Option<Vec<(String, u64)>>> {
        let field = self.meter_name(route);
        let key = self.rule_book_key(app);
        let mut conn = self.conn.clone();
        let field_name = field.clone();
        let sealed: Option<String> = self
            .on_the_side("rules", async move {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(&*field_name)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let Some(sealed) = sealed else {
            return Some(None);
        };
        let Some(text) = self.codec.open_text(&format!("rb:{field}"), &sealed) else {
            telemetry::fleet_event("refused");
            return Some(None);
        };
        let rules = text
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (label, limit) = r.rsplit_once('=')?;
                Some((label.to_owned(), limit.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>();
        Some(rules)
    }
}
