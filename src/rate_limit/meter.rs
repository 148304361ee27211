//! [`Meter`]: one rule's count for one subject, in fixed windows aligned to Unix time (so
//! every replica agrees where a window begins).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A rule as the gateway labels it: `<limit>/<window>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    /// The label, e.g. `1000/60s` (the `RateLimit-Policy` name).
    pub(crate) label: Arc<str>,
    /// Requests allowed per window.
    pub(crate) limit: u64,
    /// The window, in milliseconds (never zero).
    pub(crate) window_ms: u64,
    /// Its `RateLimit-Policy` field, made once (`None` for a label that is not a plain
    /// `<digits>/<digits>(s|ms)`).
    pub(crate) policy: Option<http::HeaderValue>,
}

impl Rule {
    /// The rule of a `rate_limits[]` entry: the window from its label (`<n>ms` or `<n>s`),
    /// the limit as the entry states it. `None` for a label of another form.
    pub(crate) fn parse(label: &str, limit: u64) -> Option<Rule> {
        let (_, window) = label.split_once('/')?;
        let window_ms = if let Some(ms) = window.strip_suffix("ms") {
            ms.parse::<u64>().ok()?
        } else {
            window.strip_suffix('s')?.parse::<u64>().ok()?.checked_mul(1000)?
        };
        (window_ms > 0).then(|| Rule {
            label: label.into(),
            limit,
            window_ms,
            policy: super::headers::policy(label, limit, window_ms),
        })
    }

    /// The window as a duration.
    pub(crate) fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

/// What one meter says of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    /// Counted; this many requests are left in the window.
    Served { remaining: u64, reset_ms: u64 },
    /// The window's budget is spent until `reset_ms` from now.
    Spent { reset_ms: u64 },
    /// Not counted: this replica holds a full batch the fleet's count does not have yet;
    /// add it first.
    Flush,
}

/// The counts of the current window.
#[derive(Debug, Default)]
struct Window {
    /// Which window (Unix milliseconds ÷ the window).
    index: u64,
    /// What the gateway reported used at its latest answer in this window (its `limit −
    /// remaining`: every call it saw, from anywhere), or the fleet's highest report.
    seen: u64,
    /// Requests this replica served from cache in this window (never seen by the gateway).
    served: u64,
    /// Of `served`, how many the fleet's count already holds.
    flushed: u64,
    /// The fleet's count at its last read (every replica's flushed requests, ours included).
    fleet: u64,
}

impl Window {
    fn used(&self) -> u64 {
        self.seen
            .saturating_add(self.served)
            .saturating_add(self.fleet.saturating_sub(self.flushed))
    }
}

/// One rule's count for one subject (an app, a key on a route, ...).
#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) rule: Rule,
    /// The subject's key in the fleet's store (hashed: never a credential, never an id in
    /// clear), when the fleet shares meters.
    pub(crate) fleet_key: Option<Box<str>>,
    window: Mutex<Window>,
}

/// A batch of this replica's requests for the fleet's count.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unflushed {
    pub(crate) index: u64,
    pub(crate) served: u64,
    pub(crate) seen: u64,
}

impl Meter {
    pub(crate) fn new(rule: Rule, fleet_key: Option<Box<str>>) -> Self {
        Meter {
            rule,
            fleet_key,
            window: Mutex::new(Window::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // Counts stay meaningful whatever a panicking holder left: take them.
        self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The window at `now_ms`, rolled over if a new one began.
    fn current<'a>(&self, window: &'a mut MutexGuard<'_, Window>, now_ms: u64) -> (&'a mut Window, u64) {
        let index = now_ms / self.rule.window_ms;
        if window.index != index {
            **window = Window {
                index,
                ..Window::default()
            };
        }
        let end = index.saturating_add(1).saturating_mul(self.rule.window_ms);
        (&mut **window, end.saturating_sub(now_ms))
    }

    /// Counts a request served from cache at `now_ms`, unless the window's budget is spent,
    /// or (`batch`: a meter the fleet shares) this replica holds that many requests the
    /// fleet's count does not. With the count, whether this replica now holds half a batch.
    pub(crate) fn admit(&self, now_ms: u64, batch: Option<u64>) -> (Count, bool) {
        let mut guard = self.lock();
        let (window, reset_ms) = self.current(&mut guard, now_ms);
        let used = window.used();
        if used >= self.rule.limit {
            return (Count::Spent { reset_ms }, false);
        }
        let unflushed = window.served.saturating_sub(window.flushed);
        if batch.is_some_and(|batch| unflushed >= batch) {
            return (Count::Flush, true);
        }
        window.served += 1;
        let half_full = batch.is_some_and(|batch| (unflushed + 1) * 2 >= batch);
        let count = Count::Served {
            remaining: self.rule.limit.saturating_sub(used + 1),
            reset_ms,
        };
        (count, half_full)
    }

    /// Takes back a request [`admit`](Self::admit) counted at `now_ms` (another rule of the
    /// same request did not count it).
    pub(crate) fn uncount(&self, now_ms: u64) {
        let mut guard = self.lock();
        let (window, _) = self.current(&mut guard, now_ms);
        if window.served > window.flushed {
            window.served -= 1;
        }
    }

    /// True when the window this meter counted in has ended by `now_ms`: a new meter would
    /// count the same (nothing yet).
    pub(crate) fn idle(&self, now_ms: u64) -> bool {
        let window = self.lock();
        window.index != now_ms / self.rule.window_ms
    }

    /// Spent if what the gateway saw and what was served here is past the limit (a request
    /// the gateway counted last may still be served at exactly the limit).
    pub(crate) fn over(&self, now_ms: u64) -> Count {
        let mut guard = self.lock();
        let (window, reset_ms) = self.current(&mut guard, now_ms);
        self.past_limit(window, reset_ms)
    }

    /// Spent if the window's use is past the limit, else what is left.
    fn past_limit(&self, window: &Window, reset_ms: u64) -> Count {
        let used = window.used();
        if used > self.rule.limit {
            Count::Spent { reset_ms }
        } else {
            Count::Served {
                remaining: self.rule.limit - used,
                reset_ms,
            }
        }
    }

    /// The gateway said the window's budget is spent: it is, here too.
    pub(crate) fn exhaust(&self, now_ms: u64) {
        let mut guard = self.lock();
        let (window, _) = self.current(&mut guard, now_ms);
        window.seen = window.seen.max(self.rule.limit);
    }

    /// The count at `now_ms`, counting nothing.
    pub(crate) fn peek(&self, now_ms: u64) -> Count {
        let mut guard = self.lock();
        let (window, reset_ms) = self.current(&mut guard, now_ms);
        Count::Served {
            remaining: self.rule.limit.saturating_sub(window.used()),
            reset_ms,
        }
    }

    /// What the gateway said at `now_ms`: `remaining` of the rule's limit are left (it counted
    /// the request it answered). Returns what is left by this meter's count.
    pub(crate) fn observe(&self, now_ms: u64, remaining: u64) -> Count {
        let mut guard = self.lock();
        let (window, reset_ms) = self.current(&mut guard, now_ms);
        window.seen = window.seen.max(self.rule.limit.saturating_sub(remaining));
        self.past_limit(window, reset_ms)
    }

    /// Requests served here in the window at `now_ms` and not yet in the fleet's count.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn unflushed(&self, now_ms: u64) -> Unflushed {
        let mut guard = self.lock();
        let (window, _) = self.current(&mut guard, now_ms);
        Unflushed {
            index: window.index,
            served: window.served.saturating_sub(window.flushed),
            seen: window.seen,
        }
    }

    /// The most requests of this rule a replica serves before the fleet's count has them: the
    /// configured batch, at most a twentieth of the limit (at least one).
    pub(crate) fn batch(&self, configured: u64) -> u64 {
        configured.min(self.rule.limit / 20).max(1)
    }

    /// The fleet took `batch`: its count for the window is now `fleet` requests, and the
    /// highest gateway report any replica made is `seen`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn flushed(&self, batch: Unflushed, fleet: u64, seen: u64) {
        let mut window = self.lock();
        if window.index != batch.index {
            return;
        }
        window.flushed = window.flushed.saturating_add(batch.served).min(window.served);
        window.fleet = window.fleet.max(fleet);
        window.seen = window.seen.max(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(limit: u64, window_ms: u64) -> Meter {
        Meter::new(
            Rule {
                label: "x".into(),
                limit,
                window_ms,
                policy: None,
            },
            None,
        )
    }

    #[test]
    fn labels_give_windows() {
        assert_eq!(Rule::parse("1000/60s", 1000).map(|r| r.window_ms), Some(60_000));
        assert_eq!(Rule::parse("20/500ms", 20).map(|r| r.window_ms), Some(500));
        assert_eq!(Rule::parse("20/0s", 20), None);
        assert_eq!(Rule::parse("20", 20), None);
        assert_eq!(Rule::parse("20/5m", 20), None);
        assert_eq!(Rule::parse("1/99999999999999999999s", 1), None);
    }

    #[test]
    fn a_window_serves_its_limit_less_what_the_gateway_saw() {
        let m = meter(5, 1000);
        assert_eq!(
            m.observe(10_000, 3),
            Count::Served {
                remaining: 3,
                reset_ms: 1000
            }
        );
        assert_eq!(
            m.admit(10_100, None).0,
            Count::Served {
                remaining: 2,
                reset_ms: 900
            }
        );
        assert!(matches!(m.admit(10_200, None).0, Count::Served { remaining: 1, .. }));
        assert!(matches!(m.admit(10_300, None).0, Count::Served { remaining: 0, .. }));
        assert_eq!(m.admit(10_400, None).0, Count::Spent { reset_ms: 600 });
        assert!(!m.idle(10_999));
        // The next window starts from nothing.
        assert!(m.idle(11_000));
        assert!(matches!(m.admit(11_000, None).0, Count::Served { remaining: 4, .. }));
        m.uncount(11_001);
        assert!(matches!(m.admit(11_002, None).0, Count::Served { remaining: 4, .. }));
    }

    #[test]
    fn the_fleet_count_holds_other_replicas_requests() {
        let m = meter(10, 1000);
        assert!(!m.admit(100, Some(4)).1);
        assert!(m.admit(100, Some(4)).1, "half a batch");
        m.admit(100, Some(4));
        m.admit(100, Some(4));
        // A full batch: not counted until the fleet has it.
        assert_eq!(m.admit(100, Some(4)).0, Count::Flush);
        let batch = m.unflushed(100);
        assert_eq!(batch.served, 4);
        // The fleet holds ours (4) and 5 of others.
        m.flushed(batch, 9, 0);
        assert!(matches!(m.admit(200, Some(4)).0, Count::Served { remaining: 0, .. }));
        assert!(matches!(m.admit(300, Some(4)).0, Count::Spent { .. }));
        assert_eq!(m.unflushed(300).served, 1);
    }

    #[test]
    fn a_batch_is_at_most_a_twentieth_of_the_limit() {
        assert_eq!(meter(1000, 1000).batch(16), 16);
        assert_eq!(meter(100, 1000).batch(16), 5);
        assert_eq!(meter(3, 1000).batch(16), 1);
    }
}
