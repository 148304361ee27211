//! The fake gateway's rate limiter (`gateway-protocol.md` §3.2 step 9): the configured
//! scheme, its counters, and the evaluation of every applicable rule for one request.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::protocol::{RateLimitEntry, RateOutcome};
use super::rate_limits::{RateLimitMode, RateLimitRule, RateLimitUnit};

/// Milliseconds in a UTC day.
const DAY_MS: u128 = 86_400_000;

/// Who a request is counted for (the parts of the counter keys).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    pub(crate) deployment_id: i64,
    pub(crate) app_slug: &'a str,
    /// `P`: `grant:<id>` / `token:<sha256 hex>` for OAuth, `key:<key id>` for an API key.
    pub(crate) credential: &'a str,
    pub(crate) client_ip: &'a str,
    /// The normalised resource.
    pub(crate) resource: &'a str,
}

/// One counter: the rule's mode, the key parts that mode uses, and the window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CounterKey {
    mode: RateLimitMode,
    parts: Vec<String>,
    window_ms: u64,
    calendar: bool,
}

impl CounterKey {
    fn new(rule: &RateLimitRule, who: &Subject<'_>) -> Self {
        let own = |s: &str| s.to_owned();
        let mode = rule.effective_mode();
        let parts = match mode {
            RateLimitMode::PerApp => vec![who.deployment_id.to_string(), own(who.app_slug)],
            RateLimitMode::PerKey => vec![own(who.credential), own(who.resource)],
            RateLimitMode::PerKeyAndIp => vec![own(who.credential), own(who.client_ip), own(who.resource)],
            RateLimitMode::PerAppAndIp => vec![who.deployment_id.to_string(), own(who.app_slug), own(who.client_ip)],
        };
        Self {
            mode,
            parts,
            window_ms: rule.window_ms(),
            calendar: rule.unit.is_calendar(),
        }
    }
}

/// What a counter holds.
#[derive(Debug)]
enum Counter {
    /// Sliding window: the instants of the counted requests still inside it.
    Sliding(VecDeque<Instant>),
    /// Calendar window: the UTC day (days since the epoch) and its count.
    Calendar { day: u128, count: u64 },
}

/// The configured scheme and its counters.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    /// `None`: no scheme configured, Wacht's default rule applies.
    rules: Option<Vec<RateLimitRule>>,
    counters: HashMap<CounterKey, Counter>,
}

impl Limiter {
    /// Replaces the scheme (`None`: the default rule) and clears all counters.
    pub(crate) fn set_rules(&mut self, rules: Option<Vec<RateLimitRule>>) {
        self.rules = rules;
        self.counters.clear();
    }

    /// Clears all counters, keeping the scheme.
    pub(crate) fn reset(&mut self) {
        self.counters.clear();
    }

    /// The rules applying to `resource` (`None`: only rules for every resource), in
    /// evaluation order: priority ascending, ties in configured order.
    fn applicable(&self, resource: Option<&str>) -> Vec<RateLimitRule> {
        let Some(rules) = &self.rules else {
            return vec![RateLimitRule::default()];
        };
        let mut chosen: Vec<RateLimitRule> = rules.iter().filter(|r| r.applies_to(resource)).cloned().collect();
        chosen.sort_by_key(|r| r.priority);
        chosen
    }

    /// Evaluates every applicable rule for `who`, counting the request in each rule that
    /// allows it.
    ///
    /// `forced_retry_ms` (the `RateLimited` fault): every applicable rule (the default rule
    /// when none applies) blocks with that retry-after and remaining 0, nothing is counted.
    pub(crate) fn evaluate(&mut self, who: &Subject<'_>, forced_retry_ms: Option<u64>) -> Vec<RateOutcome> {
        let rules = self.applicable(Some(who.resource));
        if let Some(retry) = forced_retry_ms {
            let rules = if rules.is_empty() {
                vec![RateLimitRule::default()]
            } else {
                rules
            };
            return rules.iter().map(|rule| outcome(rule, 0, Some(retry))).collect();
        }
        let now = Instant::now();
        let today = utc_day(SystemTime::now());
        rules
            .iter()
            .map(|rule| self.count(rule, CounterKey::new(rule, who), now, today))
            .collect()
    }

    /// One rule's verdict for one counter; counts the request if the rule allows it.
    fn count(&mut self, rule: &RateLimitRule, key: CounterKey, now: Instant, today: u128) -> RateOutcome {
        let limit = u64::from(rule.max_requests);
        let window_ms = rule.window_ms();
        let counter = self.counters.entry(key).or_insert_with(|| {
            if rule.unit.is_calendar() {
                Counter::Calendar { day: today, count: 0 }
            } else {
                Counter::Sliding(VecDeque::new())
            }
        });
        match counter {
            Counter::Sliding(log) => {
                let window = Duration::from_millis(window_ms);
                while log
                    .front()
                    .is_some_and(|first| now.saturating_duration_since(*first) >= window)
                {
                    log.pop_front();
                }
                let count = u64::try_from(log.len()).unwrap_or(u64::MAX);
                if count < limit {
                    log.push_back(now);
                    outcome(rule, limit - count - 1, None)
                } else {
                    outcome(rule, limit.saturating_sub(count), Some(window_ms))
                }
            }
            Counter::Calendar { day, count } => {
                if *day != today {
                    *day = today;
                    *count = 0;
                }
                if *count < limit {
                    *count += 1;
                    outcome(rule, limit - *count, None)
                } else {
                    outcome(rule, limit.saturating_sub(*count), Some(window_ms))
                }
            }
        }
    }

    /// What an uncounted first request would be answered, for a synthetic decision: the
    /// rules applying to every resource, each allowing with `max_requests - 1` remaining.
    pub(crate) fn preview(&self) -> Vec<RateOutcome> {
        self.applicable(None)
            .iter()
            .map(|rule| outcome(rule, u64::from(rule.max_requests).saturating_sub(1), None))
            .collect()
    }
}

/// One rule's outcome.
fn outcome(rule: &RateLimitRule, remaining: u64, blocked: Option<u64>) -> RateOutcome {
    RateOutcome {
        window_label: rule.window_label(),
        entry: RateLimitEntry {
            rule: rule.label(),
            remaining,
            limit: u64::from(rule.max_requests),
        },
        blocked,
    }
}

/// Days since the Unix epoch, UTC (0 for a clock before the epoch).
fn utc_day(now: SystemTime) -> u128 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() / DAY_MS)
}

/// A rule of `max_requests` per `window` (whole milliseconds), `per_app`, for every
/// resource: what `FakeGateway::set_rate_limit` configures.
pub(crate) fn single_rule(max_requests: u32, window: Duration) -> RateLimitRule {
    let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    RateLimitRule::new(max_requests, RateLimitUnit::Millisecond, ms).mode(RateLimitMode::PerApp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who<'a>(credential: &'a str, ip: &'a str, resource: &'a str) -> Subject<'a> {
        Subject {
            deployment_id: 1,
            app_slug: "oauth_7",
            credential,
            client_ip: ip,
            resource,
        }
    }

    fn summary(outcomes: &[RateOutcome]) -> Vec<(String, u64, Option<u64>)> {
        outcomes
            .iter()
            .map(|o| (o.entry.rule.clone(), o.entry.remaining, o.blocked))
            .collect()
    }

    #[test]
    fn default_rule_when_unconfigured() {
        let mut limiter = Limiter::default();
        let out = limiter.evaluate(&who("token:a", "ip", "/x"), None);
        assert_eq!(summary(&out), [("1000/60s".to_owned(), 999, None)]);
        assert_eq!(out[0].window_label, "60s");
        assert_eq!(summary(&limiter.preview()), [("1000/60s".to_owned(), 999, None)]);
    }

    #[test]
    fn empty_scheme_limits_nothing() {
        let mut limiter = Limiter::default();
        limiter.set_rules(Some(Vec::new()));
        assert!(limiter.evaluate(&who("token:a", "ip", "/x"), None).is_empty());
        assert!(limiter.preview().is_empty());
        // The fault still blocks, with the default rule.
        let forced = limiter.evaluate(&who("token:a", "ip", "/x"), Some(5));
        assert_eq!(summary(&forced), [("1000/60s".to_owned(), 0, Some(5))]);
    }

    #[test]
    fn endpoint_filter_and_priority_order() {
        let mut limiter = Limiter::default();
        limiter.set_rules(Some(vec![
            RateLimitRule::new(5, RateLimitUnit::Minute, 1).priority(2),
            RateLimitRule::new(2, RateLimitUnit::Second, 10)
                .endpoints(["/search"])
                .priority(1),
            RateLimitRule::new(3, RateLimitUnit::Hour, 1).endpoints(["/other"]),
        ]));
        let out = limiter.evaluate(&who("token:a", "ip", "/search"), None);
        assert_eq!(
            summary(&out),
            [("2/10s".to_owned(), 1, None), ("5/60s".to_owned(), 4, None)]
        );
        let out = limiter.evaluate(&who("token:a", "ip", "/projects"), None);
        assert_eq!(summary(&out), [("5/60s".to_owned(), 3, None)]);
    }

    #[test]
    fn every_rule_counts_even_after_a_block() {
        let mut limiter = Limiter::default();
        limiter.set_rules(Some(vec![
            RateLimitRule::new(1, RateLimitUnit::Minute, 1),
            RateLimitRule::new(3, RateLimitUnit::Hour, 1),
        ]));
        let s = who("token:a", "ip", "/x");
        assert_eq!(
            summary(&limiter.evaluate(&s, None)),
            [("1/60s".to_owned(), 0, None), ("3/3600s".to_owned(), 2, None)]
        );
        // The first rule blocks; the second still counts.
        assert_eq!(
            summary(&limiter.evaluate(&s, None)),
            [("1/60s".to_owned(), 0, Some(60_000)), ("3/3600s".to_owned(), 1, None)]
        );
        assert_eq!(
            summary(&limiter.evaluate(&s, None)),
            [("1/60s".to_owned(), 0, Some(60_000)), ("3/3600s".to_owned(), 0, None)]
        );
        assert_eq!(
            summary(&limiter.evaluate(&s, None)),
            [
                ("1/60s".to_owned(), 0, Some(60_000)),
                ("3/3600s".to_owned(), 0, Some(3_600_000))
            ]
        );
        limiter.reset();
        assert_eq!(limiter.evaluate(&s, None)[0].blocked, None);
    }

    #[test]
    fn modes_pick_counters() {
        let mut limiter = Limiter::default();
        limiter.set_rules(Some(vec![
            RateLimitRule::new(1, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerKey),
        ]));
        assert_eq!(limiter.evaluate(&who("token:a", "ip1", "/x"), None)[0].blocked, None);
        assert!(
            limiter.evaluate(&who("token:a", "ip2", "/x"), None)[0]
                .blocked
                .is_some()
        );
        assert_eq!(limiter.evaluate(&who("token:b", "ip1", "/x"), None)[0].blocked, None);
        assert_eq!(limiter.evaluate(&who("token:a", "ip1", "/y"), None)[0].blocked, None);

        limiter.set_rules(Some(vec![
            RateLimitRule::new(1, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerKeyAndIp),
        ]));
        assert_eq!(limiter.evaluate(&who("token:a", "ip1", "/x"), None)[0].blocked, None);
        assert_eq!(limiter.evaluate(&who("token:a", "ip2", "/x"), None)[0].blocked, None);
        assert!(
            limiter.evaluate(&who("token:a", "ip1", "/x"), None)[0]
                .blocked
                .is_some()
        );

        limiter.set_rules(Some(vec![
            RateLimitRule::new(1, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerAppAndIp),
        ]));
        assert_eq!(limiter.evaluate(&who("token:a", "ip1", "/x"), None)[0].blocked, None);
        assert!(
            limiter.evaluate(&who("token:b", "ip1", "/y"), None)[0]
                .blocked
                .is_some()
        );
        assert_eq!(limiter.evaluate(&who("token:b", "ip2", "/y"), None)[0].blocked, None);

        limiter.set_rules(Some(vec![RateLimitRule::new(1, RateLimitUnit::Minute, 1)]));
        assert_eq!(limiter.evaluate(&who("token:a", "ip1", "/x"), None)[0].blocked, None);
        assert!(
            limiter.evaluate(&who("token:b", "ip2", "/y"), None)[0]
                .blocked
                .is_some()
        );
    }

    #[test]
    fn calendar_counts_the_utc_day() {
        let mut limiter = Limiter::default();
        let rule = RateLimitRule::new(2, RateLimitUnit::CalendarMonth, 1);
        limiter.set_rules(Some(vec![rule.clone()]));
        let s = who("token:a", "ip", "/x");
        assert_eq!(limiter.evaluate(&s, None)[0].entry.remaining, 1);
        assert_eq!(limiter.evaluate(&s, None)[0].entry.remaining, 0);
        let blocked = limiter.evaluate(&s, None);
        assert_eq!(blocked[0].blocked, Some(2_592_000_000));
        assert_eq!(blocked[0].entry.rule, "2/2592000s");
        // A new UTC day restarts the count.
        for counter in limiter.counters.values_mut() {
            if let Counter::Calendar { day, .. } = counter {
                *day -= 1;
            }
        }
        assert_eq!(limiter.evaluate(&s, None)[0].blocked, None);
    }

    #[test]
    fn zero_and_huge_limits_do_not_panic() {
        let mut limiter = Limiter::default();
        limiter.set_rules(Some(vec![
            RateLimitRule::new(0, RateLimitUnit::Second, 1),
            RateLimitRule::new(u32::MAX, RateLimitUnit::Month, u64::MAX),
            RateLimitRule::new(1, RateLimitUnit::Millisecond, 0),
        ]));
        let out = limiter.evaluate(&who("token:a", "ip", "/x"), None);
        assert_eq!(out[0].blocked, Some(1000));
        assert_eq!(out[0].entry.remaining, 0);
        assert_eq!(out[1].blocked, None);
        assert_eq!(out[2].entry.rule, "1/0ms");
        assert_eq!(single_rule(3, Duration::from_millis(300)).label(), "3/300ms");
    }
}
