//! This replica's view of the change log: the head it has applied (incarnation, sequence
//! number, link, stream id), the version of every client record it knows, the voids that
//! judge shared answers, and the changes other replicas announced but Redis has not taken.
//!
//! Applying follows one rule per subject: **the newest version wins**. A denial carries the
//! version it was made at (its log position); an allow lifts only the denial version it
//! names, so an allow made before a newer denial, replayed, or queued behind a partition never
//! lifts it. A denial that is announced but not yet written (`Pending`) is lifted by nothing.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use super::codec::Link;
use super::records::{Change, Entry, Incarnation, Stamp, from_unix_millis};
use crate::token::TokenHash;

/// Most void records kept; past it, older answers are voided wholesale (safe, costlier).
const MAX_VOIDS: usize = 65_536;
/// Most client records kept (denied and allowed ones; allowed ones are forgotten first).
const MAX_CLIENTS: usize = 100_000;
/// Most unwritten changes of other replicas tracked.
const MAX_HEARD: usize = 10_000;

/// The log position this replica has applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) incarnation: Incarnation,
    pub(crate) seq: u64,
    pub(crate) link: Link,
    /// The stream id of the last entry applied (`0-0` before any).
    pub(crate) stream_id: String,
}

/// What this replica knows of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientState {
    Denied {
        version: u64,
    },
    Allowed {
        version: u64,
    },
    /// Denied by a change Redis has not taken yet (made here, or announced by another
    /// replica when this one had applied the log up to `base`).
    Pending {
        base: u64,
    },
}

/// What applying a change does to this replica's local tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    Token(TokenHash),
    Client(String),
    All,
    Deny(String),
    Allow(String),
    DenySession(String, SystemTime),
    DenyTokenId(String, SystemTime),
}

/// An unwritten change another replica announced.
#[derive(Debug)]
struct Heard {
    change: Change,
    last: Instant,
}

/// The view (see the module docs).
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) head: Option<Head>,
    clients: HashMap<String, ClientState>,
    voids: Voids,
    heard: HashMap<(u64, u64), Heard>,
    /// When each other replica was last heard, and whether it said it holds unwritten changes.
    replicas: HashMap<u64, (Instant, bool)>,
}

impl View {
    /// An empty view; voids are kept for `keep` (longer than any shared answer can live).
    pub(crate) fn new(keep: Duration) -> Self {
        View {
            head: None,
            clients: HashMap::new(),
            voids: Voids::new(keep),
            heard: HashMap::new(),
            replicas: HashMap::new(),
        }
    }

    /// The sequence number applied (0 before any).
    pub(crate) fn seq(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.seq)
    }

    /// True if an answer stamped `stamp`, for `client`, is still good by this view: same
    /// incarnation, and no invalidation that covers it was logged after it.
    pub(crate) fn answer_is_current(&self, stamp: Stamp, hash: &TokenHash, client: &str) -> bool {
        self.head.as_ref().is_some_and(|h| h.incarnation == stamp.incarnation)
            && !self.voids.covers(stamp.seq, hash, client)
    }

    /// What this replica knows of `client`.
    pub(crate) fn client(&self, client: &str) -> Option<ClientState> {
        self.clients.get(client).copied()
    }

    /// Every client this replica holds denied (for re-assertion), with its version (0: not
    /// written yet).
    pub(crate) fn denied_clients(&self) -> Vec<(String, u64)> {
        self.clients
            .iter()
            .filter_map(|(id, state)| match state {
                ClientState::Denied { version } => Some((id.clone(), *version)),
                ClientState::Pending { .. } => Some((id.clone(), 0)),
                ClientState::Allowed { .. } => None,
            })
            .collect()
    }

    /// A denial made here, before it is written.
    pub(crate) fn denied_here(&mut self, client: &str) {
        let base = self.seq();
        self.set_client(client, ClientState::Pending { base });
    }

    /// Applies one log entry (already checked to follow the head) and moves the head.
    pub(crate) fn apply_entry(&mut self, entry: &Entry, link: Link, stream_id: String, now: Instant) -> Option<Effect> {
        self.head = Some(Head {
            incarnation: entry.incarnation,
            seq: entry.seq,
            link,
            stream_id,
        });
        self.heard
            .retain(|_, heard| !same_subject(&heard.change, &entry.change));
        self.apply(&entry.change, entry.seq, now)
    }

    /// Applies a change at log position `seq`.
    fn apply(&mut self, change: &Change, seq: u64, now: Instant) -> Option<Effect> {
        match change {
            Change::Token(hash) => {
                self.voids.token(*hash, seq, now);
                Some(Effect::Token(*hash))
            }
            Change::Client(id) => {
                self.voids.client(id, seq, now);
                Some(Effect::Client(id.clone()))
            }
            Change::All => {
                self.voids.all(seq);
                Some(Effect::All)
            }
            Change::Deny { client, version } => {
                let version = if *version == 0 { seq } else { *version };
                let newer = match self.client(client) {
                    None | Some(ClientState::Pending { .. }) => true,
                    Some(ClientState::Denied { version: v } | ClientState::Allowed { version: v }) => v < version,
                };
                if !newer {
                    return None;
                }
                self.set_client(client, ClientState::Denied { version });
                self.voids.client(client, seq, now);
                Some(Effect::Deny(client.clone()))
            }
            Change::Allow { client, lifts } => match self.client(client) {
                Some(ClientState::Denied { version }) if version == *lifts => {
                    self.set_client(client, ClientState::Allowed { version: seq });
                    Some(Effect::Allow(client.clone()))
                }
                None => {
                    self.set_client(client, ClientState::Allowed { version: seq });
                    Some(Effect::Allow(client.clone()))
                }
                // A newer denial, or one waiting to be written: it stays.
                _ => None,
            },
            Change::DenySession { id, until } => Some(Effect::DenySession(id.clone(), from_unix_millis(*until))),
            Change::DenyTokenId { id, until } => Some(Effect::DenyTokenId(id.clone(), from_unix_millis(*until))),
        }
    }

    /// A client record read from Redis's shared state: applied if newer than what is known.
    pub(crate) fn adopt_client(&mut self, client: &str, denied: bool, version: u64) -> Option<Effect> {
        let newer = match self.client(client) {
            None => true,
            Some(ClientState::Denied { version: v } | ClientState::Allowed { version: v }) => v < version,
            Some(ClientState::Pending { .. }) => false,
        };
        if !newer {
            return None;
        }
        if denied {
            self.set_client(client, ClientState::Denied { version });
            Some(Effect::Deny(client.to_owned()))
        } else {
            self.set_client(client, ClientState::Allowed { version });
            Some(Effect::Allow(client.to_owned()))
        }
    }

    /// Moves to a head read from Redis's shared state (first start, after a gap, after
    /// Redis lost state): answers stamped below `floor` can no longer be judged, so they are
    /// void; the voids of the entries after it follow with [`record_void`](Self::record_void).
    pub(crate) fn adopt_head(&mut self, head: Head, floor: u64) {
        self.voids.reset(floor);
        self.head = Some(head);
    }

    /// Records what a change logged at `seq` voids, without applying it.
    pub(crate) fn record_void(&mut self, change: &Change, seq: u64, now: Instant) {
        match change {
            Change::Token(hash) => self.voids.token(*hash, seq, now),
            Change::Client(client) | Change::Deny { client, .. } => self.voids.client(client, seq, now),
            Change::All => self.voids.all(seq),
            Change::Allow { .. } | Change::DenySession { .. } | Change::DenyTokenId { .. } => {}
        }
    }

    /// An unwritten change another replica announced (`base`: the log position it had
    /// applied): applied if it restricts and is not older than what this replica knows.
    /// `None` if it was heard before or does nothing here.
    pub(crate) fn apply_unwritten(
        &mut self,
        from: u64,
        id: u64,
        base: u64,
        change: Change,
        now: Instant,
    ) -> Option<Effect> {
        if let Some(heard) = self.heard.get_mut(&(from, id)) {
            heard.last = now;
            return None;
        }
        if !change.restricts() {
            return None;
        }
        if self.heard.len() >= MAX_HEARD {
            tracing::warn!(
                limit = MAX_HEARD,
                "fleet: too many unwritten changes announced; this one is applied but not watched"
            );
        } else {
            self.heard.insert(
                (from, id),
                Heard {
                    change: change.clone(),
                    last: now,
                },
            );
        }
        match &change {
            Change::Deny { client, .. } => {
                if matches!(self.client(client), Some(ClientState::Allowed { version }) if version > base) {
                    // Allowed after the sender last read the log: the allow is newer.
                    return None;
                }
                if !matches!(self.client(client), Some(ClientState::Denied { .. })) {
                    self.set_client(client, ClientState::Pending { base });
                }
                Some(Effect::Deny(client.clone()))
            }
            Change::Token(hash) => Some(Effect::Token(*hash)),
            Change::Client(id) => Some(Effect::Client(id.clone())),
            Change::All => Some(Effect::All),
            Change::DenySession { id, until } => Some(Effect::DenySession(id.clone(), from_unix_millis(*until))),
            Change::DenyTokenId { id, until } => Some(Effect::DenyTokenId(id.clone(), from_unix_millis(*until))),
            Change::Allow { .. } => None,
        }
    }

    /// A heartbeat of `replica`: alive, and holding unwritten changes or not. A replica that
    /// holds none has written what it announced (the log brings it).
    pub(crate) fn heartbeat(&mut self, replica: u64, pending: bool, now: Instant) {
        self.replicas.insert(replica, (now, pending));
        if !pending {
            self.heard.retain(|(from, _), _| *from != replica);
        }
        if self.replicas.len() > MAX_HEARD {
            self.replicas
                .retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(600));
        }
    }

    /// True while another replica said, within `window`, that it holds unwritten changes.
    pub(crate) fn others_pending(&self, now: Instant, window: Duration) -> bool {
        self.replicas
            .values()
            .any(|(at, pending)| *pending && now.duration_since(*at) <= window)
    }

    /// Unwritten changes whose senders have been silent for `window`: nobody else will write
    /// them, so this replica takes them over. Removed from the watch.
    pub(crate) fn orphans(&mut self, now: Instant, window: Duration) -> Vec<Change> {
        let silent = |replica: &u64| {
            self.replicas
                .get(replica)
                .is_none_or(|(at, _)| now.duration_since(*at) > window)
        };
        let orphaned: Vec<(u64, u64)> = self
            .heard
            .iter()
            .filter(|((from, _), heard)| silent(from) && now.duration_since(heard.last) > window)
            .map(|(key, _)| *key)
            .collect();
        orphaned
            .into_iter()
            .filter_map(|key| self.heard.remove(&key))
            .map(|heard| heard.change)
            .collect()
    }

    fn set_client(&mut self, client: &str, state: ClientState) {
        if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(client) {
            self.clients.retain(|_, s| !matches!(s, ClientState::Allowed { .. }));
        }
        if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(client) {
            tracing::error!(
                limit = MAX_CLIENTS,
                "fleet: too many denied clients; this record is not kept"
            );
            return;
        }
        self.clients.insert(client.to_owned(), state);
    }
}

/// True if `a` and `b` change the same thing (a written denial and the announcement of it).
fn same_subject(a: &Change, b: &Change) -> bool {
    match (a, b) {
        (Change::Deny { client: x, .. }, Change::Deny { client: y, .. }) => x == y,
        (Change::DenySession { id: x, .. }, Change::DenySession { id: y, .. })
        | (Change::DenyTokenId { id: x, .. }, Change::DenyTokenId { id: y, .. }) => x == y,
        _ => a == b,
    }
}

/// Invalidations by log position, kept while an answer stamped before them can still live.
#[derive(Debug)]
struct Voids {
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
    fn new(keep: Duration) -> Self {
        Voids {
            tokens: HashMap::new(),
            clients: HashMap::new(),
            floor: 0,
            order: VecDeque::new(),
            keep,
        }
    }

    fn covers(&self, stamp: u64, hash: &TokenHash, client: &str) -> bool {
        stamp < self.floor
            || self.tokens.get(hash).is_some_and(|v| stamp < *v)
            || self.clients.get(client).is_some_and(|v| stamp < *v)
    }

    fn token(&mut self, hash: TokenHash, seq: u64, now: Instant) {
        self.prune(now);
        self.tokens.insert(hash, seq);
        self.order.push_back((now, seq, Subject::Token(hash)));
    }

    fn client(&mut self, client: &str, seq: u64, now: Instant) {
        self.prune(now);
        self.clients.insert(client.to_owned(), seq);
        self.order.push_back((now, seq, Subject::Client(client.to_owned())));
    }

    fn all(&mut self, seq: u64) {
        self.reset(seq);
    }

    fn reset(&mut self, floor: u64) {
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

    fn entry(seq: u64, change: Change) -> Entry {
        Entry {
            incarnation: Incarnation([1; 16]),
            seq,
            prev: [0; 16],
            replica: 1,
            id: seq,
            change,
        }
    }

    fn apply(view: &mut View, seq: u64, change: Change) -> Option<Effect> {
        view.apply_entry(&entry(seq, change), [0; 16], format!("{seq}-0"), Instant::now())
    }

    fn deny(client: &str, version: u64) -> Change {
        Change::Deny {
            client: client.into(),
            version,
        }
    }

    fn allow(client: &str, lifts: u64) -> Change {
        Change::Allow {
            client: client.into(),
            lifts,
        }
    }

    #[test]
    fn an_allow_lifts_only_the_denial_it_names() {
        let mut view = View::new(Duration::from_secs(60));
        assert_eq!(apply(&mut view, 1, deny("x", 0)), Some(Effect::Deny("x".into())));
        assert_eq!(view.client("x"), Some(ClientState::Denied { version: 1 }));
        assert_eq!(apply(&mut view, 2, deny("x", 0)), Some(Effect::Deny("x".into())));
        // An allow naming the first denial (made before the second) lifts nothing.
        assert_eq!(apply(&mut view, 3, allow("x", 1)), None);
        assert_eq!(view.client("x"), Some(ClientState::Denied { version: 2 }));
        assert_eq!(apply(&mut view, 4, allow("x", 2)), Some(Effect::Allow("x".into())));
        // A denial re-asserted with an older version than the allow does not undo it.
        assert_eq!(apply(&mut view, 5, deny("x", 2)), None);
        assert_eq!(view.client("x"), Some(ClientState::Allowed { version: 4 }));
    }

    #[test]
    fn a_pending_denial_is_lifted_by_nothing_until_written() {
        let mut view = View::new(Duration::from_secs(60));
        apply(&mut view, 1, deny("x", 0));
        view.denied_here("x");
        assert_eq!(apply(&mut view, 2, allow("x", 1)), None);
        assert_eq!(view.client("x"), Some(ClientState::Pending { base: 1 }));
        assert_eq!(apply(&mut view, 3, deny("x", 0)), Some(Effect::Deny("x".into())));
        assert_eq!(view.client("x"), Some(ClientState::Denied { version: 3 }));
    }

    #[test]
    fn unwritten_denials_older_than_an_allow_are_ignored_and_repeats_applied_once() {
        let mut view = View::new(Duration::from_secs(60));
        let now = Instant::now();
        apply(&mut view, 1, deny("x", 0));
        apply(&mut view, 5, allow("x", 1));
        // A replay of a denial announced when the sender had read up to 3.
        assert_eq!(view.apply_unwritten(9, 1, 3, deny("x", 0), now), None);
        assert_eq!(
            view.apply_unwritten(9, 2, 5, deny("x", 0), now),
            Some(Effect::Deny("x".into()))
        );
        assert_eq!(view.apply_unwritten(9, 2, 5, deny("x", 0), now), None, "heard before");
        assert_eq!(
            view.apply_unwritten(9, 3, 5, allow("x", 5), now),
            None,
            "allows wait for the log"
        );
        assert_eq!(view.client("x"), Some(ClientState::Pending { base: 5 }));
    }

    #[test]
    fn orphaned_announcements_are_taken_over_once_their_sender_is_silent() {
        let mut view = View::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let window = Duration::from_millis(300);
        view.heartbeat(9, true, t0);
        view.apply_unwritten(9, 1, 0, deny("x", 0), t0);
        view.apply_unwritten(9, 2, 0, Change::All, t0);
        assert!(view.others_pending(t0, window));
        assert!(view.orphans(t0 + Duration::from_millis(100), window).is_empty());
        let later = t0 + Duration::from_secs(1);
        assert!(!view.others_pending(later, window));
        let mut orphans = view.orphans(later, window);
        orphans.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(orphans, [Change::All, deny("x", 0)]);
        assert!(view.orphans(later, window).is_empty());
        // Written before the sender went silent: nothing to take over.
        view.apply_unwritten(8, 1, 0, deny("y", 0), t0);
        apply(&mut view, 1, deny("y", 0));
        assert!(view.orphans(later, window).is_empty());
    }

    #[test]
    fn voids_judge_answers_by_log_position() {
        let mut view = View::new(Duration::from_secs(60));
        let hash = TokenHash::of("oat_x");
        apply(&mut view, 10, Change::Token(hash));
        let stamp = |seq| Stamp {
            incarnation: Incarnation([1; 16]),
            seq,
        };
        assert!(!view.answer_is_current(stamp(9), &hash, "c"));
        assert!(view.answer_is_current(stamp(10), &hash, "c"));
        assert!(view.answer_is_current(stamp(9), &TokenHash::of("other"), "c"));
        apply(&mut view, 11, Change::Client("c".into()));
        assert!(!view.answer_is_current(stamp(10), &TokenHash::of("other"), "c"));
        apply(&mut view, 12, Change::All);
        assert!(!view.answer_is_current(stamp(11), &TokenHash::of("other"), "d"));
        assert!(view.answer_is_current(stamp(12), &hash, "c"));
        let other_incarnation = Stamp {
            incarnation: Incarnation([2; 16]),
            seq: 99,
        };
        assert!(!view.answer_is_current(other_incarnation, &hash, "c"));
    }

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
