//! Cache building blocks under the [`Verifier`](crate::Verifier):
//!
//! * [`front_get`] / [`front_put`]: a small per-thread, 4-way set-associative front cache that answers
//!   hot tokens without touching the shared moka cache (measured: a moka hit costs about as
//!   much as the rest of the hit path together). It holds copies of entries moka holds, with
//!   the same deadline, tagged with the verifier's id and invalidation generation, so an
//!   `invalidate` (which bumps the generation) is seen by every thread at once.
//! * [`DigestHasher`]: moka's internal hasher over a SHA-256 digest, which is already uniformly
//!   distributed: its first 8 bytes are the hash (no SipHash pass).
//! * [`Interner`]: shares the strings and sets that repeat across tokens (client ids, issuer,
//!   audience, scope and permission sets), so each cached principal carries little of its own.
//! * [`Generations`]: which cached answers an invalidation has voided.
//! * [`weight`]: what a cached principal costs, for the cache's byte budget.

mod generations;

pub(crate) use generations::Generations;

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::principal::Principal;
use crate::token::TokenHash;

/// A verified token as cached: the principal, when to stop serving it, and (with
/// refresh-ahead) when to re-verify it in the background.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) principal: Principal,
    /// `min(insertion + ttl, token expiry)`.
    pub(crate) deadline: Instant,
    /// The invalidation generation when the gateway call that produced it started.
    pub(crate) stamp: u64,
    pub(crate) refresh: Option<Arc<Refresh>>,
}

/// Refresh-ahead state of one entry: shared by every copy, so one request claims it.
pub(crate) struct Refresh {
    pub(crate) at: Instant,
    started: AtomicBool,
}

impl Refresh {
    pub(crate) fn new(at: Instant) -> Self {
        Refresh {
            at,
            started: AtomicBool::new(false),
        }
    }

    /// True for exactly one caller once the refresh time has come.
    pub(crate) fn claim(&self) -> bool {
        !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::AcqRel)
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.at && !self.started.load(Ordering::Relaxed)
    }
}

impl Entry {
    /// The refresh handle if a background re-verification is due and not yet claimed.
    pub(crate) fn refresh_due(&self, now: Instant) -> Option<&Arc<Refresh>> {
        self.refresh.as_ref().filter(|r| r.due(now))
    }
}

/// Sets per thread; each set holds the four most recently stored tokens that map to it
/// (4-way set associative: with 64 hot tokens, a 2-way cache had a fifth of them in sets of
/// three or more, which then missed on every request; at 4 ways that needs five tokens in
/// one set of 128).
const FRONT_SETS: usize = 128;
const FRONT_WAYS: usize = 4;

struct Slot {
    verifier: u64,
    generation: u64,
    hash: TokenHash,
    entry: Entry,
}

impl Slot {
    fn holds(&self, verifier: u64, hash: &TokenHash) -> bool {
        self.verifier == verifier && self.hash == *hash
    }
}

/// One thread's front cache. A probe reads the set's four tags (one cache line for two
/// sets) and touches a slot only when a tag matches.
struct Front {
    /// Per set and way: [`tag`] of the slot's token, 0 when the way is empty. Ways are kept
    /// most recently stored first.
    tags: Vec<[u64; FRONT_WAYS]>,
    slots: Vec<Option<Slot>>,
}

thread_local! {
    static FRONT: RefCell<Front> = const {
        RefCell::new(Front {
            tags: Vec::new(),
            slots: Vec::new(),
        })
    };
}

/// The set of `hash` (its last byte; the tag uses the first eight).
fn set_of(hash: &TokenHash) -> usize {
    usize::from(hash.as_bytes()[31]) % FRONT_SETS
}

/// A non-zero word from the digest, compared before the whole slot.
fn tag(hash: &TokenHash) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(word) | 1
}

/// The front-cache entry for `hash`, if this thread has one for this verifier and generation
/// that is still before its deadline.
pub(crate) fn front_get(verifier: u64, generation: u64, hash: &TokenHash, now: Instant) -> Option<Entry> {
    FRONT.with(|front| {
        let front = front.try_borrow().ok()?;
        let set = set_of(hash);
        let tag = tag(hash);
        let way = front.tags.get(set)?.iter().position(|&t| t == tag)?;
        let slot = front.slots.get(set * FRONT_WAYS + way)?.as_ref()?;
        (slot.holds(verifier, hash) && slot.generation == generation && now < slot.entry.deadline)
            .then(|| slot.entry.clone())
    })
}

/// Remembers an entry in this thread's front cache: it replaces the same token's slot, or
/// becomes the set's most recent entry (the others move down a way, the oldest is dropped).
pub(crate) fn front_put(verifier: u64, generation: u64, hash: TokenHash, entry: Entry) {
    FRONT.with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        let front = &mut *front;
        if front.tags.is_empty() {
            front.tags = vec![[0; FRONT_WAYS]; FRONT_SETS];
            front.slots.resize_with(FRONT_SETS * FRONT_WAYS, || None);
        }
        let set = set_of(&hash);
        let tag = tag(&hash);
        let (Some(tags), Some(slots)) = (
            front.tags.get_mut(set),
            front.slots.get_mut(set * FRONT_WAYS..(set + 1) * FRONT_WAYS),
        ) else {
            return;
        };
        let slot = Some(Slot {
            verifier,
            generation,
            hash,
            entry,
        });
        match slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.holds(verifier, &hash)))
        {
            Some(way) => slots[way] = slot,
            None => {
                slots.rotate_right(1);
                tags.rotate_right(1);
                slots[0] = slot;
                tags[0] = tag;
            }
        }
    });
}

/// `BuildHasher` for maps keyed by [`TokenHash`]: see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DigestHasher;

/// The hasher built by [`DigestHasher`].
#[derive(Default)]
pub(crate) struct DigestState(u64);

impl BuildHasher for DigestHasher {
    type Hasher = DigestState;
    fn build_hasher(&self) -> DigestState {
        DigestState(0)
    }
}

impl Hasher for DigestState {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `TokenHash` (which calls `write_u64`): fold bytes in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Estimated bytes a cached principal holds: fixed overhead (the entry, the principal, moka's
/// bookkeeping) plus every string it carries, shared or not (interning makes the real cost
/// lower, never higher). A cache of principals weighed by this stays within its byte budget
/// whatever the gateway answers.
pub(crate) fn estimated_bytes(principal: &Principal) -> usize {
    const FIXED: usize = 320;
    const PER_STRING: usize = 16;
    let strings = |set: &crate::principal::StringSet| set.iter().map(|s| s.len() + PER_STRING).sum::<usize>();
    let grant = principal.grant();
    FIXED
        + grant.client_id.as_str().len()
        + strings(&grant.scopes)
        + strings(&grant.permissions)
        + grant.issuer.as_deref().map_or(0, str::len)
        + grant.oauth_resource.as_deref().map_or(0, str::len)
        + match &grant.granted_resource {
            Some(crate::principal::ResourceUrn::Other(raw)) => raw.len(),
            _ => 0,
        }
}

/// moka weight of a cached principal under a byte budget shared with an entry limit: its
/// estimated bytes, but at least `budget / max_entries`, so that both limits hold with one
/// moka capacity (the budget).
pub(crate) fn weight(principal: &Principal, min_weight: u64) -> u32 {
    let bytes = u64::try_from(estimated_bytes(principal)).unwrap_or(u64::MAX);
    u32::try_from(bytes.max(min_weight)).unwrap_or(u32::MAX)
}

/// Upper bound of distinct values the interner keeps before starting over (values already
/// handed out stay valid: they are reference counted).
const INTERNER_LIMIT: usize = 4096;

/// Shares repeated strings and string sets between principals.
#[derive(Default)]
pub(crate) struct Interner {
    strings: Mutex<HashSet<Arc<str>>>,
    sets: Mutex<HashSet<Arc<[Box<str>]>>>,
}

impl Interner {
    pub(crate) fn string(&self, s: Arc<str>) -> Arc<str> {
        intern(&self.strings, s)
    }

    pub(crate) fn set(&self, s: Arc<[Box<str>]>) -> Arc<[Box<str>]> {
        intern(&self.sets, s)
    }
}

fn intern<T: ?Sized + Eq + std::hash::Hash>(table: &Mutex<HashSet<Arc<T>>>, value: Arc<T>) -> Arc<T> {
    let mut table = table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = table.get(&value) {
        return Arc::clone(existing);
    }
    if table.len() >= INTERNER_LIMIT {
        table.clear();
    }
    table.insert(Arc::clone(&value));
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{ClientId, DeploymentId, Grant, RequestId, StringSet};
    use std::time::{Duration, SystemTime};

    fn entry(client: &str, deadline: Instant) -> Entry {
        let principal = Principal::from_grant(Grant {
            client_id: ClientId::new(client),
            granted_resource: None,
            scopes: StringSet::default(),
            permissions: StringSet::default(),
            expires_at: SystemTime::now() + Duration::from_secs(60),
            oauth_resource: None,
            issuer: None,
            deployment_id: DeploymentId(1),
            owner_user_id: None,
            request_id: RequestId::new("req_1"),
        });
        Entry {
            principal,
            deadline,
            stamp: 0,
            refresh: None,
        }
    }

    /// Different tokens whose digests fall into the same set.
    fn colliding<const N: usize>() -> [TokenHash; N] {
        let mut found = Vec::new();
        let mut i = 0u32;
        while found.len() < N {
            let h = TokenHash::of(&format!("oat_{i}"));
            if found.is_empty() || set_of(&h) == set_of(&found[0]) {
                found.push(h);
            }
            i += 1;
        }
        std::array::from_fn(|k| found[k])
    }

    #[test]
    fn four_tokens_share_a_set_and_the_oldest_of_five_is_dropped() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let tokens: [TokenHash; 5] = colliding();
        let client = |e: Option<Entry>| e.map(|e| e.principal.client_id().to_string());
        let names = ["a", "b", "c", "d", "e"];
        for (t, name) in tokens.iter().zip(names).take(4) {
            front_put(7, 0, *t, entry(name, later));
        }
        for (t, name) in tokens.iter().zip(names).take(4) {
            assert_eq!(client(front_get(7, 0, t, now)).as_deref(), Some(name));
        }
        front_put(7, 0, tokens[4], entry("e", later));
        assert_eq!(client(front_get(7, 0, &tokens[0], now)), None, "oldest dropped");
        for (t, name) in tokens.iter().zip(names).skip(1) {
            assert_eq!(client(front_get(7, 0, t, now)).as_deref(), Some(name));
        }
        let b = tokens[1];
        // Another verifier, another generation, or a passed deadline never hit.
        assert!(front_get(8, 0, &b, now).is_none());
        assert!(front_get(7, 1, &b, now).is_none());
        assert!(front_get(7, 0, &b, later).is_none());
        // Storing a token again replaces its own slot, not its neighbour's.
        front_put(7, 0, b, entry("b2", later));
        for (t, name) in tokens.iter().zip(names).skip(2) {
            assert_eq!(client(front_get(7, 0, t, now)).as_deref(), Some(name));
        }
        assert_eq!(client(front_get(7, 0, &b, now)).as_deref(), Some("b2"));
    }

    #[test]
    fn a_tag_match_alone_is_not_a_hit() {
        // Two digests with the same first eight bytes and last byte (same set and tag).
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let a = TokenHash::of("oat_a");
        let mut bytes = *a.as_bytes();
        bytes[20] ^= 0xff;
        let b = TokenHash::from_bytes(bytes);
        front_put(9, 0, a, entry("a", later));
        assert!(front_get(9, 0, &b, now).is_none());
        assert!(front_get(9, 0, &a, now).is_some());
    }
}
