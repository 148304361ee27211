//! The per-thread front cache: a small, 4-way set-associative table per thread that answers
//! hot tokens without touching the shared moka cache (a moka hit costs about as much as the
//! rest of the hit path together). It holds copies of entries moka holds, with the same
//! deadline, tagged with the cache's id and the invalidation generation, so every
//! invalidation empties it on every thread at once.

use std::cell::RefCell;
use std::time::Instant;

use super::Entry;
use crate::token::TokenHash;

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

/// A non-zero word from the digest and the verifier, compared before the whole slot (the
/// same token in two verifiers, two layers of one app, has two tags).
fn tag(verifier: u64, hash: &TokenHash) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(word) ^ verifier.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// `read` of the front-cache entry for `hash`, if this thread has one for this verifier and
/// generation that is still before its deadline (and `read` takes it). The entry is lent, not
/// cloned: a hit copies only what it keeps, so that it writes as few reference counts as it
/// can (counts that other threads serving the same token write too).
pub(crate) fn get<T>(
    verifier: u64,
    generation: u64,
    hash: &TokenHash,
    now: Instant,
    read: impl FnOnce(&Entry) -> Option<T>,
) -> Option<T> {
    FRONT.with(|front| {
        let front = front.try_borrow().ok()?;
        let set = set_of(hash);
        let tag = tag(verifier, hash);
        // Every way whose tag matches: a tag alone does not tell two slots apart.
        let ways = front.tags.get(set)?;
        let entry = (0..FRONT_WAYS).filter(|&way| ways[way] == tag).find_map(|way| {
            let slot = front.slots.get(set * FRONT_WAYS + way)?.as_ref()?;
            (slot.holds(verifier, hash) && slot.generation == generation && now < slot.entry.deadline)
                .then_some(&slot.entry)
        })?;
        read(entry)
    })
}

/// Remembers an entry in this thread's front cache: it replaces the same token's slot, or
/// becomes the set's most recent entry (the others move down a way, the oldest is dropped).
/// The slot holds its own copy of the principal (see [`Principal::unshared_copy`]).
///
/// [`Principal::unshared_copy`]: crate::principal::Principal::unshared_copy
pub(crate) fn put(verifier: u64, generation: u64, hash: TokenHash, mut entry: Entry) {
    entry.principal = entry.principal.unshared_copy();
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
        let tag = tag(verifier, &hash);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{Grant, Principal};
    use std::time::{Duration, SystemTime};

    /// A copy of the entry [`get`] lends.
    fn got(verifier: u64, generation: u64, hash: &TokenHash, now: Instant) -> Option<Entry> {
        get(verifier, generation, hash, now, |entry| Some(entry.clone()))
    }

    fn entry(client: &str, deadline: Instant) -> Entry {
        let principal = Principal::from_grant(Grant::new(client, SystemTime::now() + Duration::from_secs(60)));
        Entry {
            verified_at: None,
            principal,
            deadline,
            stamp: 0,
            refresh: None,
            graceful: true,
            meters: None,
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
            put(7, 0, *t, entry(name, later));
        }
        for (t, name) in tokens.iter().zip(names).take(4) {
            assert_eq!(client(got(7, 0, t, now)).as_deref(), Some(name));
        }
        put(7, 0, tokens[4], entry("e", later));
        assert_eq!(client(got(7, 0, &tokens[0], now)), None, "oldest dropped");
        for (t, name) in tokens.iter().zip(names).skip(1) {
            assert_eq!(client(got(7, 0, t, now)).as_deref(), Some(name));
        }
        let b = tokens[1];
        // Another verifier, another generation, or a passed deadline never hit.
        assert!(got(8, 0, &b, now).is_none());
        assert!(got(7, 1, &b, now).is_none());
        assert!(got(7, 0, &b, later).is_none());
        // Storing a token again replaces its own slot, not its neighbour's.
        put(7, 0, b, entry("b2", later));
        for (t, name) in tokens.iter().zip(names).skip(2) {
            assert_eq!(client(got(7, 0, t, now)).as_deref(), Some(name));
        }
        assert_eq!(client(got(7, 0, &b, now)).as_deref(), Some("b2"));
    }

    #[test]
    fn one_token_in_two_verifiers_hits_in_both() {
        // Two layers of one app, one client token: each layer's slot must be found, not
        // only the one stored last.
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let t = TokenHash::of("oat_two_layers");
        put(21, 0, t, entry("first", later));
        put(22, 0, t, entry("second", later));
        for _ in 0..3 {
            assert_eq!(
                got(21, 0, &t, now)
                    .map(|e| e.principal.client_id().to_string())
                    .as_deref(),
                Some("first")
            );
            assert_eq!(
                got(22, 0, &t, now)
                    .map(|e| e.principal.client_id().to_string())
                    .as_deref(),
                Some("second")
            );
        }
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
        put(9, 0, a, entry("a", later));
        assert!(got(9, 0, &b, now).is_none());
        assert!(got(9, 0, &a, now).is_some());
    }
}
