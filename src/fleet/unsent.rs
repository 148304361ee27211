//! Changes made on this replica that Redis did not take (down, hung, refusing writes): kept
//! in order and bounded, written and published again on the next heartbeat and when the
//! channel is back. While any is kept, this replica's misses skip the shared tier, which may
//! still hold answers one of them voids.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::Event;

/// Most changes kept.
const MAX_UNSENT: usize = 10_000;

/// The kept changes, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Unsent {
    queue: Mutex<VecDeque<Event>>,
    /// True while the queue holds anything (read on every miss without the lock).
    any: AtomicBool,
}

impl Unsent {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Event>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True when nothing is kept.
    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::SeqCst)
    }

    /// Keeps a change, after every change kept before it. A later change about the same
    /// thing replaces an earlier one (the latest `deny_client` / `allow_client` of a client
    /// wins), and an invalidate-all replaces every token and client invalidation.
    pub(crate) fn push(&self, event: Event) {
        let mut queue = self.queue();
        match &event {
            Event::Heartbeat => return,
            Event::Deny(id) | Event::Allow(id) => {
                queue.retain(|kept| !matches!(kept, Event::Deny(other) | Event::Allow(other) if other == id));
            }
            Event::All => queue.retain(|kept| !matches!(kept, Event::Token(_) | Event::Client(_) | Event::All)),
            Event::Token(_) | Event::Client(_) | Event::DenySession(_) | Event::DenyTokenId(_) => {
                queue.retain(|kept| kept != &event);
            }
        }
        if queue.len() >= MAX_UNSENT {
            // Token and client invalidations are summed up by one invalidate-all; denials
            // are kept (dropping one would let the other replicas serve what it refuses).
            queue.retain(|kept| !matches!(kept, Event::Token(_) | Event::Client(_) | Event::All));
            queue.push_back(Event::All);
            tracing::warn!(
                limit = MAX_UNSENT,
                "fleet: too many changes waiting for Redis; token and client invalidations summed up as one invalidate-all"
            );
        }
        if queue.len() >= MAX_UNSENT {
            tracing::error!(
                limit = MAX_UNSENT,
                "fleet: too many denials waiting for Redis; this one holds on this replica only"
            );
            return;
        }
        queue.push_back(event);
        self.any.store(true, Ordering::SeqCst);
    }

    /// The oldest change kept.
    pub(crate) fn front(&self) -> Option<Event> {
        self.queue().front().cloned()
    }

    /// Forgets `sent` if it is still the oldest change (Redis took it).
    pub(crate) fn sent(&self, sent: &Event) {
        let mut queue = self.queue();
        if queue.front() == Some(sent) {
            queue.pop_front();
        }
        self.any.store(!queue.is_empty(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(unsent: &Unsent) -> Vec<Event> {
        unsent.queue().iter().cloned().collect()
    }

    #[test]
    fn the_latest_change_about_a_client_wins_and_order_is_kept() {
        let unsent = Unsent::default();
        assert!(unsent.is_empty());
        unsent.push(Event::Deny("a".into()));
        unsent.push(Event::DenySession("s".into()));
        unsent.push(Event::Allow("a".into()));
        unsent.push(Event::Client("c".into()));
        assert_eq!(
            kept(&unsent),
            [
                Event::DenySession("s".into()),
                Event::Allow("a".into()),
                Event::Client("c".into())
            ]
        );
        unsent.push(Event::All);
        assert_eq!(
            kept(&unsent),
            [Event::DenySession("s".into()), Event::Allow("a".into()), Event::All]
        );
        assert!(!unsent.is_empty());
        for event in kept(&unsent) {
            unsent.sent(&event);
        }
        assert!(unsent.is_empty());
    }

    #[test]
    fn past_the_bound_invalidations_are_summed_up_and_denials_kept() {
        let unsent = Unsent::default();
        unsent.push(Event::Deny("kept".into()));
        for i in 0..MAX_UNSENT {
            unsent.push(Event::Client(format!("c{i}")));
        }
        let queue = kept(&unsent);
        assert!(queue.len() <= MAX_UNSENT);
        assert_eq!(queue[0], Event::Deny("kept".into()));
        assert!(queue.contains(&Event::All));
    }
}
