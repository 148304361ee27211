//! The verifier's side of fleet mode: building the fleet tier for this check profile, sending
//! its invalidations to the fleet, and applying the fleet's events to the local tiers.

use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;

use super::Verifier;
use crate::config::WachtAuthConfig;
use crate::error::ConfigError;
use crate::fleet::{Event, Fleet, Profile, Replica, SharedView};

/// The fleet tier `config` asks for, if any.
pub(super) fn start(config: &WachtAuthConfig) -> Result<Option<Arc<Fleet>>, ConfigError> {
    let Some(fleet) = &config.fleet else {
        return Ok(None);
    };
    // Everything that changes a decision: replicas that differ in any of it never share.
    let pins = &config.pins;
    let id = format!(
        "{}\0{}\0{}\0{:?}\0{:?}\0{:?}\0{}",
        config.gateway.gateway_url,
        config.gateway.method,
        config.gateway.resource,
        pins.expected_deployment_id.map(|d| d.get()),
        pins.expected_issuer,
        pins.expected_audience,
        pins.accept_any_deployment,
    );
    let profile = Profile {
        id,
        ttl: config.cache.ttl,
        negative_ttl: config.cache.negative_ttl,
        call_bound: super::miss::call_bound(&config.gateway),
    };
    Ok(Some(Arc::new(Fleet::new(fleet, profile)?)))
}

impl Verifier {
    /// Starts the invalidation channel (fleet mode): it applies other replicas' events here
    /// until this verifier is dropped.
    pub(crate) fn start_fleet(self: &Arc<Self>) {
        if let Some(fleet) = &self.fleet {
            let weak: Weak<Verifier> = Arc::downgrade(self);
            fleet.spawn_channel(weak);
        }
    }

    /// In fleet mode, queues a change for the shared state. Called before the local effect:
    /// from then on, misses here skip the shared tier until the change is written.
    pub(super) fn enqueue(&self, event: impl FnOnce() -> Event) {
        if let Some(fleet) = &self.fleet {
            fleet.enqueue(event());
        }
    }

    /// Writes the queued changes in the background (the local effect has already happened).
    /// Without a Tokio runtime here, the channel's next heartbeat writes them.
    pub(super) fn send_to_fleet(&self) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let fleet = Arc::clone(fleet);
                runtime.spawn(async move { fleet.drain(false).await });
            }
            Err(_) => tracing::debug!("fleet: no Tokio runtime here: the next heartbeat sends this change"),
        }
    }

    /// True while this verifier's invalidation channel is subscribed (always false without
    /// fleet mode).
    pub fn fleet_connected(&self) -> bool {
        self.fleet.as_ref().is_some_and(|f| f.is_connected())
    }
}

impl Replica for Verifier {
    fn apply(&self, event: Event) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match event {
                Event::Heartbeat => {}
                Event::Token(hash) => {
                    self.cache.invalidate_token(hash).await;
                    self.cache.forget_rejection(&hash).await;
                }
                Event::Client(id) => self.cache.invalidate_client(&id),
                Event::All => self.cache.invalidate_all(),
                Event::Deny(id) => {
                    self.denied.insert_shared(&id);
                    self.cache.invalidate_client(&id);
                }
                Event::Allow(id) => self.denied.remove(&id),
                Event::DenySession(id) => {
                    self.revoked.deny_session(&id);
                    self.cache.invalidate_session(&id);
                }
                Event::DenyTokenId(id) => {
                    self.revoked.deny_token_id(&id);
                    self.cache.invalidate_token_id(&id);
                }
            }
            tracing::debug!("fleet: applied an invalidation from another replica");
        })
    }

    fn channel_lost(&self) {
        self.cache.invalidate_all();
    }

    fn resynced(&self, view: SharedView, floor_moved: bool) {
        for id in view.denied_clients {
            if self.denied.insert_shared(&id) {
                self.cache.invalidate_client(&id);
            }
        }
        for (id, until) in view.denied_sessions {
            if self.revoked.deny_session_until(&id, until) {
                self.cache.invalidate_session(&id);
            }
        }
        for (id, until) in view.denied_token_ids {
            if self.revoked.deny_token_id_until(&id, until) {
                self.cache.invalidate_token_id(&id);
            }
        }
        if floor_moved {
            self.cache.invalidate_all();
        }
    }
}
