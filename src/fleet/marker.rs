//! The shared-secret check. Replicas of one profile whose fleet secrets differ land in
//! different namespaces of the same Redis and share nothing: no answers, no invalidations, no
//! denials, silently. So each replica writes a keyed fingerprint of its secret to a key that
//! depends on the profile only (`wacht-fleet:<profile digest>:secrets`, a hash of fingerprint
//! → last seen), and logs an error naming the mismatch when it finds another fingerprint seen
//! recently: at start, on every reconnect, and every 30 heartbeats.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::Fleet;
use super::records::unix_millis;

/// A fingerprint not refreshed for this long belongs to replicas gone (or rotated away).
const RECENT: Duration = Duration::from_secs(10 * 60);

impl Fleet {
    /// Writes this replica's fingerprint and looks for others; `announce` logs what it found
    /// even when nothing changed since the last check.
    pub(crate) async fn check_secret(&self, announce: bool) {
        let key = self.codec.marker_key().to_owned();
        let mine = self.codec.fingerprint().to_owned();
        let now = unix_millis(SystemTime::now());
        let mut conn = self.conn.clone();
        let seen: redis::RedisResult<std::collections::HashMap<String, u64>> = async {
            let seen: std::collections::HashMap<String, u64> =
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
            // Written after the read, and allowed to fail (a Redis refusing writes still
            // shows the others).
            let _: redis::RedisResult<()> = redis::pipe()
                .cmd("HSET")
                .arg(&key)
                .arg(&mine)
                .arg(now)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(u64::try_from(RECENT.as_millis()).unwrap_or(u64::MAX) * 6)
                .ignore()
                .query_async(&mut conn)
                .await;
            Ok(seen)
        }
        .await;
        let Ok(seen) = seen else { return };
        let recent = u64::try_from(RECENT.as_millis()).unwrap_or(u64::MAX);
        let others: Vec<String> = seen
            .into_iter()
            .filter(|(fingerprint, at)| *fingerprint != mine && now.saturating_sub(*at) < recent)
            .map(|(fingerprint, _)| fingerprint)
            .collect();
        let before = self.foreign_secrets.swap(others.len(), Ordering::Relaxed);
        if !others.is_empty() && (announce || before != others.len()) {
            tracing::error!(
                this_secret = mine,
                other_secrets = others.join(","),
                "fleet: replicas of this service use another WACHT_FLEET_SECRET on the same Redis: they share no answers, invalidations or denials with this one. Give every replica the same secret."
            );
        }
    }
}
