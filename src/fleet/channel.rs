//! The channel task: one per verifier. It subscribes to the profile's notices, reads the
//! change log on every notice and every heartbeat, publishes this replica's heartbeat (saying
//! whether it holds unwritten changes), announces and retries what Redis has not taken, takes
//! over what silent replicas left, and reconnects with jittered, capped backoff. A watchdog
//! beside it applies [`OutOfSync`](super::OutOfSync) once the fleet has been unheard for too
//! long.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;

use std::time::SystemTime;

use super::records::{Change, Notice, unix_millis};
use super::view::Effect;
use super::{Fleet, OutOfSync};
use crate::telemetry;

/// How long connecting, subscribing or the first read may take before the attempt counts as
/// failed.
const CONNECT_BOUND: Duration = Duration::from_secs(2);
/// First pause after a failed attempt; doubled up to `max_reconnect_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How many heartbeats between two checks of the shared-secret marker.
const MARKER_EVERY: u32 = 30;
/// Clock skew allowed between replicas when judging whether a notice is fresh.
const NOTICE_SKEW: Duration = Duration::from_secs(5);

/// What the fleet does to the replica that owns it.
pub(crate) trait Replica: Send + Sync + 'static {
    /// Applies a change to the local tiers.
    fn apply(&self, effect: Effect) -> BoxFuture<'_, ()>;
    /// Changes may have been missed: drop everything cached locally.
    fn drop_local(&self);
    /// The live JWT session and token-id denials known here (to re-assert them).
    fn jwt_denials(&self) -> Vec<Change>;
}

impl Fleet {
    /// Starts the channel task and the watchdog; they end when `owner` is dropped.
    pub(crate) fn spawn_channel(self: &Arc<Self>, owner: Weak<dyn Replica>) {
        let _ = self.owner.set(owner);
        let fleet = Arc::clone(self);
        tokio::spawn(async move { fleet.run_channel().await });
        let fleet = Arc::downgrade(self);
        tokio::spawn(watchdog(fleet));
    }

    fn owner_alive(&self) -> bool {
        self.owner.get().is_some_and(|o| o.strong_count() > 0)
    }

    async fn run_channel(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        // Whether this replica had the fleet and lost it.
        let mut lost_before = false;
        while self.owner_alive() {
            match self.subscribe().await {
                Ok(pubsub) => {
                    if self.read_log().await {
                        backoff = FIRST_BACKOFF;
                        self.touch();
                        if lost_before {
                            // Before `connected`: another replica may have queued changes
                            // while Redis was out of reach and not be back (or not have
                            // written them) yet; its announcements went by meanwhile. The
                            // shared tier, which may hold answers they void, is skipped for as
                            // long as a replica takes to notice Redis is back and write them.
                            let bound = self.config.heartbeat * 3 + self.config.max_reconnect_backoff;
                            self.view().rejoin(Instant::now() + bound);
                        }
                        // Before `connected`: a status that says connected has checked the
                        // shared-secret marker (`foreign_secrets` is current).
                        self.check_secret(true).await;
                        self.connected.store(true, Ordering::Release);
                        telemetry::fleet_channel(true);
                        tracing::info!(prefix = self.codec.prefix(), "fleet: connected; reading the change log");
                        self.spawn_writer();
                        self.listen(pubsub).await;
                        self.connected.store(false, Ordering::Release);
                        lost_before = true;
                        telemetry::fleet_channel(false);
                        tracing::warn!(
                            "fleet: lost the fleet; local entries dropped, new ones kept at most {:?} until it is back",
                            self.config.disconnected_ttl
                        );
                        if let Some(owner) = self.owner() {
                            owner.drop_local();
                        }
                    }
                }
                Err(error) => tracing::debug!(error, "fleet: subscribing failed"),
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.config.max_reconnect_backoff);
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let mut pubsub = tokio::time::timeout(CONNECT_BOUND, self.client.get_async_pubsub())
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(CONNECT_BOUND, pubsub.subscribe(self.codec.channel()))
            .await
            .map_err(|_| "subscribe timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(pubsub)
    }

    /// Reads (and applies) the log; true if it was read. Only the wait for another reader or
    /// writer is bounded (three heartbeats): a read itself is never cancelled half-way, which
    /// could move the view past changes whose effects were not applied yet (each Redis call
    /// has its own response timeout).
    async fn read_log(&self) -> bool {
        let Ok(held) = tokio::time::timeout(self.config.heartbeat * 3, self.protocol.lock()).await else {
            tracing::debug!("fleet: the change log is busy (a writer waits on Redis)");
            return false;
        };
        match self.sync(&held).await {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(error = ?error, "fleet: reading the change log failed");
                telemetry::fleet_error("read");
                false
            }
        }
    }

    /// The fleet was heard now.
    fn touch(&self) {
        self.last_contact.store(self.millis_since_start(), Ordering::Release);
    }

    /// Follows the fleet until it is lost: nothing heard, or the log unreadable, for three
    /// heartbeats.
    async fn listen(self: &Arc<Self>, mut pubsub: redis::aio::PubSub) {
        let mut messages = pubsub.on_message();
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        let silence = self.config.heartbeat * 3;
        let (mut heard, mut read, mut beat) = (Instant::now(), Instant::now(), Instant::now());
        let mut ticks = 0u32;
        loop {
            // Time spent reading the log is not silence: notices wait meanwhile.
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return };
                    heard = Instant::now();
                    self.hear(message.get_payload_bytes()).await;
                }
                () = self.wake.notified() => {
                    let started = Instant::now();
                    if self.read_log().await {
                        read = Instant::now();
                    }
                    heard = heard.max(started);
                }
                _ = heartbeat.tick() => {
                    if !self.owner_alive() || heard.elapsed() > silence {
                        return;
                    }
                    let started = Instant::now();
                    if self.read_log().await {
                        read = Instant::now();
                        self.touch();
                    } else if read.elapsed() > silence {
                        return;
                    }
                    heard = heard.max(started);
                    // Busy since the last beat (a long read): the other replicas were not
                    // silent, this one was not listening; nothing is taken over this time.
                    let listening = beat.elapsed() <= self.config.heartbeat * 2;
                    self.beat(ticks, listening).await;
                    beat = Instant::now();
                    ticks = ticks.wrapping_add(1);
                }
            }
        }
    }

    /// One notice from the channel.
    async fn hear(&self, message: &[u8]) {
        let Some((from, notice)) = self.codec.decode_notice(message) else {
            tracing::warn!("fleet: ignored a notice whose tag does not verify");
            telemetry::fleet_event("refused");
            return;
        };
        if from.replica == self.replica {
            return;
        }
        if notice == Notice::Appended {
            // A wake-up only: reading the log is always safe.
            self.read_log().await;
            return;
        }
        let now = Instant::now();
        let window = super::millis(self.config.heartbeat * 3 + NOTICE_SKEW);
        if !self.view().fresh(from, now, unix_millis(SystemTime::now()), window) {
            tracing::warn!("fleet: ignored a replayed or stale notice");
            telemetry::fleet_event("replayed");
            self.ignored_notices.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match notice {
            Notice::Appended => {}
            Notice::Heartbeat { pending } => self.view().heartbeat(from.replica, pending, now),
            Notice::Unwritten { id, base: _, change } => {
                let effect = self.view().apply_unwritten(from.replica, id, change, now);
                if let Some(effect) = effect {
                    tracing::info!("fleet: applied a change another replica could not write to Redis yet");
                    self.apply_effects(vec![effect]).await;
                }
            }
        }
    }

    /// Every heartbeat: say this replica is alive (and whether it holds unwritten changes),
    /// retry and announce those, take over what silent replicas left, check the secret.
    async fn beat(self: &Arc<Self>, ticks: u32, listening: bool) {
        let pending = !self.outbox.is_empty();
        self.publish(&Notice::Heartbeat { pending }).await;
        if listening {
            let orphans = self.view().orphans(Instant::now(), self.config.heartbeat * 3);
            self.take_over(orphans);
        }
        if !self.outbox.is_empty() {
            self.spawn_writer();
            if pending {
                // Beside the channel, never in its way: a long round of announcements must
                // not silence this replica's reading and heartbeats.
                let fleet = Arc::clone(self);
                tokio::spawn(async move { fleet.announce().await });
            }
        }
        if ticks % MARKER_EVERY == MARKER_EVERY - 1 {
            self.check_secret(false).await;
        }
    }
}

/// Applies [`OutOfSync`] while the replica runs: checks four times per heartbeat whether the
/// fleet has been unheard past the bound.
async fn watchdog(fleet: Weak<Fleet>) {
    let Some(every) = fleet.upgrade().map(|f| f.config.heartbeat / 4) else {
        return;
    };
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let Some(fleet) = fleet.upgrade() else { return };
        if !fleet.owner_alive() {
            return;
        }
        let unheard = fleet
            .millis_since_start()
            .saturating_sub(fleet.last_contact.load(Ordering::Acquire));
        let out = fleet.config.out_of_sync == OutOfSync::FailClosed
            && unheard > super::millis(fleet.config.out_of_sync_after());
        let was = fleet.refusing.swap(out, Ordering::AcqRel);
        if out && !was {
            tracing::error!(
                "fleet: without the fleet for longer than 3 × heartbeat + disconnected_ttl; refusing every request (503) until it is back (out_of_sync = FailClosed)"
            );
            // Open streams too: a denial made elsewhere may cover them.
            if let Some(owner) = fleet.owner() {
                owner.drop_local();
            }
        } else if was && !out {
            tracing::info!("fleet: back with the fleet; serving again");
        }
    }
}

/// `d` shortened by a random part of up to half, so replicas that lost Redis together do not
/// come back in step.
fn jitter(d: Duration) -> Duration {
    let part = super::random_u64() % 1000;
    d.mul_f64(0.5 + f64::from(u32::try_from(part).unwrap_or(0)) / 2000.0)
}
