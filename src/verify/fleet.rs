//! The verifier's side of fleet mode: building the fleet tier for this check profile, handing
//! it the changes made here, and applying the fleet's changes to the local tiers.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use futures_util::future::BoxFuture;

use super::Verifier;
use crate::change::ChangeOutcome;
use crate::config::{RouteReporting, WachtAuthConfig};
use crate::error::ConfigError;
use crate::fleet::{Change, Effect, Fleet, FleetStatus, Profile, Replica};

/// The fleet tier `config` asks for, if any.
pub(super) fn start(config: &WachtAuthConfig) -> Result<Option<Arc<Fleet>>, ConfigError> {
    let Some(fleet) = &config.fleet else {
        return Ok(None);
    };
    let id = profile_id(config);
    let profile = Profile {
        id,
        ttl: config.cache.ttl,
        negative_ttl: config.cache.negative_ttl,
        call_bound: super::miss::call_bound(&config.gateway),
    };
    Ok(Some(Arc::new(Fleet::new(fleet, profile)?)))
}

/// The check profile's id: everything that changes a decision or how long it is kept, so that
/// replicas that differ in any of it never share (a replica with a longer ttl would undo a
/// shorter one's bound).
fn profile_id(config: &WachtAuthConfig) -> String {
    // The route a miss reports changes none of the answers the tier keeps (the gateway's
    // allow or 401 does not depend on it; a rate limit, which may, is never shared), so answers
    // are shared by credential whatever route asked first. Reporting the request's route (or
    // a mapped one) takes the place of the former default, `GET /`, in the profile: a fleet
    // upgraded from that default keeps its profile and so its denial records. The fixed mode
    // keeps its method and resource where they always were.
    let (method, resource) = match &config.gateway.route {
        RouteReporting::Fixed => (config.gateway.method.as_str(), config.gateway.resource.as_str()),
        _ => ("GET", "/"),
    };
    let pins = &config.pins;
    let mut id = format!(
        "{}\0{}\0{}\0{:?}\0{:?}\0{:?}\0{}\0ttl={:?}\0negative_ttl={:?}",
        config.gateway.gateway_url,
        method,
        resource,
        pins.expected_deployment_id.map(|d| d.get()),
        pins.expected_issuer,
        pins.expected_audience,
        pins.accept_any_deployment,
        config.cache.ttl,
        config.cache.negative_ttl,
    );
    if !config.api_keys.prefixes.is_empty() {
        // Which credentials are keys decides how the gateway is asked about them: replicas
        // that classify differently never share. (Appended only when set, so a fleet without
        // keys keeps its profile.)
        id.push_str(&format!("\0api_keys={:?}", config.api_keys.prefixes));
    }
    id
}

/// How often a replica adds what its meters served to the fleet's count when no batch filled
/// (so the others see it within this, plus a round trip).
const METER_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Adds the meters' unflushed requests to the fleet's count every `every`, until the
/// verifier is dropped.
async fn flush_meters_every(verifier: Weak<Verifier>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            let Some(strong) = verifier.upgrade() else {
                return;
            };
            let half_full = async {
                match &strong.metering {
                    Some(metering) => metering.half_full().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                () = half_full => {}
            }
            strong.flush_meters().await;
        }
        // The verifier is not held between flushes: dropping it ends this task.
    }
}

/// A change handed to the fleet (or not: no fleet mode).
pub(super) enum Handed {
    NoFleet,
    Fleet(crate::fleet::Submitted),
}

impl Handed {
    /// True if the fleet refused to keep it.
    pub(super) fn refused(&self) -> bool {
        matches!(self, Handed::Fleet(Err(_)))
    }
}

impl Verifier {
    /// Starts the fleet's channel (fleet mode): it applies the fleet's changes here until
    /// this verifier is dropped.
    pub(crate) fn start_fleet(self: &Arc<Self>) {
        if let Some(fleet) = &self.fleet {
            let weak: Weak<Verifier> = Arc::downgrade(self);
            fleet.spawn_channel(weak.clone());
            if self.metering.as_ref().is_some_and(|m| m.is_shared()) {
                tokio::spawn(flush_meters_every(weak, METER_FLUSH_INTERVAL));
            }
        }
    }

    /// In fleet mode, queues a change for the fleet. Called before the local effect: from
    /// then on, misses here skip the shared tier until the change is written.
    pub(super) fn hand(&self, change: impl FnOnce() -> Change) -> Handed {
        match &self.fleet {
            Some(fleet) => Handed::Fleet(fleet.submit(change())),
            None => Handed::NoFleet,
        }
    }

    /// What became of a handed change (waits, boundedly, for Redis to take it).
    pub(super) async fn settle(&self, handed: Handed) -> ChangeOutcome {
        match (handed, &self.fleet) {
            (Handed::Fleet(submitted), Some(fleet)) => fleet.settle(submitted).await,
            _ => ChangeOutcome::Applied,
        }
    }

    /// Lifts a client's denial through the fleet: only the denial this replica knows is
    /// lifted, and only once the log has it (a newer denial made anywhere wins).
    pub(super) async fn allow_through_fleet(&self, fleet: &Arc<Fleet>, client_id: &str) -> ChangeOutcome {
        // A denial held here alone (the fleet refused to keep it) is lifted whatever the
        // fleet says.
        let local = self.denied.remove(client_id);
        match fleet.client_state(client_id) {
            Some(crate::fleet::ClientState::Denied { version }) => {
                let submitted = fleet.submit(Change::Allow {
                    client: client_id.to_owned(),
                    lifts: version,
                    version: 0,
                });
                fleet.settle(submitted).await
            }
            Some(crate::fleet::ClientState::Pending { .. }) => {
                ChangeOutcome::Refused(crate::change::RefusalReason::PendingDenial)
            }
            _ if local => ChangeOutcome::Applied,
            _ => ChangeOutcome::Unchanged,
        }
    }

    /// True while this verifier follows its fleet (always false without fleet mode).
    pub fn fleet_connected(&self) -> bool {
        self.fleet.as_ref().is_some_and(|f| f.is_connected())
    }

    /// How this replica stands with its fleet (`None` without fleet mode): for health
    /// checks, and to watch a Redis fault from the outside.
    pub fn fleet_status(&self) -> Option<FleetStatus> {
        self.fleet.as_ref().map(|f| f.status())
    }

    /// True while fleet mode refuses every request ([`OutOfSync::FailClosed`](crate::fleet::OutOfSync::FailClosed)).
    pub(super) fn fleet_refuses(&self) -> bool {
        self.fleet.as_ref().is_some_and(|f| f.refuses_requests())
    }
}

impl Replica for Verifier {
    fn apply(&self, effect: Effect) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match effect {
                Effect::Token(hash) => {
                    self.cache.invalidate_token(hash).await;
                    self.cache.forget_rejection(&hash).await;
                }
                Effect::Client(id) => self.cache.invalidate_client(&id),
                Effect::Target(target) => self.cache.invalidate_target(target),
                Effect::All => self.cache.invalidate_all(),
                // The fleet's view is the record of run-time denials (`is_denied`): a denial
                // only has cached answers to drop, an allow nothing to do here.
                Effect::Deny(id) => self.cache.invalidate_client(&id),
                Effect::Allow(_) => {}
                Effect::DenySession(id, until) => {
                    // Whatever the fleet says, a denial lasts no longer than one made here.
                    let until = until.min(SystemTime::now() + self.revoked.session_lifetime());
                    self.revoked.deny_session_until(&id, until);
                    self.cache.invalidate_session(&id);
                }
                Effect::DenyTokenId(id, until) => {
                    let until = until.min(SystemTime::now() + self.revoked.token_id_lifetime());
                    self.revoked.deny_token_id_until(&id, until);
                    self.cache.invalidate_token_id(&id);
                }
            }
        })
    }

    fn drop_local(&self) {
        self.cache.invalidate_all();
    }

    fn jwt_denials(&self) -> Vec<Change> {
        let millis = |at: SystemTime| {
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let (sessions, token_ids) = self.revoked.live();
        sessions
            .into_iter()
            .map(|(id, until)| Change::DenySession {
                id,
                until: millis(until),
            })
            .chain(token_ids.into_iter().map(|(id, until)| Change::DenyTokenId {
                id,
                until: millis(until),
            }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        configure: impl FnOnce(crate::WachtAuthConfigBuilder) -> crate::WachtAuthConfigBuilder,
    ) -> WachtAuthConfig {
        configure(WachtAuthConfig::builder().expected_deployment_id(418223109876543489))
            .build()
            .unwrap()
    }

    #[test]
    fn the_fixed_mode_keeps_the_profile_it_had_before_request_routes() {
        let fixed = config(|b| b.report_fixed(http::Method::POST, "/mcp"));
        let before = format!(
            "{}\0POST\0/mcp\0Some(418223109876543489)\0None\0None\0false\0ttl={:?}\0negative_ttl={:?}",
            fixed.gateway.gateway_url, fixed.cache.ttl, fixed.cache.negative_ttl
        );
        assert_eq!(profile_id(&fixed), before);
    }

    #[test]
    fn request_routes_keep_the_former_defaults_profile_and_never_name_a_route() {
        let request = profile_id(&config(|b| b));
        let former_default = profile_id(&config(|b| b.report_fixed(http::Method::GET, "/")));
        let mapped = profile_id(&config(|b| b.report_route(|_| None)));
        // Upgraded from `GET /` (the former default), a fleet keeps its profile, its denial
        // records with it.
        assert_eq!(request, former_default);
        assert_eq!(request, mapped);
        // The fixed values are not the request mode's: two request-mode replicas share
        // whatever their fixed values (used by `Verifier::verify` only).
        let other = profile_id(&config(|b| b.resource("/other").report_request_route()));
        assert_eq!(request, other);
        // Another fixed route is another profile, as before.
        assert_ne!(
            request,
            profile_id(&config(|b| b.report_fixed(http::Method::GET, "/other")))
        );
    }

    #[test]
    fn api_key_prefixes_are_in_the_profile_only_when_set() {
        let plain = profile_id(&config(|b| b));
        let keys = profile_id(&config(|b| b.api_key_prefixes(["sk_live"])));
        assert!(!plain.contains("api_keys"), "{plain}");
        assert_ne!(plain, keys);
        assert_ne!(keys, profile_id(&config(|b| b.api_key_prefixes(["sk_test"]))));
    }
}
