//! Invalidations by log position: what a replica has read from the change log that voids
//! shared answers stamped before it, kept while such an answer can still live.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::token::TokenHash;

/// Most void records kept; past it, older answers are voided wholesale (safe, costlier).
pub(crate) const MAX_VOIDS: usize = 65_536;

/// Invalidations by log position, kept while an answer stamped before them can still live.
#[derive(Debug)]
pub(crate) struct Voids {
    tokens: HashMap<TokenHash, u64>,
    clients: HashMap<String, u64>,
    /// Answers stamped below this are void (invalidate-all, a reset, or pruning past the
    /// bound).
    floor: u64,
    order: VecDeque<(Instant, u64, Subject)>,
    keep: Duration,
}

#[derive(Debug)]
enum Subject {
    Token(TokenHash),
    Client(String),
}

impl Voids {
    pub(crate) fn new(keep: Duration) -> Self {
        Voids {
            tokens: HashMap::new(),
            clients: HashMap::new(),
            floor: 0,
            order: VecDeque::new(),
            keep,
        }
    }

    pub(crate) fn covers(&self, stamp: u64, hash: &TokenHash, client: &str) -> bool {
        stamp < self.floor
            || self.tokens.get(hash).is_some_and(|v| stamp < *v)
            || self.clients.get(client).is_some_and(|v| stamp < *v)
    }

    pub(crate) fn token(&mut self, hash: TokenHash, seq: u64, now: Instant) {
        self.prune(now);
        self.tokens.insert(hash, seq);
        self.order.push_back((now, seq, Subject::Token(hash)));
    }

    pub(crate) fn client(&mut self, client: &str, seq: u64, now: Instant) {
        self.prune(now);
        self.clients.insert(client.to_owned(), seq);
        self.order.push_back((now, seq, Subject::Client(client.to_owned())));
    }

    pub(crate) fn all(&mut self, seq: u64) {
        self.reset(seq);
    }

    pub(crate) fn reset(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
        self.tokens.clear();
        self.clients.clear();
        self.order.clear();
    }

    /// Forgets records older than `keep`; past the bound, voids everything up to the oldest
    /// record dropped.
    fn prune(&mut self, now: Instant) {
        while let Some((at, seq, _)) = self.order.front() {
            let expired = now.duration_since(*at) >= self.keep;
            if !expired && self.order.len() < MAX_VOIDS {
                break;
            }
            if !expired {
                self.floor = self.floor.max(*seq);
            }
            let Some((_, seq, subject)) = self.order.pop_front() else {
                break;
            };
            // A later record of the same subject stays.
            match subject {
                Subject::Token(hash) => {
                    if self.tokens.get(&hash) == Some(&seq) {
                        self.tokens.remove(&hash);
                    }
                }
                Subject::Client(id) => {
                    if self.clients.get(&id) == Some(&seq) {
                        self.clients.remove(&id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_voids_are_forgotten_and_too_many_raise_the_floor() {
        let mut voids = Voids::new(Duration::from_millis(10));
        let t0 = Instant::now();
        let hash = TokenHash::of("oat_x");
        voids.token(hash, 5, t0);
        assert!(voids.covers(4, &hash, "c"));
        voids.client("c", 6, t0 + Duration::from_millis(20));
        assert!(!voids.covers(4, &hash, "d"), "the token's record expired");
        let mut voids = Voids::new(Duration::from_secs(600));
        for seq in 0..(MAX_VOIDS as u64 + 10) {
            voids.client(&format!("c{seq}"), seq, t0);
        }
        assert!(voids.order.len() <= MAX_VOIDS);
        assert!(
            voids.covers(3, &hash, "unrelated"),
            "pruned past the bound: void wholesale"
        );
    }
}
