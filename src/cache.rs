//! Cache building blocks under the [`Verifier`](crate::Verifier):
//!
//! * [`front_get`] / [`front_put`]: a small per-thread, direct-mapped front cache that answers
//!   hot tokens without touching the shared moka cache (measured: a moka hit costs about as
//!   much as the rest of the hit path together). It holds copies of entries moka holds, with
//!   the same deadline, tagged with the verifier's id and invalidation generation, so an
//!   `invalidate` (which bumps the generation) is seen by every thread at once.
//! * [`DigestHasher`]: moka's internal hasher over a SHA-256 digest, which is already uniformly
//!   distributed: its first 8 bytes are the hash (no SipHash pass).
//! * [`Interner`]: shares the strings and sets that repeat across tokens (client ids, issuer,
//!   audience, scope and permission sets), so each cached principal carries little of its own.

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

/// Number of slots per thread (a power of two).
const FRONT_SLOTS: usize = 128;

struct Slot {
    verifier: u64,
    generation: u64,
    hash: TokenHash,
    entry: Entry,
}

thread_local! {
    static FRONT: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

fn index(hash: &TokenHash) -> usize {
    usize::from(hash.as_bytes()[31]) % FRONT_SLOTS
}

/// The front-cache entry for `hash`, if this thread has one for this verifier and generation
/// that is still before its deadline.
pub(crate) fn front_get(verifier: u64, generation: u64, hash: &TokenHash, now: Instant) -> Option<Entry> {
    FRONT.with(|front| {
        let front = front.try_borrow().ok()?;
        let slot = front.get(index(hash))?.as_ref()?;
        (slot.verifier == verifier && slot.generation == generation && slot.hash == *hash && now < slot.entry.deadline)
            .then(|| slot.entry.clone())
    })
}

/// Remembers an entry in this thread's front cache.
pub(crate) fn front_put(verifier: u64, generation: u64, hash: TokenHash, entry: Entry) {
    FRONT.with(|front| {
        let Ok(mut front) = front.try_borrow_mut() else {
            return;
        };
        if front.is_empty() {
            front.resize_with(FRONT_SLOTS, || None);
        }
        if let Some(slot) = front.get_mut(index(&hash)) {
            *slot = Some(Slot {
                verifier,
                generation,
                hash,
                entry,
            });
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
