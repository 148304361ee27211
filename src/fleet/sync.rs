//! Keeping this replica's view in step with the log: reading it in order, taking Redis's
//! state as its own (first start, or after falling behind the trimmed log), and recovering
//! when Redis has lost state.
//!
//! | Redis's head, against this replica's | meaning | what this replica does |
//! | --- | --- | --- |
//! | same incarnation, at or past it, entries follow on | normal | apply them in order |
//! | an entry numbered at or below the head applied | a replay (someone re-added a copy) | ignore it, count it |
//! | an entry numbered past the next one | this replica fell behind the trimmed log | re-read the shared state, drop the local cache |
//! | the next number, another link | a fork: Redis went back and took other writes | recover |
//! | none, an older incarnation, the same one gone backwards, or one written by an earlier Redis process | Redis lost state, or may have (flushed, evicted, restarted empty or from a snapshot, failed over to another node) | recover |
//! | a newer incarnation | another replica already recovered | adopt it, then re-assert |
//!
//! Recovering drops the local cache (invalidations in the lost part are unknown), starts a
//! new incarnation (numbered past every earlier one, so no old entry or answer fits it) and
//! re-asserts every denial this replica knows that Redis lacks, with its version and end time.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use super::log::{RemoteHead, Snapshot};
use super::records::{Change, Incarnation, read_client_record, read_jwt_denial, unix_micros, unix_millis};
use super::view::{Effect, Head};
use super::{Fleet, Held};
use crate::telemetry;

/// What Redis's records held when this replica took them, to re-assert only what it lacks.
#[derive(Debug, Default)]
struct Known {
    clients: HashMap<String, (bool, u64)>,
    sessions: HashMap<String, u64>,
    token_ids: HashMap<String, u64>,
}

/// What taking Redis's state found.
enum Taken {
    /// Taken: what Redis's records held.
    Known(Known),
    /// Nothing to take: no state, or state written before Redis restarted (the head seen).
    Lost(Option<RemoteHead>),
}

/// Why a sync could not finish.
#[derive(Debug)]
pub(crate) enum SyncFailed {
    /// Redis answered with an error, or not at all.
    Redis(redis::RedisError),
    /// Redis still had no state after this replica tried to start one.
    NoState,
}

impl Fleet {
    /// Brings the view up to Redis's log (see the module docs).
    pub(crate) async fn sync(&self, held: &Held<'_>) -> Result<(), SyncFailed> {
        let mine = self.view().head.clone();
        match mine {
            None => match self.adopt(false).await? {
                Taken::Known(_) => Ok(()),
                Taken::Lost(seen) => self.recover(held, seen).await,
            },
            Some(mine) => self.catch_up(held, mine).await,
        }
    }

    /// Reads and applies the entries after the head applied.
    async fn catch_up(&self, held: &Held<'_>, mut mine: Head) -> Result<(), SyncFailed> {
        loop {
            let read = self.read_after(&mine.stream_id).await.map_err(SyncFailed::Redis)?;
            let Some(remote) = read.head else {
                return self.recover(held, None).await;
            };
            if remote.restarted || remote.incarnation != mine.incarnation || remote.seq < mine.seq {
                return self.recover(held, Some(remote)).await;
            }
            let count = read.entries.len();
            let mut effects = Vec::new();
            let now = Instant::now();
            for (stream_id, sealed) in read.entries {
                let Some((entry, link)) = self.codec.decode_entry(&sealed) else {
                    tracing::warn!(stream_id, "fleet: ignored a log entry whose tag does not verify");
                    telemetry::fleet_event("refused");
                    mine.stream_id = stream_id;
                    self.view().head = Some(mine.clone());
                    continue;
                };
                if entry.incarnation != mine.incarnation || entry.seq <= mine.seq {
                    tracing::warn!(
                        seq = entry.seq,
                        applied = mine.seq,
                        "fleet: ignored a replayed log entry (older than what is applied)"
                    );
                    telemetry::fleet_event("replayed");
                    mine.stream_id = stream_id;
                    self.view().head = Some(mine.clone());
                    continue;
                }
                if entry.seq > mine.seq + 1 {
                    tracing::warn!(
                        next = entry.seq,
                        applied = mine.seq,
                        "fleet: the change log was trimmed past what this replica read; re-reading the shared state"
                    );
                    telemetry::fleet_resync("behind");
                    self.apply_effects(effects).await;
                    return self.readopt(held).await;
                }
                if entry.prev != mine.link {
                    tracing::error!(
                        seq = entry.seq,
                        "fleet: the change log forked (Redis went back and took other writes)"
                    );
                    self.apply_effects(effects).await;
                    return self.recover(held, Some(remote)).await;
                }
                let own = entry.replica == self.replica;
                let mut view = self.view();
                let effect = view.apply_entry(&entry, link, stream_id, now);
                if own {
                    // Written, though the writer may not have heard so (settled under the
                    // view's lock, as the writer does).
                    self.outbox.settle(entry.id, Ok(()));
                }
                drop(view);
                effects.extend(effect.filter(|e| !own || matches!(e, Effect::Allow(_))));
                mine = self.view().head.clone().unwrap_or(mine);
            }
            self.apply_effects(effects).await;
            if count >= super::log::READ_COUNT {
                continue;
            }
            if mine.seq < remote.seq {
                // The head says more than the log holds: entries were removed.
                tracing::warn!("fleet: the change log lacks entries its head counts; re-reading the shared state");
                telemetry::fleet_resync("behind");
                return self.readopt(held).await;
            }
            return Ok(());
        }
    }

    /// After falling behind the trimmed log: takes Redis's state again.
    async fn readopt(&self, held: &Held<'_>) -> Result<(), SyncFailed> {
        match self.adopt(true).await? {
            Taken::Known(_) => Ok(()),
            Taken::Lost(seen) => self.recover(held, seen).await,
        }
    }

    /// Takes Redis's shared state as this replica's (`behind`: after a gap, so the local
    /// cache may hold answers a missed change voids and is dropped). Nothing is taken when
    /// Redis has no state, or state written before it restarted.
    async fn adopt(&self, behind: bool) -> Result<Taken, SyncFailed> {
        let window = super::millis(self.view_keep());
        let snapshot = self.read_snapshot(window).await.map_err(SyncFailed::Redis)?;
        let Some(remote) = snapshot.head.clone() else {
            return Ok(Taken::Lost(None));
        };
        if remote.restarted {
            return Ok(Taken::Lost(Some(remote)));
        }
        if behind && let Some(owner) = self.owner() {
            owner.drop_local();
        }
        let (known, effects) = self.take_snapshot(remote, snapshot);
        self.apply_effects(effects).await;
        Ok(Taken::Known(known))
    }

    /// Applies a snapshot's records and window to the view; the effects for the local tiers.
    fn take_snapshot(&self, remote: RemoteHead, snapshot: Snapshot) -> (Known, Vec<Effect>) {
        let mut known = Known::default();
        let mut effects = Vec::new();
        let clients_key = self.codec.records_key("clients");
        let mut view = self.view();
        for (client, sealed) in &snapshot.clients {
            match read_client_record(&self.codec, &clients_key, client, sealed) {
                Some((denied, version)) => {
                    known.clients.insert(client.clone(), (denied, version));
                    effects.extend(view.adopt_client(client, denied, version, self.outbox.denies(client)));
                }
                None => {
                    tracing::warn!("fleet: ignored a client record whose tag does not verify");
                    telemetry::fleet_event("refused");
                }
            }
        }
        for (kind, members, known_ids) in [
            ("sessions", &snapshot.sessions, &mut known.sessions),
            ("token-ids", &snapshot.token_ids, &mut known.token_ids),
        ] {
            let key = self.codec.records_key(kind);
            for member in members {
                let Some((id, until)) = read_jwt_denial(&self.codec, &key, member) else {
                    telemetry::fleet_event("refused");
                    continue;
                };
                let at = super::records::from_unix_millis(until);
                effects.push(if kind == "sessions" {
                    Effect::DenySession(id.clone(), at)
                } else {
                    Effect::DenyTokenId(id.clone(), at)
                });
                let entry = known_ids.entry(id).or_insert(0);
                *entry = (*entry).max(until);
            }
        }
        // The window's entries void the shared answers stamped before them. Answers stamped
        // before the window are older than any shared answer can live, unless the window is
        // broken (trimmed, tampered): then nothing older than the head is trusted.
        let mut window = Vec::new();
        for (_, sealed) in &snapshot.recent {
            match self.codec.decode_entry(sealed) {
                Some((entry, link)) if entry.incarnation == remote.incarnation && entry.seq <= remote.seq => {
                    window.push((entry, link));
                }
                _ => {}
            }
        }
        let chained = window
            .windows(2)
            .all(|pair| pair[1].0.seq == pair[0].0.seq + 1 && pair[1].0.prev == pair[0].1)
            && window
                .last()
                .is_none_or(|(entry, link)| entry.seq == remote.seq && *link == remote.link);
        let floor = match window.first() {
            Some((first, _)) if chained => first.seq.saturating_sub(1),
            _ => remote.seq,
        };
        view.adopt_head(remote.into_head(), floor);
        if chained {
            // Only the voids: the records above already hold the window's denials.
            let now = Instant::now();
            for (entry, _) in &window {
                view.record_void(&entry.change, entry.seq, now);
            }
        }
        for (entry, _) in &window {
            if entry.replica == self.replica {
                self.outbox.settle(entry.id, Ok(()));
            }
        }
        drop(view);
        (known, effects)
    }

    /// Redis lost state (see the module docs): drop the local cache, move to a newer
    /// incarnation (started here unless another replica did), re-assert what Redis lacks.
    async fn recover(&self, held: &Held<'_>, seen: Option<RemoteHead>) -> Result<(), SyncFailed> {
        let _ = held;
        let mine = self.view().head.clone();
        if mine.is_some() {
            tracing::error!(
                "fleet: Redis lost the fleet's state (flushed, restarted, restored from an older snapshot or failed over); dropping local entries and re-asserting the denials known here"
            );
            telemetry::fleet_resync("state_lost");
            if let Some(owner) = self.owner() {
                owner.drop_local();
            }
        }
        let mine_seq = mine.as_ref().map_or(0, |h| h.seq);
        let mut seen = seen;
        // A few rounds: another replica may start an incarnation meanwhile, numbered below
        // what this one knows (its clock behind); then this one starts another past it.
        for _ in 0..3 {
            let newer = match (&seen, &mine) {
                (Some(remote), _) if remote.restarted => false,
                (Some(remote), Some(mine)) => remote.incarnation != mine.incarnation && remote.seq > mine.seq,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !newer {
                let seq = mine_seq
                    .max(seen.as_ref().map_or(0, |h| h.seq))
                    .max(unix_micros(SystemTime::now()))
                    .saturating_add(1);
                let incarnation = Incarnation::random();
                if self
                    .start_incarnation(seen.as_ref(), incarnation, seq)
                    .await
                    .map_err(SyncFailed::Redis)?
                {
                    tracing::info!(seq, "fleet: started a new incarnation of the shared state");
                }
            }
            match self.adopt(false).await? {
                Taken::Known(known) => {
                    let adopted = self.view().head.clone();
                    let behind = adopted.as_ref().is_some_and(|a| {
                        mine.as_ref()
                            .is_some_and(|m| a.incarnation != m.incarnation && a.seq <= m.seq)
                    });
                    if behind {
                        seen = adopted.map(|a| RemoteHead {
                            incarnation: a.incarnation,
                            seq: a.seq,
                            link: a.link,
                            stream_id: a.stream_id,
                            restarted: false,
                        });
                        continue;
                    }
                    self.reassert(known);
                    return Ok(());
                }
                Taken::Lost(head) => seen = head,
            }
        }
        Err(SyncFailed::NoState)
    }

    /// The log cannot take entries any more (tampered with): start a new incarnation.
    pub(crate) async fn start_over(&self, held: &Held<'_>) -> Result<(), SyncFailed> {
        let stream_id = self
            .view()
            .head
            .as_ref()
            .map(|h| h.stream_id.clone())
            .unwrap_or_default();
        let read = self.read_after(&stream_id).await.map_err(SyncFailed::Redis)?;
        let seen = read.head.map(|mut head| {
            head.restarted = true;
            head
        });
        self.recover(held, seen).await
    }

    /// Queues, ahead of everything else, every denial known here that Redis's records lack.
    fn reassert(&self, known: Known) {
        let mut changes: Vec<Change> = self
            .view()
            .denied_clients()
            .into_iter()
            .filter(|(client, version)| {
                !known
                    .clients
                    .get(client)
                    .is_some_and(|(_, theirs)| *version != 0 && theirs >= version)
            })
            .map(|(client, version)| Change::Deny { client, version })
            .collect();
        // An allow Redis lost (restored from a snapshot taken before it) is re-asserted too,
        // lifting the older denial Redis holds, with its first version.
        changes.extend(
            self.view()
                .allowed_clients()
                .into_iter()
                .filter_map(|(client, version)| match known.clients.get(&client) {
                    Some((true, theirs)) if *theirs < version => Some(Change::Allow {
                        lifts: *theirs,
                        client,
                        version,
                    }),
                    _ => None,
                }),
        );
        let now = unix_millis(SystemTime::now());
        if let Some(owner) = self.owner() {
            changes.extend(owner.jwt_denials().into_iter().filter(|change| match change {
                Change::DenySession { id, until } => {
                    *until > now && known.sessions.get(id).is_none_or(|theirs| theirs < until)
                }
                Change::DenyTokenId { id, until } => {
                    *until > now && known.token_ids.get(id).is_none_or(|theirs| theirs < until)
                }
                _ => false,
            }));
        }
        if !changes.is_empty() {
            tracing::info!(
                count = changes.len(),
                "fleet: re-asserting the denials and allows Redis lacks"
            );
            let base = self.view().seq();
            self.outbox.push_front(changes, base);
        }
    }

    /// How long void records are kept.
    fn view_keep(&self) -> std::time::Duration {
        self.profile.ttl + self.profile.call_bound + std::time::Duration::from_secs(5)
    }
}
