//! The outbox: every change this replica makes to the shared state (invalidations, denials),
//! queued in the order it was made and written to Redis by one drainer at a time, so that a
//! later change is never overtaken by an earlier one (a `deny_client` undone by an
//! `allow_client` written after it). A change Redis does not take (down, hung, refusing
//! writes) stays queued and is written again on the next heartbeat and when the channel is
//! back. While anything is queued, this replica's misses skip the shared tier, which may
//! still hold answers a queued change voids.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::Event;

/// Most changes queued.
const MAX_QUEUED: usize = 10_000;

/// A queued change and its place in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    seq: u64,
    pub(crate) event: Event,
}

#[derive(Debug, Default)]
struct Queue {
    changes: VecDeque<Queued>,
    next_seq: u64,
}

/// The queued changes, oldest first.
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

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::SeqCst)
    }

    /// Queues a change after every change queued before it. A later change about the same
    /// thing replaces an earlier one still queued (the latest `deny_client` / `allow_client`
    /// of a client wins), and an invalidate-all replaces every queued token and client
    /// invalidation.
    pub(crate) fn push(&self, event: Event) {
        let mut queue = self.queue();
        let changes = &mut queue.changes;
        match &event {
            Event::Heartbeat => return,
            Event::Deny(id) | Event::Allow(id) => {
                changes.retain(|q| !matches!(&q.event, Event::Deny(other) | Event::Allow(other) if other == id));
            }
            Event::All => changes.retain(|q| !matches!(q.event, Event::Token(_) | Event::Client(_) | Event::All)),
            Event::Token(_) | Event::Client(_) | Event::DenySession(_) | Event::DenyTokenId(_) => {
                changes.retain(|q| q.event != event);
            }
        }
        let mut event = event;
        if changes.len() >= MAX_QUEUED && matches!(event, Event::Token(_) | Event::Client(_)) {
            // Token and client invalidations are summed up by one invalidate-all.
            changes.retain(|q| !matches!(q.event, Event::Token(_) | Event::Client(_) | Event::All));
            event = Event::All;
            tracing::warn!(
                limit = MAX_QUEUED,
                "fleet: too many changes waiting for Redis; token and client invalidations summed up as one invalidate-all"
            );
        }
        if changes.len() >= MAX_QUEUED {
            // Only denials (and at most one invalidate-all) are left: dropping one would let
            // the other replicas serve what it refuses, so the newest does not join.
            tracing::error!(
                limit = MAX_QUEUED,
                "fleet: too many denials waiting for Redis; this change holds on this replica only"
            );
            return;
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.changes.push_back(Queued { seq, event });
        self.any.store(true, Ordering::SeqCst);
    }

    /// The oldest queued change.
    pub(crate) fn front(&self) -> Option<Queued> {
        self.queue().changes.front().cloned()
    }

    /// Forgets `written` if it is still the oldest (it was not replaced while it was being
    /// written: a replacement is written next).
    pub(crate) fn written(&self, written: &Queued) {
        let mut queue = self.queue();
        if queue.changes.front().is_some_and(|q| q.seq == written.seq) {
            queue.changes.pop_front();
        }
        self.any.store(!queue.changes.is_empty(), Ordering::SeqCst);
    }

    /// True if an `allow_client` (`allow`) or `deny_client` of `client_id` made here is
    /// still queued: this replica keeps it over what Redis or another replica says about the
    /// client until it is written.
    pub(crate) fn queued_client_change(&self, client_id: &str, allow: bool) -> bool {
        self.queue().changes.iter().any(|q| match &q.event {
            Event::Allow(id) => allow && id == client_id,
            Event::Deny(id) => !allow && id == client_id,
            _ => false,
        })
    }

    /// Another replica denied `client_id`: a queued `allow_client` of it made here is
    /// dropped, so that it cannot lift that denial when it is written later (a denial wins).
    pub(crate) fn denied_elsewhere(&self, client_id: &str) {
        let mut queue = self.queue();
        queue
            .changes
            .retain(|q| !matches!(&q.event, Event::Allow(id) if id == client_id));
        self.any.store(!queue.changes.is_empty(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(outbox: &Outbox) -> Vec<Event> {
        outbox.queue().changes.iter().map(|q| q.event.clone()).collect()
    }

    #[test]
    fn the_latest_change_about_a_client_wins_and_order_is_kept() {
        let outbox = Outbox::default();
        assert!(outbox.is_empty());
        outbox.push(Event::Deny("a".into()));
        outbox.push(Event::DenySession("s".into()));
        outbox.push(Event::Allow("a".into()));
        outbox.push(Event::Client("c".into()));
        assert_eq!(
            queued(&outbox),
            [
                Event::DenySession("s".into()),
                Event::Allow("a".into()),
                Event::Client("c".into())
            ]
        );
        outbox.push(Event::All);
        assert_eq!(
            queued(&outbox),
            [Event::DenySession("s".into()), Event::Allow("a".into()), Event::All]
        );
        assert!(outbox.queued_client_change("a", true));
        assert!(!outbox.queued_client_change("a", false));
        outbox.denied_elsewhere("a");
        assert!(!outbox.queued_client_change("a", true));
        assert_eq!(queued(&outbox), [Event::DenySession("s".into()), Event::All]);
        assert!(!outbox.is_empty());
        while let Some(front) = outbox.front() {
            outbox.written(&front);
        }
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_change_repeated_while_its_copy_is_written_is_written_again() {
        let outbox = Outbox::default();
        outbox.push(Event::Client("c".into()));
        let in_flight = outbox.front().unwrap_or_else(|| unreachable!());
        // Repeated while the first copy is being written: replaces it in the queue.
        outbox.push(Event::Client("c".into()));
        outbox.written(&in_flight);
        assert_eq!(
            queued(&outbox),
            [Event::Client("c".into())],
            "the repeat is still queued"
        );
    }

    #[test]
    fn past_the_bound_invalidations_are_summed_up_and_denials_kept() {
        let outbox = Outbox::default();
        outbox.push(Event::Deny("kept".into()));
        for i in 0..MAX_QUEUED + 10 {
            outbox.push(Event::Client(format!("c{i}")));
        }
        let queue = queued(&outbox);
        assert!(queue.len() <= MAX_QUEUED);
        assert_eq!(queue[0], Event::Deny("kept".into()));
        assert!(queue.contains(&Event::All));
    }
}
