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
use super::records::{Change, Entry, Incarnation, Sender, Stamp, from_unix_millis};
use super::voids::{MAX_VOIDS, Voids};
use crate::change::Target;
use crate::principal::Grant;
use crate::token::TokenHash;

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
    Target(Target),
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
    /// The other replicas heard on the channel.
    peers: HashMap<u64, Peer>,
    /// The latest changes read from the log, by replica and change number: an announcement
    /// of one of them that arrives late is not applied again (the log has the final word).
    written: Written,
    /// Until when this replica, back after losing the fleet, treats the others as holding
    /// changes Redis has not taken (see [`rejoin`](Self::rejoin)).
    rejoined_until: Option<Instant>,
}

/// The latest (replica, change number) pairs read from the log, bounded.
#[derive(Debug, Default)]
struct Written {
    set: std::collections::HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
}

impl Written {
    fn insert(&mut self, key: (u64, u64)) {
        if self.set.insert(key) {
            self.order.push_back(key);
            if self.order.len() > MAX_VOIDS
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// Another replica, as heard on the channel.
#[derive(Debug)]
struct Peer {
    /// When it was last heard.
    heard: Instant,
    /// Whether it says it holds changes Redis has not taken.
    pending: bool,
    /// The number of the last of its notices taken: a notice numbered at or below it is a
    /// replay.
    counter: u64,
}

impl View {
    /// An empty view; voids are kept for `keep` (longer than any shared answer can live).
    pub(crate) fn new(keep: Duration) -> Self {
        View {
            head: None,
            clients: HashMap::new(),
            voids: Voids::new(keep),
            heard: HashMap::new(),
            peers: HashMap::new(),
            written: Written::default(),
            rejoined_until: None,
        }
    }

    /// The sequence number applied (0 before any).
    pub(crate) fn seq(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.seq)
    }

    /// True if an answer stamped `stamp` (for `grant`; `None` for a rejection) is still good
    /// by this view: same incarnation, and no invalidation that covers it was logged after it.
    pub(crate) fn answer_is_current(&self, stamp: Stamp, hash: &TokenHash, grant: Option<&Grant>) -> bool {
        self.head.as_ref().is_some_and(|h| h.incarnation == stamp.incarnation)
            && !self.voids.covers(stamp.seq, hash, grant)
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

    /// Every client this replica holds allowed after a denial, with the allow's version.
    pub(crate) fn allowed_clients(&self) -> Vec<(String, u64)> {
        self.clients
            .iter()
            .filter_map(|(id, state)| match state {
                ClientState::Allowed { version } => Some((id.clone(), *version)),
                _ => None,
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
        self.written.insert((entry.replica, entry.id));
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
            Change::Allow { client, lifts, version } => {
                let allowed = ClientState::Allowed {
                    version: if *version == 0 { seq } else { *version },
                };
                match self.client(client) {
                    Some(ClientState::Denied { version }) if version == *lifts => {
                        self.set_client(client, allowed);
                        Some(Effect::Allow(client.clone()))
                    }
                    None => {
                        self.set_client(client, allowed);
                        Some(Effect::Allow(client.clone()))
                    }
                    // A newer denial, or one waiting to be written: it stays.
                    _ => None,
                }
            }
            Change::DenySession { id, until } => Some(Effect::DenySession(id.clone(), from_unix_millis(*until))),
            Change::DenyTokenId { id, until } => Some(Effect::DenyTokenId(id.clone(), from_unix_millis(*until))),
            Change::Target(target) => {
                self.voids.target(*target, seq, now);
                Some(Effect::Target(*target))
            }
        }
    }

    /// A client record read from Redis's shared state: applied if newer than what is known.
    /// A client pending here takes the record only once nothing pending denies it any more
    /// (no change of this replica queued, no announcement watched): then the record is the
    /// truth, whatever its version.
    pub(crate) fn adopt_client(
        &mut self,
        client: &str,
        denied: bool,
        version: u64,
        own_pending: bool,
    ) -> Option<Effect> {
        let newer = match self.client(client) {
            None => true,
            Some(ClientState::Denied { version: v } | ClientState::Allowed { version: v }) => v < version,
            Some(ClientState::Pending { .. }) => !own_pending && !self.watches(client),
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

    /// True if an announced, unwritten denial of `client` is being watched.
    fn watches(&self, client: &str) -> bool {
        self.heard
            .values()
            .any(|h| matches!(&h.change, Change::Deny { client: c, .. } if c == client))
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
            Change::Target(target) => self.voids.target(*target, seq, now),
            Change::Allow { .. } | Change::DenySession { .. } | Change::DenyTokenId { .. } => {}
        }
    }

    /// Takes a notice of `from` if it is fresh: sent within `window_ms` of `now_ms` and
    /// numbered above the last notice taken from it. A captured notice published again is
    /// not (it would end degraded mode, or bring back a denial lifted since).
    pub(crate) fn fresh(&mut self, from: Sender, now: Instant, now_ms: u64, window_ms: u64) -> bool {
        if from.sent_at.saturating_add(window_ms) < now_ms || from.sent_at > now_ms.saturating_add(window_ms) {
            return false;
        }
        if self.peers.len() >= MAX_HEARD && !self.peers.contains_key(&from.replica) {
            self.peers
                .retain(|_, p| now.duration_since(p.heard) < Duration::from_secs(600));
        }
        let peer = self.peers.entry(from.replica).or_insert(Peer {
            heard: now,
            pending: false,
            counter: 0,
        });
        if from.counter <= peer.counter {
            return false;
        }
        peer.counter = from.counter;
        peer.heard = now;
        true
    }

    /// An unwritten change another replica announced (`base`: the log position it had
    /// applied when it made it), already taken as fresh: applied if it restricts (a denial
    /// wins, as when it is written). The sender counts as holding unwritten changes from
    /// now on, and an invalidation voids the shared answers stamped up to this replica's head
    /// (Redis may still hold them, and nothing newer can be stamped until the change is
    /// written). `None` if it was heard before or does nothing here.
    pub(crate) fn apply_unwritten(&mut self, from: u64, id: u64, change: Change, now: Instant) -> Option<Effect> {
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.pending = true;
            peer.heard = now;
        }
        if let Some(heard) = self.heard.get_mut(&(from, id)) {
            heard.last = now;
            return None;
        }
        if !change.restricts() || self.written.set.contains(&(from, id)) {
            // An allow waits for the log; a change the log already brought is not applied
            // again (it may have been lifted since).
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
        let next = self.seq().saturating_add(1);
        self.record_void(&change, next, now);
        match &change {
            Change::Deny { client, .. } => {
                // Pending even over a written denial: an allow of that one, written before
                // this denial is, must not lift it meanwhile.
                let base = self.seq();
                self.set_client(client, ClientState::Pending { base });
                Some(Effect::Deny(client.clone()))
            }
            Change::Token(hash) => Some(Effect::Token(*hash)),
            Change::Client(id) => Some(Effect::Client(id.clone())),
            Change::All => Some(Effect::All),
            Change::DenySession { id, until } => Some(Effect::DenySession(id.clone(), from_unix_millis(*until))),
            Change::DenyTokenId { id, until } => Some(Effect::DenyTokenId(id.clone(), from_unix_millis(*until))),
            Change::Target(target) => Some(Effect::Target(*target)),
            Change::Allow { .. } => None,
        }
    }

    /// A heartbeat of `replica` (already taken as fresh): alive, and holding unwritten
    /// changes or not. A replica that holds none has written what it announced (the log
    /// brings it).
    pub(crate) fn heartbeat(&mut self, replica: u64, pending: bool, now: Instant) {
        if let Some(peer) = self.peers.get_mut(&replica) {
            peer.pending = pending;
            peer.heard = now;
        }
        if !pending {
            self.heard.retain(|(from, _), _| *from != replica);
        }
    }

    /// True while another replica said, within `window`, that it holds unwritten changes, or
    /// while this replica is just back after losing the fleet (see [`rejoin`](Self::rejoin)).
    pub(crate) fn others_pending(&self, now: Instant, window: Duration) -> bool {
        self.rejoined_until.is_some_and(|until| now < until)
            || self
                .peers
                .values()
                .any(|p| p.pending && now.duration_since(p.heard) <= window)
    }

    /// This replica is back after losing the fleet. Others may have made changes meanwhile
    /// that Redis has not taken yet (it was down for them too, and they are not back, or have
    /// not written them yet), and their announcements went by while this one was away: until
    /// `until` (as long as another replica may take to reconnect and write), it counts them
    /// as holding such changes, so that it skips the shared tier, whose answers they may void.
    pub(crate) fn rejoin(&mut self, until: Instant) {
        self.rejoined_until = Some(until);
    }

    /// Unwritten changes whose senders have been silent for `window`: nobody else will write
    /// them, so this replica takes them over. Removed from the watch.
    pub(crate) fn orphans(&mut self, now: Instant, window: Duration) -> Vec<Change> {
        let silent = |replica: &u64| {
            self.peers
                .get(replica)
                .is_none_or(|p| now.duration_since(p.heard) > window)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(client: &str) -> Grant {
        Grant::new(client, std::time::SystemTime::now())
    }

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
            version: 0,
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

    fn sender(replica: u64, counter: u64, sent_at: u64) -> Sender {
        Sender {
            replica,
            counter,
            sent_at,
        }
    }

    #[test]
    fn only_fresh_notices_are_taken() {
        let mut view = View::new(Duration::from_secs(60));
        let now = Instant::now();
        let ms = 1_790_000_000_000;
        assert!(view.fresh(sender(9, 5, ms), now, ms, 1000));
        assert!(!view.fresh(sender(9, 5, ms), now, ms, 1000), "the same notice again");
        assert!(!view.fresh(sender(9, 4, ms), now, ms, 1000), "an older notice");
        assert!(view.fresh(sender(9, 6, ms - 900), now, ms, 1000));
        assert!(!view.fresh(sender(8, 1, ms - 1500), now, ms, 1000), "sent too long ago");
        assert!(
            !view.fresh(sender(8, 1, ms + 1500), now, ms, 1000),
            "sent in the future"
        );
    }

    #[test]
    fn announced_changes_restrict_at_once_and_repeats_apply_once() {
        let mut view = View::new(Duration::from_secs(60));
        let now = Instant::now();
        apply(&mut view, 1, deny("x", 0));
        apply(&mut view, 5, allow("x", 1));
        assert!(view.fresh(sender(9, 1, 0), now, 0, 1000));
        // A denial wins, announced as written.
        assert_eq!(
            view.apply_unwritten(9, 2, deny("x", 0), now),
            Some(Effect::Deny("x".into()))
        );
        assert_eq!(view.apply_unwritten(9, 2, deny("x", 0), now), None, "heard before");
        assert_eq!(
            view.apply_unwritten(9, 3, allow("x", 5), now),
            None,
            "allows wait for the log"
        );
        assert_eq!(view.client("x"), Some(ClientState::Pending { base: 5 }));
        assert!(
            view.others_pending(now, Duration::from_secs(1)),
            "its sender holds changes"
        );
        // An announced invalidation voids what Redis may still share, up to the head.
        let hash = TokenHash::of("oat_x");
        let stamp = Stamp {
            incarnation: Incarnation([1; 16]),
            seq: 5,
        };
        assert!(view.answer_is_current(stamp, &hash, Some(&grant("c"))));
        view.apply_unwritten(9, 4, Change::Token(hash), now);
        assert!(!view.answer_is_current(stamp, &hash, Some(&grant("c"))));
    }

    #[test]
    fn orphaned_announcements_are_taken_over_once_their_sender_is_silent() {
        let mut view = View::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let window = Duration::from_millis(300);
        for replica in [8, 9] {
            assert!(view.fresh(sender(replica, 1, 0), t0, 0, 1000));
        }
        view.heartbeat(9, true, t0);
        view.apply_unwritten(9, 1, deny("x", 0), t0);
        view.apply_unwritten(9, 2, Change::All, t0);
        assert!(view.others_pending(t0, window));
        assert!(view.orphans(t0 + Duration::from_millis(100), window).is_empty());
        let later = t0 + Duration::from_secs(1);
        assert!(!view.others_pending(later, window));
        let mut orphans = view.orphans(later, window);
        orphans.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(orphans, [Change::All, deny("x", 0)]);
        assert!(view.orphans(later, window).is_empty());
        // Written before the sender went silent: nothing to take over.
        view.apply_unwritten(8, 1, deny("y", 0), t0);
        apply(&mut view, 1, deny("y", 0));
        assert!(view.orphans(later, window).is_empty());
    }

    #[test]
    fn a_pending_client_takes_redis_record_once_nothing_pending_denies_it() {
        let mut view = View::new(Duration::from_secs(60));
        let now = Instant::now();
        assert!(view.fresh(sender(9, 1, 0), now, 0, 1000));
        view.apply_unwritten(9, 1, deny("x", 0), now);
        assert_eq!(view.adopt_client("x", false, 7, false), None, "still announced");
        view.heartbeat(9, false, now);
        assert_eq!(
            view.adopt_client("x", false, 7, true),
            None,
            "a denial of this replica's is queued"
        );
        assert_eq!(view.adopt_client("x", false, 7, false), Some(Effect::Allow("x".into())));
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
        assert!(!view.answer_is_current(stamp(9), &hash, Some(&grant("c"))));
        assert!(view.answer_is_current(stamp(10), &hash, Some(&grant("c"))));
        assert!(view.answer_is_current(stamp(9), &TokenHash::of("other"), Some(&grant("c"))));
        apply(&mut view, 11, Change::Client("c".into()));
        assert!(!view.answer_is_current(stamp(10), &TokenHash::of("other"), Some(&grant("c"))));
        apply(&mut view, 12, Change::All);
        assert!(!view.answer_is_current(stamp(11), &TokenHash::of("other"), Some(&grant("d"))));
        assert!(view.answer_is_current(stamp(12), &hash, Some(&grant("c"))));
        let other_incarnation = Stamp {
            incarnation: Incarnation([2; 16]),
            seq: 99,
        };
        assert!(!view.answer_is_current(other_incarnation, &hash, Some(&grant("c"))));
    }
}
