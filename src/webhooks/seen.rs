//! [`Seen`]: the `webhook-id`s of the deliveries handled lately, so that a replay (or a retry
//! of a delivery already handled) is acknowledged without acting again. Bounded in time (each id
//! is kept for `keep`, at least the whole replay window) and in memory (ids are kept as their
//! SHA-256; past [`MAX_SEEN`], the oldest is forgotten: a replay of it acts again, which an
//! invalidation or denial allows, only costing gateway calls).

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Most ids remembered.
pub(crate) const MAX_SEEN: usize = 100_000;

/// The ids handled lately.
#[derive(Debug)]
pub(crate) struct Seen {
    inner: Mutex<Inner>,
    keep: Duration,
    max: usize,
}

#[derive(Debug, Default)]
struct Inner {
    ids: HashSet<[u8; 32]>,
    /// In the order seen, to forget the oldest first.
    order: VecDeque<(Instant, [u8; 32])>,
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Seen {
    /// Ids kept for `keep`, at most `max` at once.
    pub(crate) fn new(keep: Duration, max: usize) -> Self {
        Seen {
            inner: Mutex::new(Inner::default()),
            keep,
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True if `id` was handled within `keep`.
    pub(crate) fn contains(&self, id: &str, now: Instant) -> bool {
        let mut inner = self.lock();
        self.forget_expired(&mut inner, now);
        inner.ids.contains(&digest(id))
    }

    /// Remembers that `id` was handled.
    pub(crate) fn insert(&self, id: &str, now: Instant) {
        let mut inner = self.lock();
        self.forget_expired(&mut inner, now);
        let key = digest(id);
        if !inner.ids.insert(key) {
            return;
        }
        inner.order.push_back((now, key));
        while inner.order.len() > self.max {
            if let Some((_, old)) = inner.order.pop_front() {
                inner.ids.remove(&old);
            }
        }
    }

    fn forget_expired(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, key)) = inner.order.front().copied()
            && now.saturating_duration_since(at) >= self.keep
        {
            inner.order.pop_front();
            inner.ids.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_for_their_time_and_within_the_bound() {
        let seen = Seen::new(Duration::from_secs(600), 3);
        let t0 = Instant::now();
        seen.insert("msg_1", t0);
        assert!(seen.contains("msg_1", t0 + Duration::from_secs(599)));
        assert!(!seen.contains("msg_2", t0));
        assert!(!seen.contains("msg_1", t0 + Duration::from_secs(600)), "kept no longer");
        for id in ["a", "b", "c", "d"] {
            seen.insert(id, t0);
        }
        assert!(!seen.contains("a", t0), "the oldest is forgotten past the bound");
        assert!(seen.contains("d", t0) && seen.contains("b", t0));
    }
}
