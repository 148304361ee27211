//! Wacht's rate limits on what this verifier serves (see [`rate_limit`](crate::rate_limit)):
//! a hit counted by its route's meters, a gateway answer teaching a credential's route its
//! rules, the budget a response reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;

use super::miss::{self, MissContext};
use super::{Verified, Verifier};
use crate::cache::{Hit, Meters};
use crate::principal::Principal;
use crate::principal::{Grant, RateLimitState};
use crate::rate_limit::{Admission, Metering, RouteMeters, Subject, Usage};
use crate::reject::AuthError;
use crate::token::TokenHash;

/// What metering says of a hit.
pub(super) enum Metered {
    /// Serve it; the budget for the response's headers, if a rule applies.
    Pass(Option<Usage>),
    /// 429: a rule's budget is spent.
    Spent(Usage),
    /// The credential was not seen on this route: ask the gateway, teaching these meters.
    Learn(Arc<RouteMeters>),
    /// The route's meters hold a full batch the fleet does not have: add it, then count.
    Flush(Box<Waiting>),
}

/// A hit waiting for the fleet's count (see [`Metered::Flush`]).
pub(crate) struct Waiting {
    meters: Arc<RouteMeters>,
    /// The route's resource and (when a rule counts per IP) client IP.
    route: (String, Option<String>),
    /// The cached principal to serve.
    pub(super) principal: Option<Principal>,
    /// The cache tier it came from (the audit trail's source).
    pub(super) source: crate::audit::DecisionSource,
}

/// A 429 when `admission` found a budget spent.
fn spent_refusal(admission: Admission) -> Result<(), AuthError> {
    match admission {
        Admission::Spent(usage) => {
            crate::telemetry::verification("rate_limited", "meter");
            Err(AuthError::RateLimited {
                retry_after: Duration::from_secs(crate::rate_limit::headers::ceil_secs(usage.reset).max(1)),
            })
        }
        _ => Ok(()),
    }
}

/// Most meters one flush script adds to.
#[cfg(feature = "redis")]
const FLUSH_CHUNK: usize = 256;

/// Most flushes a waiting hit waits for before it is counted anyway.
const MAX_FLUSH_WAITS: usize = 3;

impl Verifier {
    /// Counts a hit against the meters of its request's route (`meters`: the credential's,
    /// lent by the cache).
    pub(super) fn meter_hit<B>(&self, hit: &Hit, meters: Meters<'_>, req: &Request<B>) -> Metered {
        let (Some(metering), Some(meters)) = (&self.metering, meters) else {
            return Metered::Pass(None);
        };
        let (resource, ip) = self.route_of(metering, req);
        let route = metering.route(&resource, ip.as_deref());
        let admission = match metering.admit(meters, route, hit.now) {
            Admission::Unknown => {
                // The route's rules may be known from another credential of the same app.
                let subject = Subject::of(hit.principal.grant(), &hit.hash, &resource, ip.as_deref());
                metering.admit_new_route(meters, route, &subject, hit.now)
            }
            known => known,
        };
        match admission {
            Admission::Served(usage) => Metered::Pass(usage),
            Admission::Spent(usage) => {
                crate::telemetry::verification("rate_limited", "meter");
                tracing::debug!(rule = &*usage.rule.label, "rate-limit budget spent: 429 from the meter");
                Metered::Spent(usage)
            }
            Admission::Unknown => Metered::Learn(Arc::clone(meters)),
            Admission::Flush => Metered::Flush(Box::new(Waiting {
                meters: Arc::clone(meters),
                route: (resource.into_owned(), ip),
                principal: None,
                source: super::source_of(hit.tier),
            })),
        }
    }

    /// A hit that waited for the fleet's count: served, or refused if the count shows the
    /// budget spent.
    pub(super) async fn after_flush(&self, waiting: Waiting) -> Result<Verified, AuthError> {
        let (Some(metering), Some(principal)) = (&self.metering, waiting.principal) else {
            return Err(self.unavailable());
        };
        for _ in 0..MAX_FLUSH_WAITS {
            self.flush_meters().await;
            let route = metering.route(&waiting.route.0, waiting.route.1.as_deref());
            match metering.admit(&waiting.meters, route, Instant::now()) {
                Admission::Served(usage) => {
                    self.cache.served_hit();
                    return Ok(Verified {
                        principal,
                        usage,
                        source: None,
                    });
                }
                Admission::Spent(usage) => {
                    crate::telemetry::verification("rate_limited", "meter");
                    return Err(AuthError::RateLimited {
                        retry_after: usage.reset.max(Duration::from_secs(1)),
                    });
                }
                // Filled again meanwhile, by other requests: add that too.
                Admission::Flush | Admission::Unknown => {}
            }
        }
        // Filled again each time by other requests: counted now rather than held longer.
        let route = metering.route(&waiting.route.0, waiting.route.1.as_deref());
        let admission = match metering.admit(&waiting.meters, route, Instant::now()) {
            Admission::Flush | Admission::Unknown => metering.admit_known(&waiting.meters, Instant::now()),
            known => known,
        };
        let served = match admission {
            Admission::Served(usage) => Ok(Verified {
                principal,
                usage,
                source: None,
            }),
            spent => spent_refusal(spent).map(|()| Verified {
                principal,
                usage: None,
                source: None,
            }),
        };
        if served.is_ok() {
            self.cache.served_hit();
        }
        served
    }

    /// Adds this replica's unflushed requests to the fleet's meters (one round trip) and
    /// takes back the fleet's counts. Without the fleet, nothing.
    pub(crate) async fn flush_meters(&self) {
        #[cfg(feature = "redis")]
        if let (Some(metering), Some(fleet)) = (&self.metering, &self.fleet) {
            let Some((_flushing, batch)) = metering.unflushed().await else {
                return;
            };
            if batch.is_empty() {
                return;
            }
            let pairs: Vec<(
                &(Arc<crate::rate_limit::Meter>, crate::rate_limit::Unflushed),
                crate::fleet::MeterAdd<'_>,
            )> = batch
                .iter()
                .filter_map(|entry| {
                    let (meter, unflushed) = entry;
                    let add = crate::fleet::MeterAdd {
                        meter: meter.fleet_key.as_deref()?,
                        window: unflushed.index,
                        window_ms: meter.rule.window_ms,
                        served: unflushed.served,
                        seen: unflushed.seen,
                    };
                    Some((entry, add))
                })
                .collect();
            // A bounded script per call: Redis runs one at a time.
            for chunk in pairs.chunks(FLUSH_CHUNK) {
                let adds: Vec<crate::fleet::MeterAdd<'_>> = chunk.iter().map(|(_, add)| add.clone()).collect();
                match fleet.add_to_meters(&adds).await {
                    Some(counts) => {
                        metering.fleet_up();
                        for (((meter, unflushed), _), (fleet_count, seen)) in chunk.iter().zip(counts) {
                            meter.flushed(*unflushed, fleet_count, seen);
                        }
                    }
                    None => {
                        metering.fleet_down();
                        return;
                    }
                }
            }
        }
    }

    /// A request's route as the meters tell it apart: the resource the configured mode
    /// reports (borrowed from the request where it can be: a hit copies nothing) and, when a
    /// rule counts per IP, its client's IP.
    fn route_of<'r, B>(
        &'r self,
        metering: &Metering,
        req: &'r Request<B>,
    ) -> (std::borrow::Cow<'r, str>, Option<String>) {
        let resource = match (&self.fixed_resource, &self.settings.route) {
            (Some(fixed), _) => std::borrow::Cow::Borrowed(fixed.as_str()),
            (None, crate::config::RouteReporting::Request) => crate::route::RouteRequest::of(req).automatic_bounded(),
            (None, _) => std::borrow::Cow::Owned(miss::reported_route(&self.settings, req).1),
        };
        let ip = metering
            .by_ip()
            .then(|| miss::client_ip(&self.settings, req))
            .flatten()
            .map(|ip| ip.to_string());
        (resource, ip)
    }

    /// The route a miss reported, owned (for its response's budget).
    pub(super) fn route_key_of(&self, ctx: &MissContext) -> Option<(String, Option<String>)> {
        self.metering.as_ref()?;
        Some((ctx.resource.clone(), ctx.client_ip.clone()))
    }

    /// A gateway answer about `grant` for the request `ctx` describes: the credential's
    /// meters (its cached entry's, or new ones) taught the route's rules. `Err` with the
    /// budget when one of them is spent by what this layer served.
    pub(super) fn learn_rates(
        &self,
        grant: &Grant,
        hash: &TokenHash,
        ctx: Option<&MissContext>,
        limits: &[RateLimitState],
        meters: Option<Arc<RouteMeters>>,
    ) -> Option<Arc<RouteMeters>> {
        let metering = self.metering.as_ref()?;
        let meters = meters.or_else(|| self.cache.meters_of(hash)).unwrap_or_default();
        if let Some(ctx) = ctx {
            let route = metering.route(&ctx.resource, ctx.client_ip.as_deref());
            let subject = Subject::of(grant, hash, &ctx.resource, ctx.client_ip.as_deref());
            #[cfg(feature = "redis")]
            if !metering.knows_rules(&subject) {
                self.share_rules(&subject, limits);
            }
            // Whether this shows the budget spent is the request's business (`meter_miss`).
            let _ = metering.learn(&meters, route, &subject, limits);
        }
        Some(meters)
    }

    /// A request a miss served: counted here unless the gateway's own answer to it counted it
    /// (`counted`), and refused if the budget is spent either way.
    pub(super) async fn meter_miss(
        &self,
        hash: &TokenHash,
        ctx: &MissContext,
        principal: &Principal,
        counted: bool,
    ) -> Result<(), AuthError> {
        let (Some(metering), Some(meters)) = (&self.metering, self.cache.meters_of(hash)) else {
            return Ok(());
        };
        let route = metering.route(&ctx.resource, ctx.client_ip.as_deref());
        let admission = if counted {
            match metering.overspent(&meters, route) {
                Some(usage) => Admission::Spent(usage),
                None => Admission::Served(None),
            }
        } else {
            match metering.admit(&meters, route, Instant::now()) {
                Admission::Unknown => {
                    let subject = Subject::of(principal.grant(), hash, &ctx.resource, ctx.client_ip.as_deref());
                    match metering.admit_new_route(&meters, route, &subject, Instant::now()) {
                        // Not learned here (no gateway answer of its own: a copy of the
                        // fleet's shared tier): the fleet's rule book, else every budget the
                        // token already has.
                        Admission::Unknown => match self.learn_from_fleet(hash, ctx, &meters).await {
                            Some(outcome) => return outcome.map(|_| ()),
                            None => metering.admit_known(&meters, Instant::now()),
                        },
                        known => known,
                    }
                }
                // Not held for a flush: counted now, the batch follows in the background.
                Admission::Flush => metering.admit_known(&meters, Instant::now()),
                other => other,
            }
        };
        spent_refusal(admission)
    }

    /// A request served from cache without its route's rules (the outage grace, a learning
    /// call the gateway could not answer): counted by every budget the token already counts
    /// against, and refused if one is spent.
    pub(super) fn meter_unlearned(&self, hash: &TokenHash) -> Result<(), AuthError> {
        let (Some(metering), Some(meters)) = (&self.metering, self.cache.meters_of(hash)) else {
            return Ok(());
        };
        spent_refusal(metering.admit_known(&meters, Instant::now()))
    }

    /// The gateway refused a request as rate-limited: the token's meter of the rule it named
    /// on that route holds the budget spent until `retry_after`.
    pub(super) fn spent_at_gateway(
        &self,
        hash: &TokenHash,
        ctx: Option<&MissContext>,
        retry_after: Duration,
        blocked_rule: Option<&str>,
    ) {
        let (Some(metering), Some(ctx), Some(meters)) = (&self.metering, ctx, self.cache.meters_of(hash)) else {
            return;
        };
        let route = metering.route(&ctx.resource, ctx.client_ip.as_deref());
        metering.spend(&meters, route, retry_after, blocked_rule);
    }

    /// Writes the rules a gateway answer named for the subject's app and route to the fleet's
    /// rule book (in the background: the request does not wait for it).
    #[cfg(feature = "redis")]
    fn share_rules(&self, subject: &Subject<'_>, limits: &[RateLimitState]) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        let (fleet, app, route) = (
            Arc::clone(fleet),
            subject.book_key().to_owned(),
            subject.route.to_owned(),
        );
        let rules: Vec<(Arc<str>, u64)> = limits.iter().map(|l| (Arc::clone(&l.rule), l.limit)).collect();
        tokio::spawn(async move { fleet.put_rules(&app, &route, &rules).await });
    }

    /// A cached credential on a route its meters have not seen, in fleet mode: the rules the
    /// fleet's rule book holds for its app there, and the request counted by them; `None`
    /// when the book does not know them (ask the gateway).
    pub(super) async fn learn_from_fleet(
        &self,
        hash: &TokenHash,
        ctx: &MissContext,
        meters: &RouteMeters,
    ) -> Option<Result<Principal, AuthError>> {
        #[cfg(feature = "redis")]
        if let (Some(metering), Some(fleet)) = (&self.metering, &self.fleet) {
            let principal = self.cache.peek(hash)?;
            let subject = Subject::of(principal.grant(), hash, &ctx.resource, ctx.client_ip.as_deref());
            let rules = fleet.rules(subject.book_key(), subject.route).await.flatten()?;
            let route = metering.route(&ctx.resource, ctx.client_ip.as_deref());
            return Some(
                match metering.admit_with_rules(meters, route, &subject, &rules, Instant::now()) {
                    Admission::Spent(usage) => {
                        crate::telemetry::verification("rate_limited", "meter");
                        Err(AuthError::RateLimited {
                            retry_after: usage.reset.max(Duration::from_secs(1)),
                        })
                    }
                    _ => Ok(principal),
                },
            );
        }
        let _ = (hash, ctx, meters);
        None
    }

    /// The budget to report on a miss's response.
    pub(super) fn usage_after_miss(&self, hash: &TokenHash, route: Option<&(String, Option<String>)>) -> Option<Usage> {
        let (resource, ip) = route?;
        self.usage_at(hash, resource, ip.as_deref())
    }

    /// The budget of `req`'s route for the credential `hash` now, counting nothing: what a
    /// 429 from the miss path reports (its tightest rule, spent).
    pub(crate) fn usage_on<B>(&self, hash: &TokenHash, req: &Request<B>) -> Option<Usage> {
        let (resource, ip) = self.route_of(self.metering.as_ref()?, req);
        self.usage_at(hash, &resource, ip.as_deref())
    }

    /// The tightest budget of the credential `hash` on a route now, counting nothing.
    fn usage_at(&self, hash: &TokenHash, resource: &str, ip: Option<&str>) -> Option<Usage> {
        let metering = self.metering.as_ref()?;
        let meters = self.cache.meters_of(hash)?;
        metering.peek(&meters, metering.route(resource, ip))
    }

    /// Which headers the responses carry (none without metering).
    pub(crate) fn rate_limit_headers(&self) -> crate::rate_limit::RateLimitHeaders {
        self.metering
            .as_ref()
            .map_or(crate::rate_limit::RateLimitHeaders::None, Metering::headers)
    }
}
