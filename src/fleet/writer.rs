//! Writing this replica's changes: queue, write in order (one writer at a time), tell the
//! caller what became of its change, and announce what Redis does not take.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use super::Fleet;
use super::log::{Appended, MAX_BATCH};
use super::outbox::Settled;
use super::records::{Change, Entry, Notice};
use super::sync::SyncFailed;
use super::view::Effect;
use crate::change::{ChangeOutcome, QueueReason, RefusalReason};
use crate::telemetry;

/// Longest a caller waits for its change to be written before it is told "queued".
const WRITE_BOUND: Duration = Duration::from_secs(2);
/// Most rounds in a row in which a writer writes nothing (the head kept moving under it, or
/// Redis kept losing state) before it leaves the rest to the next heartbeat.
const MAX_ROUNDS: usize = 16;
/// Past this many queued invalidations, they are announced as one invalidate-all.
const MAX_ANNOUNCED: usize = 64;
/// Most changes announced per round (a heartbeat, or a write that failed): new ones first,
/// then denials announced before, in turn.
const MAX_ANNOUNCED_PER_ROUND: usize = 1024;

/// A change handed to the fleet: its outcome to come, or its refusal.
pub(crate) type Submitted = Result<oneshot::Receiver<Settled>, RefusalReason>;

impl Fleet {
    /// Queues a change made here. Call it before the local effect, so that from then on this
    /// replica's misses skip the shared tier until the change is written.
    pub(crate) fn submit(&self, change: Change) -> Submitted {
        // Under the view's lock, as the writer applies and settles: a denial that joins a
        // copy being written right now is marked pending before that copy is applied, never
        // after (which would leave it pending with nothing queued).
        let mut view = self.view();
        let base = view.seq();
        let submitted = self.outbox.push(change.clone(), base);
        if let (Ok(_), Change::Deny { client, .. }) = (&submitted, &change) {
            view.denied_here(client);
        }
        drop(view);
        // Refused (the queue is full): in force on this replica alone, not announced (no
        // replica could ever lift it with the log).
        submitted
    }

    /// What became of a submitted change: written (waiting at most a bounded time), queued,
    /// or refused.
    pub(crate) async fn settle(self: &Arc<Self>, submitted: Submitted) -> ChangeOutcome {
        let outcome = match submitted {
            Err(reason) => return ChangeOutcome::Refused(reason),
            Ok(outcome) => outcome,
        };
        self.spawn_writer();
        match tokio::time::timeout(WRITE_BOUND, outcome).await {
            Ok(Ok(Ok(()))) => ChangeOutcome::Durable,
            Ok(Ok(Err(reason))) => ChangeOutcome::Refused(reason),
            _ => ChangeOutcome::Queued(self.last_error()),
        }
    }

    /// Writes the queued changes in the background, unless a writer is already at it.
    pub(crate) fn spawn_writer(self: &Arc<Self>) {
        if self.outbox.is_empty() || self.writing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.writing.store(false, Ordering::Release);
            tracing::debug!("fleet: no Tokio runtime here: the next heartbeat writes this change");
            return;
        };
        let fleet = Arc::clone(self);
        runtime.spawn(async move {
            loop {
                let written = fleet.drain().await;
                fleet.writing.store(false, Ordering::Release);
                if let Err(reason) = written {
                    fleet.set_last_error(reason);
                    fleet.announce().await;
                    return;
                }
                // A change queued as this writer finished is not left behind.
                if fleet.outbox.is_empty() || fleet.writing.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    /// Writes the queued changes, oldest first, in batches; each is settled once Redis took
    /// it (or refused as an allow of a superseded denial).
    pub(crate) async fn drain(&self) -> Result<(), QueueReason> {
        let held = self.protocol.lock().await;
        let mut stale = 0;
        // Batches written do not count: only rounds that wrote nothing (the head moved,
        // Redis lost state) are bounded.
        let mut idle_rounds = 0;
        while idle_rounds < MAX_ROUNDS {
            idle_rounds += 1;
            let batch = self.outbox.oldest(MAX_BATCH);
            if batch.is_empty() {
                return Ok(());
            }
            let Some(head) = self.view().head.clone() else {
                self.sync(&held).await.map_err(reason_of)?;
                continue;
            };
            let mut entries = Vec::with_capacity(batch.len());
            let mut prepared = Vec::with_capacity(batch.len());
            let (mut seq, mut prev) = (head.seq, head.link);
            for (id, _, change) in batch {
                seq = seq.saturating_add(1);
                let entry = Entry {
                    incarnation: head.incarnation,
                    seq,
                    prev,
                    replica: self.replica,
                    id,
                    change,
                };
                let (sealed, link) = self.codec.encode_entry(&entry);
                prepared.push(self.prepare(&entry, sealed));
                entries.push((entry, link));
                prev = link;
            }
            let appended = tokio::time::timeout(WRITE_BOUND, self.append(&head, &prepared, (seq, prev))).await;
            match appended {
                Ok(Ok(Appended::Written(stream_id))) => {
                    self.written(entries, stream_id).await;
                    idle_rounds = 0;
                }
                Ok(Ok(Appended::Stale)) if stale >= MAX_ROUNDS / 2 => {
                    // The head never matches what reading the log gives: it cannot be
                    // trusted (tampered with), so the log starts anew.
                    tracing::error!("fleet: the change log's head keeps disagreeing with its entries; starting anew");
                    stale = 0;
                    self.start_over(&held).await.map_err(reason_of)?;
                }
                Ok(Ok(Appended::Stale)) => {
                    stale += 1;
                    self.sync(&held).await.map_err(reason_of)?;
                }
                Ok(Ok(Appended::NoHead)) => self.sync(&held).await.map_err(reason_of)?,
                Ok(Ok(Appended::Unusable)) => {
                    tracing::error!(
                        "fleet: the change log cannot take entries (its stream was tampered with); starting anew"
                    );
                    self.start_over(&held).await.map_err(reason_of)?;
                }
                Ok(Ok(Appended::Superseded(index))) => {
                    if let Some((entry, _)) = entries.get(index) {
                        tracing::info!(
                            "fleet: an allow_client lifts a denial that is no longer the current one; refused"
                        );
                        self.outbox.settle(entry.id, Err(RefusalReason::NewerDenial));
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "fleet: Redis did not take a change; kept and announced");
                    telemetry::fleet_error("write");
                    return Err(reason_of_redis(&error));
                }
                Err(_) => {
                    tracing::warn!("fleet: writing a change timed out; kept and announced");
                    telemetry::fleet_error("write");
                    return Err(QueueReason::RedisUnavailable);
                }
            }
        }
        Err(QueueReason::Resyncing)
    }

    /// This replica's entries are in the log: apply them to the view and settle them.
    async fn written(&self, entries: Vec<(Entry, super::codec::Link)>, stream_id: String) {
        let now = std::time::Instant::now();
        let mut effects = Vec::new();
        for (entry, link) in entries {
            let mut view = self.view();
            let effect = view.apply_entry(&entry, link, stream_id.clone(), now);
            self.outbox.settle(entry.id, Ok(()));
            drop(view);
            // Only an allow waits for the log to take effect here.
            effects.extend(effect.filter(|e| matches!(e, Effect::Allow(_))));
            telemetry::fleet_event("written");
        }
        self.apply_effects(effects).await;
    }

    /// Announces the queued changes on the channel for the replicas listening now: each as
    /// soon as it is queued behind a write Redis did not take, then again every heartbeat
    /// (up to `MAX_ANNOUNCED_PER_ROUND` a round, in turn past it), so that a replica that was
    /// not listening learns them too. One round at a time. Past `MAX_ANNOUNCED` invalidations they are summed up
    /// as one invalidate-all. Allows wait for the log.
    pub(crate) async fn announce(&self) {
        if self.announcing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.announce_round().await;
        self.announcing.store(false, Ordering::Release);
    }

    async fn announce_round(&self) {
        let announcements = {
            let mut cursor = self
                .announce_cursor
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.outbox.to_announce(MAX_ANNOUNCED_PER_ROUND, &mut cursor)
        };
        let is_invalidation = Change::is_invalidation;
        let invalidations: Vec<&(u64, u64, Change)> = announcements
            .invalidations
            .iter()
            .chain(announcements.fresh.iter().filter(|(_, _, c)| is_invalidation(c)))
            .collect();
        let summed_up = invalidations.len() > MAX_ANNOUNCED;
        let mut notices = Vec::new();
        if summed_up {
            if let Some((id, base, _)) = invalidations.iter().max_by_key(|(id, _, _)| *id) {
                // Numbered after the newest invalidation it sums up: listeners apply it again
                // when more are queued.
                notices.push((u64::MAX - id, *base, Change::All));
            }
        } else {
            notices.extend(invalidations.into_iter().cloned());
        }
        notices.extend(
            announcements
                .fresh
                .into_iter()
                .chain(announcements.denials)
                .filter(|(_, _, change)| change.restricts() && !is_invalidation(change)),
        );
        for (id, base, change) in notices {
            if !self.publish(&Notice::Unwritten { id, base, change }).await {
                return;
            }
            telemetry::fleet_event("announced");
        }
    }

    /// Publishes a notice; false if Redis did not take it.
    pub(crate) async fn publish(&self, notice: &Notice) -> bool {
        // One at a time, numbered inside the turn: notices reach Redis in the order of their
        // numbers, so a receiver never takes a genuine one for a replay.
        let _turn = self.publishing.lock().await;
        let message = self.codec.encode_notice(self.sender(), notice);
        let mut conn = self.conn.clone();
        let channel = self.codec.channel();
        let sent = tokio::time::timeout(WRITE_BOUND, async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await;
        matches!(sent, Ok(Ok(_)))
    }

    /// Takes over changes other replicas announced and went silent on.
    pub(crate) fn take_over(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        tracing::warn!(
            count = changes.len(),
            "fleet: a replica went silent with changes Redis had not taken; writing them from here"
        );
        let base = self.view().seq();
        self.outbox.push_front(changes, base);
    }
}

fn reason_of(failed: SyncFailed) -> QueueReason {
    match failed {
        SyncFailed::Redis(error) => reason_of_redis(&error),
        SyncFailed::NoState => QueueReason::Resyncing,
    }
}

fn reason_of_redis(error: &redis::RedisError) -> QueueReason {
    if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal() {
        QueueReason::RedisUnavailable
    } else {
        QueueReason::RedisRefusedWrite
    }
}
