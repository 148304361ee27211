//! [`Meter`]: one rule's count for one subject, in fixed windows aligned to Unix time (so
//! every replica agrees where a window begins).

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// `<digits>/<digits>(s|ms)`: responses then carry no rate-limit headers for it).
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
    /// Counted; this many requests are left in the window, which ends in `reset_ms`.
    /// `counted_in`: the end (Unix ms) of the window it was counted in, as the meter knew it
    /// (what [`Meter::uncount`] checks).
    Served {
        remaining: u64,
        reset_ms: u64,
        counted_in: u64,
    },
    /// The window's budget is spent until `reset_ms` from now.
    Spent { reset_ms: u64 },
    /// Not counted: this replica holds a full batch the fleet's count does not have yet;
    /// add it first.
    Flush,
}

/// The counts of the current window other than what this replica served (that is in
/// [`Meter::fast`]), kept under the meter's lock.
#[derive(Debug, Default)]
struct Window {
    /// Which window (Unix milliseconds ÷ the window).
    index: u64,
    /// What the gateway reported used at its latest answer in this window (its `limit −
    /// remaining`: every call it saw, from anywhere), or the fleet's highest report.
    seen: u64,
    /// Of the requests served here, how many the fleet's count already holds.
    flushed: u64,
    /// The fleet's count at its last read (every replica's flushed requests, ours included).
    fleet: u64,
}

impl Window {
    /// What others used: the gateway's count, and the fleet's beyond ours.
    fn others(&self) -> u64 {
        self.seen.saturating_add(self.fleet.saturating_sub(self.flushed))
    }
}

/// Most requests one meter counts in a window (the served count is 32 bits of
/// [`Meter::fast`]); a limit above it is metered as this.
const MAX_SERVED: u64 = u32::MAX as u64 - 1;

/// [`Meter::fast`] of `served` requests, `open` of which the fast path may serve.
fn pack(served: u64, open: u64) -> u64 {
    (open.min(MAX_SERVED) << 32) | served.min(MAX_SERVED)
}

/// `(served, open)` of [`Meter::fast`].
fn unpack(word: u64) -> (u64, u64) {
    (word & u64::from(u32::MAX), word >> 32)
}

/// One rule's count for one subject (an app, a key on a route, ...).
///
/// A hit counts with one compare-and-swap ([`fast`](Self::fast)) while the window is open,
/// its budget not near spent and (for a meter the fleet shares) less than half a batch
/// unflushed; everything else takes the lock, which also recomputes how far the fast path
/// may go.
#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) rule: Arc<Rule>,
    /// The subject's key in the fleet's store (hashed: never a credential, never an id in
    /// clear), when the fleet shares meters.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fleet_key: Option<Box<str>>,
    /// With `fleet_key`: the most requests this replica serves before the fleet's count has
    /// them.
    batch: Option<u64>,
    /// Requests served here in the current window (low 32 bits), and up to which count the
    /// fast path may serve without the lock (high 32 bits).
    fast: AtomicU64,
    /// What others used ([`Window::others`]), for the fast path's `remaining`.
    others: AtomicU64,
    /// When the current window ends, in Unix milliseconds (0: no window yet).
    ends_ms: AtomicU64,
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
    /// A meter of `rule`; named `fleet_key` in the fleet's store, where it holds at most
    /// `configured_batch` unflushed requests (at most a twentieth of the limit).
    pub(crate) fn new(rule: Rule, fleet_key: Option<Box<str>>, configured_batch: u64) -> Self {
        let batch = fleet_key
            .is_some()
            .then(|| configured_batch.min(rule.limit / 20).max(1));
        Meter {
            rule: Arc::new(rule),
            fleet_key,
            batch,
            fast: AtomicU64::new(0),
            others: AtomicU64::new(0),
            ends_ms: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // Counts stay meaningful whatever a panicking holder left: take them.
        self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requests served here in the current window.
    fn served(&self) -> u64 {
        unpack(self.fast.load(Ordering::Acquire)).0
    }

    /// The window at `now_ms`, rolled over if a later one began (a request stamped before
    /// the window began is counted in it), and the milliseconds until it ends.
    fn current<'a>(&self, window: &'a mut MutexGuard<'_, Window>, now_ms: u64) -> (&'a mut Window, u64) {
        let index = now_ms / self.rule.window_ms;
        if index > window.index || self.ends_ms.load(Ordering::Relaxed) == 0 {
            **window = Window {
                index,
                ..Window::default()
            };
            self.fast.store(pack(0, self.open(window)), Ordering::Release);
            self.others.store(0, Ordering::Relaxed);
            let ends = index.saturating_add(1).saturating_mul(self.rule.window_ms);
            self.ends_ms.store(ends, Ordering::Release);
        }
        // The current window's end (a request stamped before it began is counted in it, and
        // waits at most a window).
        let ends = window.index.saturating_add(1).saturating_mul(self.rule.window_ms);
        (&mut **window, ends.saturating_sub(now_ms).min(self.rule.window_ms))
    }

    /// Up to which served count the fast path may serve: below the limit less what others
    /// used, and (shared) below half a batch unflushed, where the flusher must be woken.
    fn open(&self, window: &Window) -> u64 {
        let budget = self.rule.limit.min(MAX_SERVED).saturating_sub(window.others());
        match self.batch {
            Some(batch) => budget.min(window.flushed.saturating_add(batch.div_ceil(2)).saturating_sub(1)),
            None => budget,
        }
    }

    /// Tells the fast path what the window's counts now allow (after they changed).
    fn publish(&self, window: &Window) {
        self.others.store(window.others(), Ordering::Relaxed);
        let open = self.open(window);
        let _ = self.fast.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            Some(pack(unpack(word).0, open))
        });
    }

    /// Counts a request served from cache at `now_ms`, unless the window's budget is spent,
    /// or (`fleet_up`, for a meter the fleet shares) this replica holds a batch of requests
    /// the fleet's count does not. With the count, whether this replica now holds half a
    /// batch.
    #[inline]
    pub(crate) fn admit(&self, now_ms: u64, fleet_up: bool) -> (Count, bool) {
        let ends = self.ends_ms.load(Ordering::Acquire);
        if now_ms < ends {
            let mut word = self.fast.load(Ordering::Acquire);
            loop {
                let (served, open) = unpack(word);
                if served >= open {
                    break;
                }
                match self
                    .fast
                    .compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        // A roll may have come between the window check and the count: the
                        // budget reported is then the new window's, never past its end.
                        let current_end = self.ends_ms.load(Ordering::Acquire).max(ends);
                        let used = self.others.load(Ordering::Relaxed).saturating_add(served + 1);
                        let count = Count::Served {
                            remaining: self.rule.limit.saturating_sub(used),
                            reset_ms: current_end.saturating_sub(now_ms).min(self.rule.window_ms),
                            counted_in: ends,
                        };
                        return (count, false);
                    }
                    Err(now) => word = now,
                }
            }
        }
        self.admit_locked(now_ms, fleet_up)
    }

    /// [`admit`](Self::admit) under the lock: a new window, a budget near spent, half a
    /// batch unflushed.
    #[cold]
    #[inline(never)]
    fn admit_locked(&self, now_ms: u64, fleet_up: bool) -> (Count, bool) {
        let mut guard = self.lock();
        let (window, reset_ms) = self.current(&mut guard, now_ms);
        let counted_in = self.ends_ms.load(Ordering::Acquire);
        let others = window.others();
        let batch = self.batch.filter(|_| fleet_up);
        let flushed = window.flushed;
        // The fast path may count meanwhile (up to its bound): decide on the count as it is
        // when this one is added.
        let mut count = Count::Spent { reset_ms };
        let _ = self.fast.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (served, open) = unpack(word);
            let used = others.saturating_add(served);
            if used >= self.rule.limit || served >= MAX_SERVED {
                count = Count::Spent { reset_ms };
                return None;
            }
            if batch.is_some_and(|batch| served.saturating_sub(flushed) >= batch) {
                count = Count::Flush;
                return None;
            }
            count = Count::Served {
                remaining: self.rule.limit.saturating_sub(used + 1),
                reset_ms,
                counted_in,
            };
            Some(pack(served + 1, open))
        });
        let half_full = match count {
            Count::Flush => true,
            Count::Spent { .. } => false,
            Count::Served { .. } => batch.is_some_and(|batch| {
                let unflushed = self.served().saturating_sub(flushed);
                unflushed * 2 >= batch
            }),
        };
        (count, half_full)
    }

    /// Takes back a request [`admit`](Self::admit) counted in the window ending at
    /// `counted_in` (another rule of the same request did not count it). Nothing if that
    /// window has rolled since: the new one never counted the request.
    pub(crate) fn uncount(&self, counted_in: u64) {
        let window = self.lock();
        if self.ends_ms.load(Ordering::Acquire) != counted_in {
            return;
        }
        let flushed = window.flushed;
        let _ = self.fast.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (served, open) = unpack(word);
            (served > flushed).then(|| pack(served - 1, open))
        });
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
        let used = window.others().saturating_add(self.served());
        if used > self.rule.limit {
            Count::Spent { reset_ms }
        } else {
            Count::Served {
                remaining: self.rule.limit - used,
                reset_ms,
                counted_in: 0,
            }
        }
    }

    /// The gateway said the window's budget is spent: it is, here too.
    pub(crate) fn exhaust(&self, now_ms: u64) {
        let mut guard = self.lock();
        let (window, _) = self.current(&mut guard, now_ms);
        window.seen = window.seen.max(self.rule.limit);
        self.publish(window);
    }

    /// The count at `now_ms`, counting nothing.
    pub(crate) fn peek(&self, now_ms: u64) -> Count {
        let mut guard = self.lock();
        let (window, reset_ms) = self.current(&mut guard, now_ms);
        Count::Served {
            remaining: self
                .rule
                .limit
                .saturating_sub(window.others().saturating_add(self.served())),
            reset_ms,
            counted_in: 0,
        }
    }

    /// What the gateway said at `now_ms`: `remaining` of the rule's limit are left (it counted
    /// the request it answered). Returns what is left by this meter's count.
    pub(crate) fn observe(&self, now_ms: u64, remaining: u64) -> Count {
        let mut guard = self.lock();
        let (window, reset_ms) = self.current(&mut guard, now_ms);
        window.seen = window.seen.max(self.rule.limit.saturating_sub(remaining));
        self.publish(window);
        self.past_limit(window, reset_ms)
    }

    /// Requests served here in the window at `now_ms` and not yet in the fleet's count.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn unflushed(&self, now_ms: u64) -> Unflushed {
        let mut guard = self.lock();
        let (window, _) = self.current(&mut guard, now_ms);
        Unflushed {
            index: window.index,
            served: self.served().saturating_sub(window.flushed),
            seen: window.seen,
        }
    }

    /// The fleet took `batch`: its count for the window is now `fleet` requests, and the
    /// highest gateway report any replica made is `seen`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn flushed(&self, batch: Unflushed, fleet: u64, seen: u64) {
        let mut window = self.lock();
        if window.index != batch.index {
            return;
        }
        window.flushed = window.flushed.saturating_add(batch.served).min(self.served());
        window.fleet = window.fleet.max(fleet);
        window.seen = window.seen.max(seen);
        self.publish(&window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(limit: u64, window_ms: u64) -> Rule {
        Rule {
            label: "x".into(),
            limit,
            window_ms,
            policy: None,
        }
    }

    fn meter(limit: u64, window_ms: u64) -> Meter {
        Meter::new(rule(limit, window_ms), None, 16)
    }

    fn shared(limit: u64, batch: u64) -> Meter {
        Meter::new(rule(limit, 1000), Some("k".into()), batch)
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
                reset_ms: 1000,
                counted_in: 0
            }
        );
        assert_eq!(
            m.admit(10_100, false).0,
            Count::Served {
                remaining: 2,
                reset_ms: 900,
                counted_in: 11_000
            }
        );
        assert!(matches!(m.admit(10_200, false).0, Count::Served { remaining: 1, .. }));
        assert!(matches!(m.admit(10_300, false).0, Count::Served { remaining: 0, .. }));
        assert_eq!(m.admit(10_400, false).0, Count::Spent { reset_ms: 600 });
        assert!(!m.idle(10_999));
        // The next window starts from nothing.
        assert!(m.idle(11_000));
        assert!(matches!(m.admit(11_000, false).0, Count::Served { remaining: 4, .. }));
        m.uncount(12_000);
        assert!(matches!(m.admit(11_002, false).0, Count::Served { remaining: 4, .. }));
    }

    #[test]
    fn the_fleet_count_holds_other_replicas_requests() {
        let m = shared(100, 4);
        assert!(!m.admit(100, true).1);
        assert!(m.admit(100, true).1, "half a batch");
        m.admit(100, true);
        m.admit(100, true);
        // A full batch: not counted until the fleet has it.
        assert_eq!(m.admit(100, true).0, Count::Flush);
        // With the fleet's store down, counted alone.
        assert!(matches!(m.admit(100, false).0, Count::Served { remaining: 95, .. }));
        m.uncount(1000);
        let batch = m.unflushed(100);
        assert_eq!(batch.served, 4);
        // The fleet holds ours (4) and 94 of others.
        m.flushed(batch, 98, 0);
        assert!(matches!(m.admit(200, true).0, Count::Served { remaining: 1, .. }));
        assert!(matches!(m.admit(200, true).0, Count::Served { remaining: 0, .. }));
        assert!(matches!(m.admit(300, true).0, Count::Spent { .. }));
        assert_eq!(m.unflushed(300).served, 2);
    }

    #[test]
    fn a_batch_is_at_most_a_twentieth_of_the_limit() {
        assert_eq!(shared(1000, 16).batch, Some(16));
        assert_eq!(shared(100, 16).batch, Some(5));
        assert_eq!(shared(3, 16).batch, Some(1));
        assert_eq!(meter(1000, 1000).batch, None);
    }

    #[test]
    fn a_request_stamped_before_the_window_counts_in_it() {
        let m = meter(2, 1000);
        assert!(matches!(m.admit(2_100, false).0, Count::Served { remaining: 1, .. }));
        // A request whose clock reading came before the roll does not start the old
        // window over.
        assert!(matches!(m.admit(1_900, false).0, Count::Served { remaining: 0, .. }));
        assert!(matches!(m.admit(2_200, false).0, Count::Spent { reset_ms: 800 }));
    }

    #[test]
    fn a_request_counted_before_a_roll_is_not_taken_back_from_the_new_window() {
        let m = meter(3, 1000);
        let Count::Served { counted_in, .. } = m.admit(900, false).0 else {
            panic!("counted");
        };
        assert_eq!(counted_in, 1000);
        // The window rolls (another request), then a later rule of the first request asks
        // for its count back: the new window never had it.
        assert!(matches!(m.admit(1_100, false).0, Count::Served { remaining: 2, .. }));
        m.uncount(counted_in);
        assert!(matches!(m.admit(1_200, false).0, Count::Served { remaining: 1, .. }));
        // A reset never reaches past a window, whatever the request's stamp.
        let Count::Served { reset_ms, .. } = m.admit(500, false).0 else {
            panic!("counted");
        };
        assert!(reset_ms <= 1000, "{reset_ms}");
        // ... on the locked path too (the budget is spent: a stale stamp's 429).
        assert_eq!(m.admit(900, false).0, Count::Spent { reset_ms: 1000 });
    }

    #[test]
    fn concurrent_hits_never_pass_the_limit() {
        let m = Arc::new(meter(10_000, 3_600_000));
        m.observe(1, 10_000 - 500);
        let served: u64 = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    (0..5_000)
                        .filter(|_| matches!(m.admit(2, false).0, Count::Served { .. }))
                        .count() as u64
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap_or(0))
            .sum();
        assert_eq!(served, 9_500);
    }
}
