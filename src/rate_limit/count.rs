//! What the meters say of one request: each rule of its route counts it, and the request is
//! served with the tightest budget, refused with the spent one that resets last, or held for
//! the fleet's count ([`Admission`]). The hit path's part of metering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Count, Meter, Metering, RouteMeters, RouteRef, Rule};

/// The budget a response reports: its most constrained rule. Small (it travels with the
/// request to its response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    /// The rule: its label (the `RateLimit-Policy` name), limit, window and policy field.
    pub(crate) rule: Arc<Rule>,
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
}

impl Usage {
    pub(super) fn of(meter: &Meter, count: Count) -> Usage {
        let (remaining, reset_ms) = match count {
            Count::Served {
                remaining, reset_ms, ..
            } => (remaining, reset_ms),
            Count::Spent { reset_ms } => (0, reset_ms),
            Count::Flush => (0, 0),
        };
        Usage {
            rule: Arc::clone(&meter.rule),
            remaining,
            reset: Duration::from_millis(reset_ms),
        }
    }

    /// The budget a gateway's own 429 names: its blocking rule (`blocked_rule`, or else the
    /// first entry left with nothing), spent until `retry_after`. `None` when it names no
    /// rule of the documented form.
    pub(crate) fn refused_by_gateway(
        blocked_rule: Option<&str>,
        rate_limits: &[crate::principal::RateLimitState],
        retry_after: Duration,
    ) -> Option<Usage> {
        let blocking = match blocked_rule {
            Some(label) => rate_limits.iter().find(|state| &*state.rule == label),
            None => rate_limits.iter().find(|state| state.remaining == 0),
        }?;
        Some(Usage {
            rule: Arc::new(Rule::parse(&blocking.rule, blocking.limit)?),
            remaining: 0,
            reset: retry_after,
        })
    }

    /// The tighter of two: fewer remaining, then the later reset.
    pub(super) fn tighter(self, other: Usage) -> Usage {
        if (other.remaining, std::cmp::Reverse(other.reset)) < (self.remaining, std::cmp::Reverse(self.reset)) {
            other
        } else {
            self
        }
    }
}

/// The budgets one request met: the tightest of those it was served by, and of those spent,
/// the one that resets last (until then the request would be refused).
#[derive(Default)]
pub(super) struct Tally {
    served: Option<Usage>,
    spent: Option<Usage>,
}

impl Tally {
    pub(super) fn served(&mut self, usage: Usage) {
        self.served = Some(match self.served.take() {
            Some(tightest) => tightest.tighter(usage),
            None => usage,
        });
    }

    pub(super) fn spent(&mut self, usage: Usage) {
        self.spent = Some(match self.spent.take() {
            Some(latest) if latest.reset >= usage.reset => latest,
            _ => usage,
        });
    }

    pub(super) fn admission(self) -> Admission {
        match self.spent {
            Some(usage) => Admission::Spent(usage),
            None => Admission::Served(self.served),
        }
    }
}

/// What the meters say of a request served from cache.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The credential was not seen on this route: ask the gateway (which counts it).
    Unknown,
    /// Served: counted by every rule of the route; the tightest budget, if any rule applies.
    Served(Option<Usage>),
    /// A rule's budget is spent: 429 until its window rolls (`Usage::reset`; the latest of the
    /// spent rules).
    Spent(Usage),
    /// Not counted: this replica holds a full batch of a rule the fleet shares; add it to the
    /// fleet's count, then ask again.
    Flush,
}

impl Metering {
    /// A request on `route` served from cache at `now`: counted by the route's meters.
    #[inline]
    pub(crate) fn admit(&self, meters: &RouteMeters, route: RouteRef<'_>, now: Instant) -> Admission {
        meters
            .with(route, |route_meters| self.count(route_meters, now, true))
            .unwrap_or(Admission::Unknown)
    }

    /// A request served from cache counted by `meters` at `now`. With `batched`, a shared
    /// meter holding a full batch the fleet does not have counts nothing ([`Admission::Flush`]:
    /// add the batch, then ask again); without, it counts anyway.
    pub(crate) fn count(&self, meters: &[Arc<Meter>], now: Instant, batched: bool) -> Admission {
        if meters.is_empty() {
            return Admission::Served(None);
        }
        let now_ms = self.clock.unix_ms(now);
        let mut tally = Tally::default();
        let mut half_full = false;
        // Every rule counts the request it allows, even when another refuses it (as the
        // gateway does).
        let fleet_up = batched && self.fleet_takes_counts(now_ms);
        if let [meter] = meters {
            // One rule (Wacht's default): nothing to take back.
            let (count, half_full) = meter.admit(now_ms, fleet_up);
            if half_full {
                self.wake_flusher();
            }
            return match count {
                Count::Served { .. } => Admission::Served(self.want_usage.then(|| Usage::of(meter, count))),
                Count::Spent { .. } => Admission::Spent(Usage::of(meter, count)),
                Count::Flush => Admission::Flush,
            };
        }
        // Where each rule before counted the request (0: it did not, being spent).
        let mut counted_in = [0u64; 4];
        let mut counted_in_more: Vec<u64> = Vec::new();
        for (i, meter) in meters.iter().enumerate() {
            let (count, half) = meter.admit(now_ms, fleet_up);
            half_full |= half;
            let window = match count {
                Count::Served { counted_in, .. } => counted_in,
                Count::Spent { .. } | Count::Flush => 0,
            };
            match counted_in.get_mut(i) {
                Some(slot) => *slot = window,
                None => counted_in_more.push(window),
            }
            match count {
                Count::Served { .. } if !self.want_usage => {}
                Count::Served { .. } => tally.served(Usage::of(meter, count)),
                Count::Spent { .. } => tally.spent(Usage::of(meter, count)),
                Count::Flush => {
                    // Not counted until the batch is added: neither by the rules before that
                    // counted it.
                    let windows = counted_in.iter().chain(&counted_in_more);
                    for (earlier, &window) in meters[..i].iter().zip(windows) {
                        if window != 0 {
                            earlier.uncount(window);
                        }
                    }
                    self.wake_flusher();
                    return Admission::Flush;
                }
            }
        }
        if half_full {
            // Added in the background before the batch fills, so that a request rarely waits.
            self.wake_flusher();
        }
        tally.admission()
    }

    fn wake_flusher(&self) {
        if let Some(shared) = &self.shared {
            shared.half_full.notify_one();
        }
    }

    /// If a gateway answer showed the route's budgets spent by more than the request the
    /// gateway just counted (what was served here meanwhile): of the spent ones, the one
    /// that resets last (until then the request would be refused), as a hit's refusal says.
    pub(crate) fn overspent(&self, meters: &RouteMeters, route: RouteRef<'_>) -> Option<Usage> {
        let now_ms = self.clock.unix_ms(Instant::now());
        let mut tally = Tally::default();
        for meter in meters.get(route)?.iter() {
            let count = meter.over(now_ms);
            if matches!(count, Count::Spent { .. }) {
                tally.spent(Usage::of(meter, count));
            }
        }
        match tally.admission() {
            Admission::Spent(usage) => Some(usage),
            _ => None,
        }
    }

    /// The gateway refused a request on `route` as rate-limited: the meter of the rule it
    /// named (`blocked_rule`) holds the budget spent, at most to the end of its window. A
    /// refusal that names no rule known here is matched by its `retry_after`, which is the
    /// refusing rule's window.
    pub(crate) fn spend(
        &self,
        meters: &RouteMeters,
        route: RouteRef<'_>,
        retry_after: Duration,
        blocked_rule: Option<&str>,
    ) {
        let Some(route_meters) = meters.get(route) else {
            return;
        };
        let now_ms = self.clock.unix_ms(Instant::now());
        let named = |meter: &&Arc<Meter>| blocked_rule.is_some_and(|label| *meter.rule.label == *label);
        if route_meters.iter().any(|meter| named(&meter)) {
            route_meters
                .iter()
                .filter(named)
                .for_each(|meter| meter.exhaust(now_ms));
            return;
        }
        for meter in route_meters.iter() {
            if meter.rule.window() == retry_after || route_meters.len() == 1 {
                meter.exhaust(now_ms);
            }
        }
    }

    /// A request served from cache on a route whose rules could not be learned (the gateway
    /// unavailable or at its cap): counted by every meter the credential already has on any
    /// route (its app's budgets among them). `Served(None)` when it has none.
    pub(crate) fn admit_known(&self, meters: &RouteMeters, now: Instant) -> Admission {
        self.count(&meters.all(), now, false)
    }

    /// The tightest budget on `route` now, counting nothing (a miss's response headers).
    pub(crate) fn peek(&self, meters: &RouteMeters, route: RouteRef<'_>) -> Option<Usage> {
        let now_ms = self.clock.unix_ms(Instant::now());
        meters.get(route)?.iter().fold(None, |tightest, meter| {
            let usage = Usage::of(meter, meter.peek(now_ms));
            Some(match tightest {
                Some(t) => usage.tighter(t),
                None => usage,
            })
        })
    }
}
