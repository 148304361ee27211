//! The rule book and the meters' registry: which rules an app's scheme has on a route (as a
//! gateway answer last named them, shared by the app's credentials for a while), and the one
//! live meter of each rule and subject.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::count::{Admission, Tally, Usage};
use super::routes::distinct;
use super::{Count, FleetKey, Meter, Metering, RouteMeters, RouteRef, Rule, Subject};
use crate::principal::RateLimitState;

/// The rules an app's scheme has on a route (by app and route key), and when a gateway
/// answer named them.
type RuleBook = HashMap<(Box<str>, u64), (Arc<[Rule]>, Instant)>;

#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) meters: HashMap<String, Arc<Meter>>,
    prune_at: usize,
    /// The rules of an app's scheme on a route, as the gateway last named them, and when.
    book: RuleBook,
}

impl Registry {
    pub(super) fn new() -> Self {
        Registry {
            meters: HashMap::new(),
            prune_at: 1024,
            book: HashMap::new(),
        }
    }

    /// The live meter of `key`, or a new one (named in the fleet's store by `fleet`'s
    /// function, and holding at most its batch unflushed).
    ///
    /// The registry holds every meter until the window it counted in has ended and no
    /// credential's routes name it: a count outlives the cache entries that made it (a
    /// budget does not start over when a token's entry expires or its routes are relearned).
    fn meter(&mut self, key: String, rule: Rule, fleet: Option<(&FleetKey, u64)>, now_ms: u64) -> Arc<Meter> {
        if let Some(meter) = self.meters.get(&key)
            && *meter.rule == rule
        {
            return Arc::clone(meter);
        }
        let (fleet_key, batch) = match fleet {
            Some((name, batch)) => (Some(name(&key)), batch),
            None => (None, 1),
        };
        let meter = Arc::new(Meter::new(rule, fleet_key, batch));
        self.meters.insert(key, Arc::clone(&meter));
        if self.meters.len() >= self.prune_at {
            self.meters.retain(|_, m| Arc::strong_count(m) > 1 || !m.idle(now_ms));
            self.prune_at = (self.meters.len() * 2).max(1024);
        }
        meter
    }
}

/// How long the rules a gateway answer named for an app's route are used for the app's other
/// credentials before a gateway call names them again.
const RULE_BOOK_TTL: Duration = Duration::from_secs(600);

/// Most (app, route) rule sets remembered; past it the book starts over.
const RULE_BOOK_CAP: usize = 50_000;

impl Metering {
    /// A gateway answer for `subject` on `route`: the route's rules (what the answer reported)
    /// recorded for the credential and its app, each meter told what the gateway counted.
    /// Returns the tightest budget (for the response's headers), or the spent one.
    pub(crate) fn learn(
        &self,
        meters: &RouteMeters,
        route: RouteRef<'_>,
        subject: &Subject<'_>,
        limits: &[RateLimitState],
    ) -> Admission {
        let now_ms = self.clock.unix_ms(Instant::now());
        // Each entry's rule, parsed once, with what the gateway said is left of it.
        let (rules, left): (Vec<Rule>, Vec<u64>) = limits
            .iter()
            .filter_map(|state| {
                let rule = Rule::parse(&state.rule, state.limit);
                if rule.is_none() {
                    tracing::debug!(
                        rule = &*state.rule,
                        "rate-limit rule label of an unknown form: not metered"
                    );
                }
                Some((rule?, state.remaining))
            })
            .unzip();
        let found = self.resolve(subject, &rules.into(), true);
        let mut tally = Tally::default();
        for (meter, remaining) in found.iter().zip(left) {
            let count = meter.observe(now_ms, remaining);
            let usage = Usage::of(meter, count);
            if matches!(count, Count::Spent { .. }) {
                tally.spent(usage.clone());
            }
            tally.served(usage);
        }
        meters.learn(route, distinct(found));
        tally.admission()
    }

    /// A credential on a route its meters have not seen: counted by the rules its app's
    /// scheme has there, if a gateway answer named them lately (for any of the app's
    /// credentials); else [`Admission::Unknown`], and the gateway is asked.
    pub(crate) fn admit_new_route(
        &self,
        meters: &RouteMeters,
        route: RouteRef<'_>,
        subject: &Subject<'_>,
        now: Instant,
    ) -> Admission {
        let rules = {
            let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match registry
                .book
                .get(&(Box::from(subject.book_key()), self.resource_key(subject.route)))
            {
                Some((rules, at)) if now.saturating_duration_since(*at) < RULE_BOOK_TTL => Arc::clone(rules),
                _ => return Admission::Unknown,
            }
        };
        meters.learn(route, distinct(self.resolve(subject, &rules, false)));
        self.admit(meters, route, now)
    }

    /// A credential on a route whose rules the fleet's rule book named: the rules recorded
    /// here (for the app, and for the credential's route), then the request counted.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn admit_with_rules(
        &self,
        meters: &RouteMeters,
        route: RouteRef<'_>,
        subject: &Subject<'_>,
        rules: &[(String, u64)],
        now: Instant,
    ) -> Admission {
        let rules: Arc<[Rule]> = rules
            .iter()
            .filter_map(|(label, limit)| Rule::parse(label, *limit))
            .collect::<Vec<_>>()
            .into();
        meters.learn(route, distinct(self.resolve(subject, &rules, true)));
        self.admit(meters, route, now)
    }

    /// The meters of `rules` for `subject` (found or made), and, for rules a gateway answer
    /// just named (`fresh`), the app's rule book updated.
    /// In the order of `rules` (one meter may appear twice: see [`distinct`]).
    fn resolve(&self, subject: &Subject<'_>, rules: &Arc<[Rule]>, fresh: bool) -> Vec<Arc<Meter>> {
        let now_ms = self.clock.unix_ms(Instant::now());
        let book = (Box::from(subject.book_key()), self.resource_key(subject.route));
        let mut registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fresh {
            if registry.book.len() >= RULE_BOOK_CAP {
                registry.book.clear();
            }
            registry.book.insert(book, (Arc::clone(rules), Instant::now()));
        }
        let fleet = self.shared.as_ref().map(|s| (&s.key_of, self.config.fleet_batch));
        rules
            .iter()
            .map(|rule| {
                let key = subject.key(self.config.mode_of(&rule.label), &rule.label);
                registry.meter(key, rule.clone(), fleet, now_ms)
            })
            .collect()
    }

    /// The key of a resource alone: what the rule book is kept by (rules match endpoints by
    /// resource; a client IP changes whose budget counts, not which rules apply).
    fn resource_key(&self, resource: &str) -> u64 {
        self.routes.hash_one(resource)
    }

    /// True if the rule book named the rules of `subject`'s app on its resource lately (a
    /// gateway answer about it need not be written to the fleet's book again).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn knows_rules(&self, subject: &Subject<'_>) -> bool {
        let book = (Box::from(subject.book_key()), self.resource_key(subject.route));
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        registry
            .book
            .get(&book)
            .is_some_and(|(_, at)| at.elapsed() < RULE_BOOK_TTL)
    }
}
