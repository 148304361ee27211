//! The invalidation channel: one subscriber task per verifier, reconnecting with capped
//! backoff, re-reading the shared deny set and invalidate-all floor on every (re)subscription,
//! and proving the channel alive with heartbeats (every replica publishes one per
//! `heartbeat`; three silent periods count as a lost channel, which catches a hung Redis
//! that a TCP connection would not report).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;

use super::store::SharedView;
use super::{Event, Fleet};
use crate::telemetry;

/// How long connecting or subscribing may take before the attempt counts as failed.
const CONNECT_BOUND: Duration = Duration::from_secs(2);
/// First pause after a failed attempt; doubled up to `max_reconnect_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// What the channel does to the replica that owns it.
pub(crate) trait Replica: Send + Sync + 'static {
    /// Applies another replica's event to the local tiers.
    fn apply(&self, event: Event) -> BoxFuture<'_, ()>;
    /// The channel was lost: invalidations may be missed from now on, so drop everything
    /// cached locally.
    fn channel_lost(&self);
    /// (Re)subscribed: the shared deny set and JWT denials, and whether the invalidate-all
    /// floor moved since this replica last applied it.
    fn resynced(&self, view: SharedView, floor_moved: bool);
}

impl Fleet {
    /// Starts the subscriber task; it ends when `replica` is dropped.
    pub(crate) fn spawn_channel(self: &Arc<Self>, replica: Weak<dyn Replica>) {
        let fleet = Arc::clone(self);
        tokio::spawn(async move { fleet.run_channel(replica).await });
    }

    async fn run_channel(self: Arc<Self>, replica: Weak<dyn Replica>) {
        let mut backoff = FIRST_BACKOFF;
        while replica.strong_count() > 0 {
            let subscribed = self.subscribe().await;
            if subscribed.is_ok() && !self.drain(false).await && !self.outbox.is_empty() {
                // What this replica changed while Redis was away goes first when Redis takes
                // it; if it does not, the replica resubscribes anyway (it must hear the other
                // replicas' changes) and the heartbeat keeps trying.
                tracing::warn!(
                    "fleet: Redis did not take the changes made here while it was away; retrying on every heartbeat"
                );
            }
            match subscribed {
                Ok(pubsub) => match tokio::time::timeout(CONNECT_BOUND, self.shared_view()).await {
                    Ok(Ok(mut view)) => {
                        // An `allow_client` made here and not yet written wins over the
                        // shared deny set it is about to change.
                        view.denied_clients
                            .retain(|id| !self.outbox.queued_client_change(id, true));
                        backoff = FIRST_BACKOFF;
                        let moved = self.floor.fetch_max(view.floor, Ordering::AcqRel) < view.floor;
                        let Some(owner) = replica.upgrade() else { return };
                        owner.resynced(view, moved);
                        drop(owner);
                        self.connected.store(true, Ordering::Release);
                        telemetry::fleet_channel(true);
                        tracing::info!(prefix = self.codec.prefix(), "fleet: invalidation channel subscribed");
                        self.listen(pubsub, &replica).await;
                        self.connected.store(false, Ordering::Release);
                        telemetry::fleet_channel(false);
                        tracing::warn!(
                            "fleet: invalidation channel lost; local entries dropped, new ones kept at most {:?} until it is back",
                            self.config.disconnected_ttl
                        );
                        if let Some(owner) = replica.upgrade() {
                            owner.channel_lost();
                        }
                    }
                    Ok(Err(error)) => tracing::debug!(error = %error, "fleet: re-reading the shared state failed"),
                    Err(_) => tracing::debug!("fleet: re-reading the shared state timed out"),
                },
                Err(error) => tracing::debug!(error, "fleet: subscribing failed"),
            }
            tokio::time::sleep(backoff).await;
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

    /// Applies events until the channel closes or stays silent for three heartbeats.
    async fn listen(self: &Arc<Self>, mut pubsub: redis::aio::PubSub, replica: &Weak<dyn Replica>) {
        let channel = self.codec.channel();
        let mut messages = pubsub.on_message();
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        let silence = self.config.heartbeat * 3;
        let mut last = Instant::now();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return };
                    last = Instant::now();
                    match self.codec.decode_event(&channel, message.get_payload_bytes()) {
                        Some((_, Event::Heartbeat)) => {}
                        Some((from, _)) if from == self.replica => {}
                        // A `deny_client` made here and not yet written wins over another
                        // replica's allow of the same client (a denial wins).
                        Some((_, Event::Allow(id))) if self.outbox.queued_client_change(&id, false) => {}
                        Some((_, event)) => {
                            if let Event::Deny(id) = &event {
                                self.outbox.denied_elsewhere(id);
                            }
                            let Some(owner) = replica.upgrade() else { return };
                            owner.apply(event).await;
                            telemetry::fleet_event("applied");
                        }
                        None => {
                            tracing::warn!("fleet: ignored an event whose tag does not verify");
                            telemetry::fleet_event("refused");
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last.elapsed() > silence || replica.strong_count() == 0 {
                        return;
                    }
                    let fleet = Arc::clone(self);
                    tokio::spawn(async move {
                        fleet.publish(&Event::Heartbeat).await;
                        // Changes Redis did not take, while the channel stayed up.
                        if !fleet.outbox.is_empty() {
                            fleet.drain(false).await;
                        }
                    });
                }
            }
        }
    }
}
