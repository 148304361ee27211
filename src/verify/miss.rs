//! The miss path: the negative cache, one flight per token however many requests wait, a cap
//! on gateway calls in flight, and the outage grace when the gateway is unavailable.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::USER_AGENT;
use http::{Method, Request};
use tracing::Instrument as _;

use super::{CALL_SLACK, Verifier};
use crate::audit::DecisionSource;
use crate::cache::{Entry, Loaded};
use crate::config::{GatewaySettings, RouteReporting};
use crate::gateway::ClientIp;
use crate::principal::Principal;
use crate::rate_limit::Usage;
use crate::reject::AuthError;
use crate::route::{self, RouteRequest};
use crate::telemetry;
use crate::token::{BearerToken, TokenHash};

/// What a request's own flight found out, for how the request is counted.
#[derive(Default)]
pub(super) struct FlightNotes {
    /// The verdict is the gateway's own answer to this request's call (which counted it
    /// against the app's rate limits). A request that joined another's flight, or got a copy
    /// of the fleet's shared tier, is counted by the meters instead.
    counted: AtomicBool,
    /// Refused at the cap on gateway calls in flight, without a call (the metric's source
    /// `overload`).
    overloaded: AtomicBool,
}

impl FlightNotes {
    fn counted(&self) -> bool {
        self.counted.load(Ordering::Acquire)
    }

    fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Acquire)
    }

    /// The metric source of the request's verdict.
    fn source(&self, verdict_source: &'static str) -> &'static str {
        if self.overloaded() { "overload" } else { verdict_source }
    }
}

/// More rounds than this of unusable answers (ended, or voided while in flight), and a miss
/// gives up with 503.
const MAX_ROUNDS: usize = 3;

/// Request context sent to the gateway on a miss (its audit log, per-IP rate limits, and the
/// route its per-endpoint rate limits match).
#[derive(Debug, Clone)]
pub(crate) struct MissContext {
    pub(crate) user_agent: Option<String>,
    pub(crate) client_ip: Option<String>,
    /// The method reported: one of the gateway's allow-list.
    pub(crate) method: Method,
    /// The resource reported: bounded ([`route::bounded`]), or the configured fixed one.
    pub(crate) resource: String,
    /// What the verification learned for the response and its audit record (shared by the
    /// context's clones).
    pub(crate) notes: Arc<MissNotes>,
}

/// What a miss's verification tells its response besides the verdict.
#[derive(Debug, Default)]
pub(crate) struct MissNotes {
    /// The budget the gateway's own 429 to this request's call names (the response's
    /// rate-limit headers).
    pub(crate) gateway_budget: OnceLock<Usage>,
    /// Where the verdict came from when it was not a verification of the kind the request
    /// went for: the outage grace, or a cached answer served on a route whose rules were
    /// learned from the fleet's book or could not be learned (`cache`); a refusal at the cap
    /// on gateway calls (`local`).
    pub(crate) source: OnceLock<crate::audit::DecisionSource>,
}

impl MissContext {
    /// What `settings` say to forward of this request: its `User-Agent`, the caller's IP
    /// from a [`ClientIp`] extension, the configured hook, or Axum's `ConnectInfo`, and its
    /// route as the configured mode reports it. Worked out on a miss only.
    pub(crate) fn of<B>(settings: &GatewaySettings, req: &Request<B>) -> Self {
        let user_agent = settings
            .forward_user_agent
            .then(|| {
                req.headers()
                    .get(USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .flatten();
        let (method, resource) = reported_route(settings, req);
        MissContext {
            user_agent,
            client_ip: client_ip(settings, req).map(|ip| ip.to_string()),
            method,
            resource,
            notes: Arc::default(),
        }
    }

    /// The context of a verification without a request ([`Verifier::verify`]): nothing
    /// forwarded, the fixed method and resource.
    pub(crate) fn without_request(settings: &GatewaySettings) -> Self {
        let (method, resource) = fixed(settings);
        MissContext {
            user_agent: None,
            client_ip: None,
            method,
            resource,
            notes: Arc::default(),
        }
    }
}

/// The caller's IP address: a [`ClientIp`] extension, the configured hook, or Axum's
/// `ConnectInfo`.
pub(crate) fn client_ip<B>(settings: &GatewaySettings, req: &Request<B>) -> Option<std::net::IpAddr> {
    let (headers, extensions) = (req.headers(), req.extensions());
    let client_ip = extensions.get::<ClientIp>().map(|ip| ip.0).or_else(|| {
        let find = settings.client_ip.as_ref()?;
        (find.0)(headers, extensions)
    });
    #[cfg(feature = "axum")]
    let client_ip = client_ip.or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
    });
    client_ip
}

/// The method and resource a request is reported as, by the configured mode.
pub(crate) fn reported_route<B>(settings: &GatewaySettings, req: &Request<B>) -> (Method, String) {
    match &settings.route {
        RouteReporting::Fixed => fixed(settings),
        RouteReporting::Request => RouteRequest::of(req).automatic(),
        RouteReporting::Mapped(map) => {
            let request = RouteRequest::of(req);
            match map(&request) {
                Some((method, resource)) => (route::allowed(&method).clone(), route::bounded(&resource)),
                None => request.automatic(),
            }
        }
    }
}

/// The configured fixed method and resource (the method validated by the builder: one of the
/// gateway's), bounded as every reported route is.
pub(crate) fn fixed(settings: &GatewaySettings) -> (Method, String) {
    let method = Method::from_bytes(settings.method.as_bytes()).unwrap_or(route::FALLBACK_METHOD);
    (route::allowed(&method).clone(), route::bounded(&settings.resource))
}

/// The longest a gateway call may take: the configured request timeout (which bounds
/// [`HttpGateway`](crate::gateway::HttpGateway)'s whole exchange) and a second of slack.
pub(crate) fn call_bound(settings: &GatewaySettings) -> Duration {
    settings.request_timeout + CALL_SLACK
}

impl Verifier {
    /// A token not in the cache: its negative entry, or the outcome of its single flight.
    pub(super) async fn verify_miss(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: MissContext,
        started: Instant,
    ) -> Result<Principal, AuthError> {
        self.verify_rounds(token, hash, ctx, started, None).await
    }

    /// [`verify_miss`](Self::verify_miss) for a `max_cache_age` layer: an entry verified
    /// more than `max_age` ago is dropped first, so the single flight asks again (the
    /// gateway itself, never the fleet's shared tier, whose answers' age is unknown here);
    /// the fresh answer is cached for every layer.
    pub(super) async fn verify_miss_within(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: MissContext,
        started: Instant,
        max_age: Duration,
    ) -> Result<Principal, AuthError> {
        self.verify_rounds(token, hash, ctx, started, Some(max_age)).await
    }

    /// The rounds of a miss (both kinds): the negative entry, or the single flight's outcome
    /// (an answer voided meanwhile asks again, up to [`MAX_ROUNDS`]); with `max_age`, older
    /// entries dropped first and the fleet's shared tier skipped.
    async fn verify_rounds(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: MissContext,
        started: Instant,
        max_age: Option<Duration>,
    ) -> Result<Principal, AuthError> {
        for _ in 0..MAX_ROUNDS {
            if let Some(reason) = self.cache.rejected(&hash).await {
                tracing::debug!(token = ?hash, cache = "negative", outcome = "invalid_token", "token rejected from the negative cache");
                telemetry::verification("invalid_token", "negative_cache");
                return Err(AuthError::InvalidToken(reason));
            }
            if let Some(max_age) = max_age {
                self.cache.drop_older(hash, max_age).await;
            }
            let span = verify_span(&hash, if max_age.is_some() { "max_age" } else { "miss" });
            let notes = FlightNotes::default();
            let flight = self
                .flight(token, hash, &ctx, max_age.is_none(), &notes)
                .instrument(span);
            let outcome = match self.cache.load(hash, started, flight).await {
                Loaded::Allowed(principal) => {
                    // A refusal of the meters is counted as theirs, once.
                    self.meter_miss(&hash, &ctx, &principal, notes.counted()).await?;
                    Ok(principal)
                }
                Loaded::Stale => continue,
                Loaded::Refused(refusal) => match &*refusal {
                    // The outage grace covers the gateway: a JWT's 503 means its issuer's key
                    // set is past its maximum age or lacks its `kid`, and nothing serves it
                    // past that.
                    AuthError::Unavailable { .. } if self.jwt_for(token).is_none() => {
                        match self.outage_grace(&hash).await {
                            // Served from the grace: counted by what the token counts against.
                            Some(principal) => {
                                let _ = ctx.notes.source.set(DecisionSource::Cache);
                                return self.meter_unlearned(&hash).map(|()| principal);
                            }
                            None => {
                                if notes.overloaded() {
                                    let _ = ctx.notes.source.set(DecisionSource::Local);
                                }
                                Err((*refusal).clone())
                            }
                        }
                    }
                    // A budget is per route (and per client IP for some rules): the refusal
                    // of the request that led the flight says nothing of this one's, which
                    // asks the gateway for itself.
                    AuthError::RateLimited { .. } if !notes.counted() => {
                        return self.verify_live(token, hash, &ctx).await;
                    }
                    other => Err(other.clone()),
                },
            };
            telemetry::verification(
                outcome.as_ref().map_or_else(AuthError::label, |_| "allowed"),
                notes.source(self.verdict_source(token)),
            );
            return outcome;
        }
        // Only reached if every answer found was unusable: fail closed.
        Err(self.unavailable())
    }

    /// One verification, run by the first request to miss a token: the cached entry to
    /// store, or the refusal every waiting request gets.
    ///
    /// `notes` say whether the verdict is the gateway's own answer to this call, or a
    /// refusal at the cap on calls.
    pub(super) async fn flight(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: &MissContext,
        shared_tier: bool,
        notes: &FlightNotes,
    ) -> Result<Entry, AuthError> {
        // A flight that just ended may have rejected this token after our caller looked at
        // the negative cache. Look again rather than ask twice.
        if let Some(reason) = self.cache.rejected(&hash).await {
            return Err(AuthError::InvalidToken(reason));
        }
        // A flood of unseen tokens must not pile up calls on the gateway: past the cap,
        // refuse at once (503) rather than queue. (A JWT is verified here; its issuer's JWKS
        // is fetched single-flight and rate-limited.)
        let _permit = match self.jwt_for(token) {
            Some(_) => None,
            None => match InflightPermit::acquire(&self.inflight, self.settings.max_inflight_gateway_calls) {
                Some(permit) => Some(permit),
                None => {
                    tracing::debug!(token = ?hash, limit = self.settings.max_inflight_gateway_calls, "gateway calls at their limit: refused");
                    notes.overloaded.store(true, Ordering::Release);
                    return Err(self.unavailable());
                }
            },
        };
        // Stamped before the call: an invalidation from now on voids this answer.
        let stamp = self.cache.stamp();
        let asked = Instant::now();
        let verdict = self.answer(token, hash, ctx, shared_tier).await;
        // A copy of the fleet's shared tier (capped, graceful) is of unknown age here.
        let copied = matches!(
            verdict,
            super::source::Verdict::Gateway {
                cap: Some(_),
                graceful: true,
                ..
            }
        );
        let gateway_answered = !copied && matches!(verdict, super::source::Verdict::Gateway { .. });
        notes.counted.store(gateway_answered, Ordering::Release);
        let learn = super::decide::Learn {
            ctx: (!copied).then_some(ctx),
            meters: None,
        };
        let outcome = self.decide(verdict, hash, stamp, learn).await.map(|mut entry| {
            entry.verified_at = (!copied).then_some(asked);
            entry
        });
        let span = tracing::Span::current();
        match &outcome {
            Ok(entry) => {
                span.record("client_id", entry.principal.client_id().as_str());
                span.record("outcome", "allowed");
            }
            Err(refusal) => {
                span.record("outcome", refusal.label());
            }
        }
        tracing::debug!("gateway check finished");
        outcome
    }

    /// An always-live layer's verification: the gateway asked for this one request (a JWT
    /// verified again locally), never a cache tier, the negative cache, a shared flight or
    /// the outage grace (an outage is a 503). A refusal for good is remembered for the other
    /// layers (the negative cache), and voids the token's cached answer here if it has one;
    /// an allowance is not stored (it would restart the ttl other routes serve it for).
    pub(super) async fn verify_live(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: &MissContext,
    ) -> Result<Principal, AuthError> {
        let span = verify_span(&hash, "live");
        let notes = FlightNotes::default();
        let outcome = self.live_flight(token, hash, ctx, None, &notes).instrument(span).await;
        if notes.overloaded() {
            let _ = ctx.notes.source.set(DecisionSource::Local);
        }
        telemetry::verification(
            outcome.as_ref().map_or_else(AuthError::label, |_| "allowed"),
            notes.source(self.verdict_source(token)),
        );
        outcome
    }

    async fn live_flight(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: &MissContext,
        meters: Option<std::sync::Arc<crate::rate_limit::RouteMeters>>,
        notes: &FlightNotes,
    ) -> Result<Principal, AuthError> {
        for _ in 0..MAX_ROUNDS {
            let _permit = match self.jwt_for(token) {
                Some(_) => None,
                None => match InflightPermit::acquire(&self.inflight, self.settings.max_inflight_gateway_calls) {
                    Some(permit) => Some(permit),
                    None => {
                        notes.overloaded.store(true, Ordering::Release);
                        return Err(self.unavailable());
                    }
                },
            };
            let stamp = self.cache.stamp();
            let verdict = self.answer(token, hash, ctx, false).await;
            let learn = super::decide::Learn {
                ctx: Some(ctx),
                meters: meters.clone(),
            };
            match self.decide(verdict, hash, stamp, learn).await {
                Ok(entry) if self.cache.still_current(&hash, &entry.principal, stamp) => {
                    tracing::Span::current().record("outcome", "allowed");
                    return Ok(entry.principal);
                }
                // Voided while in flight (it may predate a revocation): ask again.
                Ok(_) => continue,
                Err(refusal) => {
                    if matches!(refusal, AuthError::InvalidToken(_)) && self.cache.has_answer(&hash) {
                        self.cache.invalidate_token(hash).await;
                    }
                    tracing::Span::current().record("outcome", refusal.label());
                    return Err(refusal);
                }
            }
        }
        Err(self.unavailable())
    }

    /// A cached credential on a route its meters have not seen: the gateway asked for this
    /// request (it counts it, and its answer names the route's rules), as a live check does;
    /// the answer teaches `meters` and is not stored (the cached entry stays).
    pub(super) async fn verify_learning(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: &MissContext,
        meters: std::sync::Arc<crate::rate_limit::RouteMeters>,
    ) -> Result<Principal, AuthError> {
        let span = verify_span(&hash, "learn_route");
        if let Some(outcome) = self.learn_from_fleet(&hash, ctx, &meters).await {
            // The cached answer, metered by the rules the fleet's book holds.
            let _ = ctx.notes.source.set(DecisionSource::Cache);
            return outcome;
        }
        let notes = FlightNotes::default();
        let outcome = self
            .live_flight(token, hash, ctx, Some(meters), &notes)
            .instrument(span)
            .await;
        if let Err(AuthError::Unavailable { .. }) = &outcome
            && let Some(principal) = self.cache.peek(&hash)
        {
            // The gateway cannot say which rules the route has (down, or at the cap on calls
            // in flight): the cached answer is still good, and is served counted by every
            // budget the token already counts against on its other routes.
            tracing::debug!(token = ?hash, "route's rate limits unknown (gateway unavailable): served from cache");
            let _ = ctx.notes.source.set(DecisionSource::Cache);
            let metered = self.meter_unlearned(&hash).map(|()| principal);
            telemetry::verification(metered.as_ref().map_or_else(AuthError::label, |_| "allowed"), "cache");
            return metered;
        }
        // The gateway counted this request; the rules it named may show the budget spent by
        // what was served here.
        if let Ok(principal) = &outcome {
            // A refusal of the meters is counted as theirs, once.
            self.meter_miss(&hash, ctx, principal, true).await?;
        }
        telemetry::verification(
            outcome.as_ref().map_or_else(AuthError::label, |_| "allowed"),
            notes.source("gateway"),
        );
        outcome
    }

    /// A principal verified before, still inside the outage grace and not denied since.
    async fn outage_grace(&self, hash: &TokenHash) -> Option<Principal> {
        let principal = self.cache.outage_grace(hash).await?;
        if self.is_denied(principal.client_id().as_str()) || self.revoked.covers_principal(&principal) {
            return None;
        }
        tracing::warn!(
            client_id = principal.client_id().as_str(),
            "gateway unavailable: serving a previously verified token (stale_if_error)"
        );
        telemetry::stale_served();
        telemetry::verification("allowed_stale", "stale");
        Some(principal)
    }
}

/// The span of one verification: the token's key, how it was reached (`cache`), and what the
/// flight records (client, outcome, gateway latency).
fn verify_span(hash: &TokenHash, cache: &'static str) -> tracing::Span {
    tracing::debug_span!(
        "wacht.verify",
        token = ?hash,
        cache,
        client_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        gateway_ms = tracing::field::Empty,
    )
}

impl Verifier {
    /// Where a verification's verdict came from, for the metrics: `jwt` or `gateway`.
    fn verdict_source(&self, token: BearerToken<'_>) -> &'static str {
        if self.jwt_for(token).is_some() {
            "jwt"
        } else {
            "gateway"
        }
    }
}

/// One gateway call in flight, counted against the verifier's cap until dropped.
struct InflightPermit<'a>(&'a AtomicUsize);

impl<'a> InflightPermit<'a> {
    fn acquire(inflight: &'a AtomicUsize, max: usize) -> Option<Self> {
        inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| InflightPermit(inflight))
    }
}

impl Drop for InflightPermit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
