//! [`Entry`]: a verified token as the caches hold it, its refresh-ahead state, and what it
//! weighs against the cache's byte budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::principal::{Principal, RequestId, ResourceUrn, StringSet};

/// A verified token as cached: the principal, when to stop serving it, and (with
/// refresh-ahead) when to re-verify it in the background.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) principal: Principal,
    /// `min(insertion + ttl, token expiry)`.
    pub(crate) deadline: Instant,
    /// The invalidation generation when the gateway call that produced it started.
    pub(crate) stamp: u64,
    pub(crate) refresh: Option<Arc<Refresh>>,
    /// False when the outage grace may not serve it past `deadline` (fleet mode, verified
    /// while without the fleet: `disconnected_ttl` is the bound).
    pub(crate) graceful: bool,
    /// When the answer was asked for (before the call), if known: `None` for a copy of the
    /// fleet's shared tier, whose age is not known here (read by `max_cache_age` layers only).
    pub(crate) verified_at: Option<Instant>,
    /// What the credential counts against, route by route (see [`rate_limit`](crate::rate_limit));
    /// `None` when not metered (metering off, a JWT). Shared by every copy, and handed on to
    /// the credential's next entry.
    pub(crate) meters: Option<Arc<crate::rate_limit::RouteMeters>>,
}

/// Refresh-ahead state of one entry: shared by every copy, so one request claims it.
pub(crate) struct Refresh {
    pub(crate) at: Instant,
    started: AtomicBool,
}

impl Refresh {
    pub(crate) fn new(at: Instant) -> Self {
        Refresh {
            at,
            started: AtomicBool::new(false),
        }
    }

    /// True for exactly one caller once the refresh time has come.
    pub(crate) fn claim(&self) -> bool {
        !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::AcqRel)
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.at && !self.started.load(Ordering::Relaxed)
    }
}

impl Entry {
    /// The refresh handle if a background re-verification is due and not yet claimed.
    pub(crate) fn refresh_due(&self, now: Instant) -> Option<&Arc<Refresh>> {
        self.refresh.as_ref().filter(|r| r.due(now))
    }
}

/// Estimated bytes a cached principal holds: fixed overhead (the entry, the principal, moka's
/// bookkeeping) plus every string it carries, shared or not (interning makes the real cost
/// lower, never higher). A cache of principals weighed by this stays within its byte budget
/// whatever the gateway answers.
fn estimated_bytes(principal: &Principal) -> usize {
    const FIXED: usize = 320;
    const PER_STRING: usize = 16;
    let strings = |set: &StringSet| set.iter().map(|s| s.len() + PER_STRING).sum::<usize>();
    let grant = principal.grant();
    FIXED
        + grant.client_id.as_str().len()
        + strings(&grant.scopes)
        + strings(&grant.permissions)
        + grant.issuer.as_deref().map_or(0, str::len)
        + grant.oauth_resource.as_deref().map_or(0, str::len)
        + grant.session_id.as_deref().map_or(0, str::len)
        + grant.token_id.as_deref().map_or(0, str::len)
        + grant.request_id.as_ref().map_or(0, RequestId::heap_bytes)
        + match &grant.granted_resource {
            Some(ResourceUrn::Other(raw)) => raw.len(),
            _ => 0,
        }
}

/// moka weight of a cached principal under a byte budget shared with an entry limit: its
/// estimated bytes, but at least `budget / max_entries`, so that both limits hold with one
/// moka capacity (the budget).
pub(crate) fn weight(principal: &Principal, min_weight: u64) -> u32 {
    let bytes = u64::try_from(estimated_bytes(principal)).unwrap_or(u64::MAX);
    u32::try_from(bytes.max(min_weight)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod weight_tests {
    use super::*;
    use crate::principal::Grant;
    use std::time::SystemTime;

    #[test]
    fn every_string_a_gateway_sends_is_weighed() {
        let plain = Principal::from_grant(Grant::new("oc_a", SystemTime::now()));
        let base = estimated_bytes(&plain);
        let long = "x".repeat(100_000);
        for (field, grant) in [
            ("request_id", {
                let mut g = Grant::new("oc_a", SystemTime::now());
                g.request_id = Some(RequestId::new(&long));
                g
            }),
            ("session_id", {
                let mut g = Grant::new("oc_a", SystemTime::now());
                g.session_id = Some(long.as_str().into());
                g
            }),
            ("token_id", {
                let mut g = Grant::new("oc_a", SystemTime::now());
                g.token_id = Some(long.as_str().into());
                g
            }),
        ] {
            let weighed = estimated_bytes(&Principal::from_grant(grant));
            assert!(weighed >= base + long.len(), "{field}: {weighed}");
        }
    }
}
