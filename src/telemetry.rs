//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`; without
//! it every call here compiles to nothing). Install your recorder (Prometheus exporter, ...)
//! before building the layer: the hot-path counters are registered once, at construction.
//! The repository's `dashboards/tower-wacht.json` is a Grafana dashboard of these metrics
//! (`tests/dashboard.rs` checks it queries only what is emitted); `examples/fleet.rs` serves
//! them to Prometheus.
//!
//! | name | kind | labels | meaning |
//! | --- | --- | --- | --- |
//! | `wacht_verifications_total` | counter | `outcome`, `source` | every verification: `outcome` is `allowed`, `allowed_stale`, `invalid_token`, `insufficient_scope`, `rate_limited` or `unavailable`; `source` is `cache`, `gateway`, `jwt` (a JWT access token verified here), `negative_cache`, `stale`, `overload` (a miss refused because `max_inflight_gateway_calls` were in flight) or `meter` (a 429 of the rate-limit meters: a cached hit past the app's Wacht rule) |
//! | `wacht_verification_failures_total` | counter | `client_id`, `reason` | refusals of a token the gateway allowed, or of a verified JWT: `reason` is `pinning` (wrong deployment, issuer or audience), `client_not_allowed` or `tenant_not_accepted` (the allow lists; for these three `client_id` is always `other`), `denied_client` or `revoked` |
//! | `wacht_permission_denied_total` | counter | `client_id`, `permission` | guard refusals, one per missing permission |
//! | `wacht_cache_hits_total` / `wacht_cache_misses_total` | counter | | positive-cache lookups on the request path |
//! | `wacht_cache_evictions_total` | counter | `cause` | entries leaving the positive cache: `expired`, `size`, `explicit`, `replaced` |
//! | `wacht_gateway_request_duration_seconds` | histogram | | gateway call latency |
//! | `wacht_gateway_errors_total` | counter | `kind` | `timeout`, `connect`, `status`, `decode` |
//! | `wacht_stale_served_total` | counter | | requests answered from the outage grace (`stale_if_error`) |
//! | `wacht_refresh_total` | counter | `outcome` | background refresh-ahead checks: `allowed`, `invalid_token`, `failed` |
//! | `wacht_streams_ended_total` | counter | `reason` | streamed responses this crate ended before their body did: `expired` (the token's `expires_at`), `invalidated`, `denied_client`, `revoked` (a denied JWT session or token id) |
//! | `wacht_jwt_verifications_total` | counter | `outcome`, `reason` | local JWT verifications (cache misses of JWT access tokens): `outcome` is `allowed`, `invalid_token` or `unavailable`; `reason` is `none`, why it is unavailable (`no_jwks`: no key set loaded yet, `jwks_expired`: the key set is past `jwks_max_stale`, `kid_not_fetched`: no key set fetched since the token was issued holds its `kid`) or why the token was refused: `malformed`, `disallowed_alg`, `disallowed_header`, `unknown_kid`, `bad_signature`, `expired`, `not_yet_valid`, `lifetime_too_long`, `wrong_issuer`, `wrong_token_use`, `wrong_audience`, `user_mismatch`, `resource_audience_required` (a verified JWT refused by the allow lists counts as `allowed` here and in `wacht_verification_failures_total`) |
//! | `wacht_jwks_fetches_total` | counter | `result`, `cause` | JWKS fetches: `result` is `ok` or `error`; `cause` is `initial`, `stale`, `unknown_kid` or `timer` |
//! | `wacht_fleet_lookups_total` | counter | `result` | fleet mode, shared-tier lookups: `hit`, `rejected` (a shared 401), `miss`, `bad_mac` (an entry whose tag does not verify, ignored) |
//! | `wacht_fleet_leases_total` | counter | `result` | fleet-wide single flight: `won` (this replica asks the gateway), `waited` (another replica's answer used), `timed_out` (waited `lease_wait`, then asked itself) |
//! | `wacht_fleet_errors_total` | counter | `operation` | Redis failures and timeouts, by operation (`lookup`, `lease`, `write`, `read`, ...) |
//! | `wacht_fleet_events_total` | counter | `direction` | change-log traffic: `written` (an entry this replica appended), `applied` (a change applied to the local tiers), `announced` (a change Redis has not taken, sent on the channel), `replayed` (a log entry older than what is applied, ignored), `refused` (an entry, record or notice whose tag does not verify, ignored) |
//! | `wacht_fleet_resyncs_total` | counter | `cause` | times this replica re-read the shared state: `behind` (it fell behind the trimmed log), `state_lost` (Redis lost, rolled back or forked the fleet's state) |
//! | `wacht_fleet_channel_connected` | gauge | | 1 while this replica follows the fleet (notices heard, log read), 0 while it is lost |
//! | `wacht_webhooks_total` | counter | `event`, `result` | deliveries to [`WachtWebhooks`](crate::WachtWebhooks): `event` is the Wacht event name of a known event, `unknown` for any other, `none` when refused before the body was read; `result` is `acted`, `ignored` (a known event with no action), `unknown`, `duplicate` (a `webhook-id` handled before), `unsettled` (answered 503: the fleet has not taken the change), or why it was refused: `method`, `too_large`, `malformed`, `bad_signature`, `stale` |
//! | `wacht_audit_dropped_total` | counter | | audit records dropped because the [`AuditSink`](crate::audit::AuditSink)'s queue was full (or its receiver gone) |
//!
//! Labels never carry a token or key: client ids and permission names come from the gateway's
//! answer for a verified token; webhook event names are the crate's own list.
//!
//! **Bounded cardinality.** Client ids come from tokens, and anyone can obtain tokens for
//! new clients (dynamic registration; with client ID metadata documents a client id is any
//! https URL). So a `client_id` label holds a client's id only for the first
//! [`MAX_CLIENT_ID_LABELS`] distinct clients of the pinned tenant seen by this process;
//! every later client, and every client of another tenant (a pinning refusal), is labelled
//! `other`. Permission names come from your guards' configuration, which bounds them.

use std::time::Duration;

/// Most distinct values of the `client_id` label in this process; later clients are `other`.
pub const MAX_CLIENT_ID_LABELS: usize = 100;

/// The `client_id` label of a client of the pinned tenant: its id while fewer than
/// [`MAX_CLIENT_ID_LABELS`] distinct ids have been labelled, else `other`.
#[cfg(feature = "metrics")]
fn client_label(client_id: &str) -> String {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static LABELLED: OnceLock<Mutex<HashSet<Box<str>>>> = OnceLock::new();
    let mut labelled = LABELLED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if labelled.contains(client_id) {
        return client_id.to_owned();
    }
    if labelled.len() < MAX_CLIENT_ID_LABELS {
        labelled.insert(client_id.into());
        return client_id.to_owned();
    }
    "other".to_owned()
}

/// Metric names, for dashboards and tests.
pub mod names {
    /// Every verification, by `outcome` and `source`.
    pub const VERIFICATIONS: &str = "wacht_verifications_total";
    /// Refusals of tokens whose client is known, by `client_id` and `reason`.
    pub const VERIFICATION_FAILURES: &str = "wacht_verification_failures_total";
    /// Guard refusals by `client_id` and `permission`.
    pub const PERMISSION_DENIED: &str = "wacht_permission_denied_total";
    /// Positive-cache hits on the request path.
    pub const CACHE_HITS: &str = "wacht_cache_hits_total";
    /// Positive-cache misses on the request path.
    pub const CACHE_MISSES: &str = "wacht_cache_misses_total";
    /// Positive-cache evictions by `cause`.
    pub const CACHE_EVICTIONS: &str = "wacht_cache_evictions_total";
    /// Gateway call latency in seconds.
    pub const GATEWAY_DURATION: &str = "wacht_gateway_request_duration_seconds";
    /// Gateway errors by `kind`.
    pub const GATEWAY_ERRORS: &str = "wacht_gateway_errors_total";
    /// Requests served from the outage grace.
    pub const STALE_SERVED: &str = "wacht_stale_served_total";
    /// Background refreshes by `outcome`.
    pub const REFRESHES: &str = "wacht_refresh_total";
    /// Streamed responses ended because their caller no longer stands, by `reason`.
    pub const STREAMS_ENDED: &str = "wacht_streams_ended_total";
    /// Local JWT verifications by `outcome` and `reason`.
    pub const JWT_VERIFICATIONS: &str = "wacht_jwt_verifications_total";
    /// JWKS fetches by `result` and `cause`.
    pub const JWKS_FETCHES: &str = "wacht_jwks_fetches_total";
    /// Fleet mode: shared-tier lookups by `result`.
    pub const FLEET_LOOKUPS: &str = "wacht_fleet_lookups_total";
    /// Fleet mode: leases by `result`.
    pub const FLEET_LEASES: &str = "wacht_fleet_leases_total";
    /// Fleet mode: Redis errors by `operation`.
    pub const FLEET_ERRORS: &str = "wacht_fleet_errors_total";
    /// Fleet mode: change-log traffic by `direction`.
    pub const FLEET_EVENTS: &str = "wacht_fleet_events_total";
    /// Fleet mode: re-reads of the shared state by `cause`.
    pub const FLEET_RESYNCS: &str = "wacht_fleet_resyncs_total";
    /// Fleet mode: 1 while this replica follows the fleet (notices heard, log read).
    pub const FLEET_CHANNEL: &str = "wacht_fleet_channel_connected";
    /// Wacht webhook deliveries by `event` and `result`.
    pub const WEBHOOKS: &str = "wacht_webhooks_total";
    /// Audit records dropped because the sink's queue was full (or its receiver gone).
    pub const AUDIT_DROPPED: &str = "wacht_audit_dropped_total";
}

/// Pre-registered handles for the per-request counters.
#[derive(Clone)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    hits: metrics::Counter,
    #[cfg(feature = "metrics")]
    hit_verifications: metrics::Counter,
    #[cfg(feature = "metrics")]
    misses: metrics::Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        {
            Metrics {
                hits: metrics::counter!(names::CACHE_HITS),
                hit_verifications: metrics::counter!(names::VERIFICATIONS, "outcome" => "allowed", "source" => "cache"),
                misses: metrics::counter!(names::CACHE_MISSES),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Metrics {}
    }

    #[inline]
    pub(crate) fn cache_hit(&self) {
        #[cfg(feature = "metrics")]
        self.hits.increment(1);
    }

    /// A hit served (its meters, if any, let it through): the verification it stands for.
    #[inline]
    pub(crate) fn hit_served(&self) {
        #[cfg(feature = "metrics")]
        self.hit_verifications.increment(1);
    }

    #[inline]
    pub(crate) fn cache_miss(&self) {
        #[cfg(feature = "metrics")]
        self.misses.increment(1);
    }
}

pub(crate) fn audit_dropped() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::AUDIT_DROPPED).increment(1);
}

pub(crate) fn verification(outcome: &'static str, source: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::VERIFICATIONS, "outcome" => outcome, "source" => source).increment(1);
    let _ = (outcome, source);
}

/// A refusal of a token of the pinned tenant whose client is known (a denied client).
pub(crate) fn failure(client_id: &str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::VERIFICATION_FAILURES, "client_id" => client_label(client_id), "reason" => reason)
        .increment(1);
    let _ = (client_id, reason);
}

/// A refusal of a token that failed a pin: possibly another tenant's, so never labelled by
/// its client id.
pub(crate) fn foreign_failure(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::VERIFICATION_FAILURES, "client_id" => "other", "reason" => reason).increment(1);
    let _ = reason;
}

pub(crate) fn permission_denied(client_id: &str, permission: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::PERMISSION_DENIED, "client_id" => client_label(client_id), "permission" => permission.to_owned())
        .increment(1);
    let _ = (client_id, permission);
}

#[cfg(feature = "metrics")]
pub(crate) fn eviction(cause: &'static str) {
    metrics::counter!(names::CACHE_EVICTIONS, "cause" => cause).increment(1);
}

pub(crate) fn gateway_call(latency: Duration, error: Option<&'static str>) {
    #[cfg(feature = "metrics")]
    {
        metrics::histogram!(names::GATEWAY_DURATION).record(latency.as_secs_f64());
        if let Some(kind) = error {
            metrics::counter!(names::GATEWAY_ERRORS, "kind" => kind).increment(1);
        }
    }
    let _ = (latency, error);
}

pub(crate) fn stale_served() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::STALE_SERVED).increment(1);
}

pub(crate) fn refresh(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::REFRESHES, "outcome" => outcome).increment(1);
    let _ = outcome;
}

pub(crate) fn stream_ended(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::STREAMS_ENDED, "reason" => reason).increment(1);
    let _ = reason;
}

pub(crate) fn jwt_verification(outcome: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::JWT_VERIFICATIONS, "outcome" => outcome, "reason" => reason).increment(1);
    let _ = (outcome, reason);
}

pub(crate) fn jwks_fetch(result: &'static str, cause: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::JWKS_FETCHES, "result" => result, "cause" => cause).increment(1);
    let _ = (result, cause);
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_lookup(result: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FLEET_LOOKUPS, "result" => result).increment(1);
    let _ = result;
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_lease(result: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FLEET_LEASES, "result" => result).increment(1);
    let _ = result;
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_error(operation: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FLEET_ERRORS, "operation" => operation).increment(1);
    let _ = operation;
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_event(direction: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FLEET_EVENTS, "direction" => direction).increment(1);
    let _ = direction;
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_resync(cause: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FLEET_RESYNCS, "cause" => cause).increment(1);
    let _ = cause;
}

#[cfg(feature = "redis")]
pub(crate) fn fleet_channel(connected: bool) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(names::FLEET_CHANNEL).set(if connected { 1.0 } else { 0.0 });
    let _ = connected;
}

/// A Wacht webhook delivery: `event` from the receiver's own list, `result` a fixed word.
pub(crate) fn webhook(event: &'static str, result: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::WEBHOOKS, "event" => event, "result" => result).increment(1);
    let _ = (event, result);
}
