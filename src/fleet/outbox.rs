//! The changes this replica made that Redis has not taken yet, oldest first, each with the
//! callers waiting to learn its outcome.
//!
//! A change is queued synchronously, before its local effect, and written by one writer at a
//! time in order, so a later change is never overtaken by an earlier one. A change Redis does
//! not take stays queued (and announced on the channel every heartbeat) until it does.
//! While anything is queued, this replica's misses skip the shared tier, which may still hold
//! answers a queued change voids. The queue is bounded: past it, invalidations are summed up
//! as one invalidate-all and other changes are refused, and their callers told so.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::records::Change;
use crate::change::RefusalReason;

/// Most changes queued.
const MAX_QUEUED: usize = 10_000;

/// What a replica announces on a heartbeat, each as (id, base, change).
#[derive(Debug, Default)]
pub(crate) struct Announcements {
    /// Changes queued since the last announcement, all of them.
    pub(crate) fresh: Vec<(u64, u64, Change)>,
    /// Denials announced before, again, in turn (for replicas that were not listening).
    pub(crate) denials: Vec<(u64, u64, Change)>,
    /// Invalidations announced before, all of them (the caller sums many up).
    pub(crate) invalidations: Vec<(u64, u64, Change)>,
}

/// The written-or-refused verdict a waiting caller receives.
pub(crate) type Settled = Result<(), RefusalReason>;

/// A queued change.
#[derive(Debug)]
pub(crate) struct Queued {
    /// Its number on this replica (in the log entry that writes it).
    pub(crate) id: u64,
    /// The log position this replica had applied when it was made.
    pub(crate) base: u64,
    pub(crate) change: Change,
    waiters: Vec<oneshot::Sender<Settled>>,
    /// Announced on the channel at least once.
    announced: bool,
}

#[derive(Debug, Default)]
struct Queue {
    changes: VecDeque<Queued>,
    next_id: u64,
}

/// The queue (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// True while anything is queued (read on every miss without the lock).
    any: AtomicBool,
}

impl Outbox {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update_flag(&self, queue: &Queue) {
        self.any.store(!queue.changes.is_empty(), Ordering::SeqCst);
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::SeqCst)
    }

    /// Queues `change` after every change queued before it (the same change still queued
    /// takes the new caller instead). Returns the receiver of its outcome, or the refusal
    /// when the queue is full.
    pub(crate) fn push(&self, change: Change, base: u64) -> Result<oneshot::Receiver<Settled>, RefusalReason> {
        let (done, outcome) = oneshot::channel();
        let mut queue = self.queue();
        if let Some(same) = queue.changes.iter_mut().rev().find(|q| q.change == change) {
            same.waiters.push(done);
            return Ok(outcome);
        }
        let mut change = change;
        let mut waiters = vec![done];
        if queue.changes.len() >= MAX_QUEUED && change.is_invalidation() {
            // Invalidations are summed up by one invalidate-all.
            let (summed, kept): (VecDeque<Queued>, VecDeque<Queued>) = std::mem::take(&mut queue.changes)
                .into_iter()
                .partition(|q| q.change.is_invalidation());
            queue.changes = kept;
            waiters.extend(summed.into_iter().flat_map(|q| q.waiters));
            change = Change::All;
            tracing::warn!(
                limit = MAX_QUEUED,
                "fleet: too many changes waiting for Redis; invalidations summed up as one invalidate-all"
            );
        }
        if queue.changes.len() >= MAX_QUEUED {
            tracing::error!(
                limit = MAX_QUEUED,
                "fleet: too many changes waiting for Redis; this one is refused (in force here only)"
            );
            return Err(RefusalReason::OutboxFull);
        }
        let id = queue.next_id;
        queue.next_id += 1;
        queue.changes.push_back(Queued {
            id,
            base,
            change,
            waiters,
            announced: false,
        });
        self.update_flag(&queue);
        Ok(outcome)
    }

    /// Queues changes nobody waits for (re-assertions, changes taken over from a replica
    /// gone silent) ahead of what is queued. Past the bound they are not queued (logged).
    pub(crate) fn push_front(&self, changes: Vec<Change>, base: u64) {
        let mut queue = self.queue();
        for change in changes.into_iter().rev() {
            if queue.changes.iter().any(|q| q.change == change) {
                continue;
            }
            if queue.changes.len() >= MAX_QUEUED {
                tracing::error!(
                    limit = MAX_QUEUED,
                    "fleet: too many changes waiting for Redis; a re-assertion is dropped"
                );
                break;
            }
            let id = queue.next_id;
            queue.next_id += 1;
            queue.changes.push_front(Queued {
                id,
                base,
                change,
                waiters: Vec::new(),
                announced: false,
            });
        }
        self.update_flag(&queue);
    }

    /// The oldest `max` changes: (id, base, change).
    pub(crate) fn oldest(&self, max: usize) -> Vec<(u64, u64, Change)> {
        self.queue()
            .changes
            .iter()
            .take(max)
            .map(|q| (q.id, q.base, q.change.clone()))
            .collect()
    }

    /// What to announce now (see [`Announcements`]): at most `budget` changes not announced
    /// yet, then, within what is left of it, denials announced before, taken in turn from
    /// `cursor` (which moves on).
    pub(crate) fn to_announce(&self, budget: usize, cursor: &mut usize) -> Announcements {
        let mut queue = self.queue();
        let mut out = Announcements::default();
        let mut denials = Vec::new();
        for q in &mut queue.changes {
            let item = (q.id, q.base, q.change.clone());
            if !q.announced {
                // Past the budget, a new change waits for the next round (still new then).
                if out.fresh.len() < budget {
                    q.announced = true;
                    out.fresh.push(item);
                }
            } else if q.change.is_invalidation() {
                out.invalidations.push(item);
            } else if q.change.restricts() {
                denials.push(item);
            }
        }
        let again = budget.saturating_sub(out.fresh.len()).min(denials.len());
        if again > 0 {
            let start = *cursor % denials.len();
            out.denials = denials.into_iter().cycle().skip(start).take(again).collect();
            *cursor = start + again;
        }
        out
    }

    /// Settles the change `id` (written, or refused), telling its callers; false if it is
    /// not queued (settled before).
    pub(crate) fn settle(&self, id: u64, outcome: Settled) -> bool {
        let mut queue = self.queue();
        let Some(at) = queue.changes.iter().position(|q| q.id == id) else {
            return false;
        };
        let settled = queue.changes.remove(at);
        self.update_flag(&queue);
        drop(queue);
        for waiter in settled.into_iter().flat_map(|q| q.waiters) {
            let _ = waiter.send(outcome);
        }
        true
    }

    /// True if a denial of `client` made here is still queued.
    pub(crate) fn denies(&self, client: &str) -> bool {
        self.queue()
            .changes
            .iter()
            .any(|q| matches!(&q.change, Change::Deny { client: c, .. } if c == client))
    }

    /// How many changes are queued.
    pub(crate) fn len(&self) -> usize {
        self.queue().changes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(client: &str) -> Change {
        Change::Deny {
            client: client.into(),
            version: 0,
        }
    }

    #[tokio::test]
    async fn changes_settle_in_order_and_a_repeat_joins_the_queued_copy() {
        let outbox = Outbox::default();
        assert!(outbox.is_empty());
        let first = outbox.push(deny("a"), 1).unwrap_or_else(|_| unreachable!());
        let token = outbox.push(Change::All, 1).unwrap_or_else(|_| unreachable!());
        let repeat = outbox.push(deny("a"), 2).unwrap_or_else(|_| unreachable!());
        let queued = outbox.oldest(10);
        assert_eq!(queued.len(), 2, "the repeat joined the queued denial");
        assert_eq!(queued[0].2, deny("a"));
        assert!(outbox.settle(queued[0].0, Ok(())));
        assert!(!outbox.settle(queued[0].0, Ok(())), "settled once");
        assert_eq!(first.await, Ok(Ok(())));
        assert_eq!(repeat.await, Ok(Ok(())));
        assert!(!outbox.is_empty());
        outbox.settle(queued[1].0, Err(RefusalReason::NewerDenial));
        assert_eq!(token.await, Ok(Err(RefusalReason::NewerDenial)));
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn past_the_bound_invalidations_are_summed_up_and_denials_refused() {
        let outbox = Outbox::default();
        let kept = outbox.push(deny("kept"), 0).unwrap_or_else(|_| unreachable!());
        let mut receivers = Vec::new();
        for i in 0..MAX_QUEUED + 10 {
            if let Ok(rx) = outbox.push(Change::Client(format!("c{i}")), 0) {
                receivers.push(rx);
            }
        }
        let queue = outbox.oldest(MAX_QUEUED + 20);
        assert!(queue.len() <= MAX_QUEUED);
        assert_eq!(queue[0].2, deny("kept"));
        assert!(queue.iter().any(|q| q.2 == Change::All));
        let mut n = 0;
        while outbox.push(deny(&format!("d{n}")), 0).is_ok() {
            n += 1;
        }
        assert_eq!(
            outbox.push(deny("one too many"), 0).err(),
            Some(RefusalReason::OutboxFull)
        );
        for q in outbox.oldest(MAX_QUEUED) {
            outbox.settle(q.0, Ok(()));
        }
        assert_eq!(kept.await, Ok(Ok(())));
        for rx in receivers {
            assert_eq!(
                rx.await,
                Ok(Ok(())),
                "summed-up invalidations settle with the invalidate-all"
            );
        }
    }

    #[test]
    fn each_change_is_announced_at_once_then_again_in_turn() {
        let outbox = Outbox::default();
        for i in 0..5 {
            let _ = outbox.push(Change::Client(format!("c{i}")), 0);
        }
        for i in 0..3 {
            let _ = outbox.push(deny(&format!("d{i}")), 0);
        }
        let mut cursor = 0;
        let first = outbox.to_announce(6, &mut cursor);
        assert_eq!(first.fresh.len(), 6, "new changes, up to the budget");
        let _ = outbox.push(deny("late"), 0);
        let second = outbox.to_announce(6, &mut cursor);
        assert_eq!(second.fresh.len(), 3, "the two left over, and the new one");
        assert_eq!(second.fresh[2].2, deny("late"));
        assert_eq!(second.invalidations.len(), 5, "every invalidation again");
        assert_eq!(
            second.denials.len(),
            1,
            "denials announced before, within the budget left"
        );
        let mut again = std::collections::HashSet::new();
        for _ in 0..4 {
            for (id, _, _) in outbox.to_announce(2, &mut cursor).denials {
                again.insert(id);
            }
        }
        assert_eq!(again.len(), 4, "every denial comes round again");
    }
}
