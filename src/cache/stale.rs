//! The outage grace (`stale_if_error`): principals kept past their entry, served only while
//! the gateway is unavailable, for a bounded time, never past the token's expiry, never after
//! an invalidation or a refusal.

use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;

use super::{DigestHasher, Entry, Generations, weight};
use crate::principal::Principal;
use crate::token::TokenHash;

/// A principal kept for the outage grace, and until when it may be served.
#[derive(Clone)]
struct StaleEntry {
    principal: Principal,
    until: Instant,
    /// The generation stamp of the answer it was made from.
    stamp: u64,
}

/// The grace cache and its length.
pub(crate) struct OutageGrace {
    cache: Cache<TokenHash, StaleEntry, DigestHasher>,
    grace: Duration,
}

impl OutageGrace {
    /// A grace of `grace` after each entry's end, within a byte budget weighed like the
    /// decision cache's.
    pub(crate) fn new(grace: Duration, ttl: Duration, max_bytes: u64, min_weight: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_key, entry: &StaleEntry| weight(&entry.principal, min_weight))
            .time_to_live(ttl + grace)
            .support_invalidation_closures()
            .build_with_hasher(DigestHasher);
        OutageGrace { cache, grace }
    }

    /// Keeps a verified principal until `grace` after its entry ends (never past the token's
    /// own expiry).
    pub(crate) async fn keep(&self, hash: TokenHash, entry: &Entry) {
        if !entry.graceful {
            return;
        }
        let token_left = entry
            .principal
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let until = (entry.deadline + self.grace).min(Instant::now() + token_left);
        let kept = StaleEntry {
            principal: entry.principal.clone(),
            until,
            stamp: entry.stamp,
        };
        self.cache.insert(hash, kept).await;
    }

    /// A principal still inside its grace whose answer no invalidation has voided.
    pub(crate) async fn get(&self, hash: &TokenHash, generations: &Generations) -> Option<Principal> {
        let entry = self.cache.get(hash).await?;
        let usable = Instant::now() < entry.until
            && SystemTime::now() < entry.principal.expires_at()
            && generations.is_current(hash, &entry.principal, entry.stamp);
        usable.then_some(entry.principal)
    }

    pub(crate) async fn invalidate(&self, hash: &TokenHash) {
        self.cache.invalidate(hash).await;
    }

    /// Drops the principals that match (every read also checks the generations, so this only
    /// frees memory sooner).
    pub(crate) fn invalidate_where(&self, matches: impl Fn(&Principal) -> bool + Send + Sync + 'static) {
        if self
            .cache
            .invalidate_entries_if(move |_, entry| matches(&entry.principal))
            .is_err()
        {
            self.cache.invalidate_all();
        }
    }

    pub(crate) fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    pub(crate) async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}
