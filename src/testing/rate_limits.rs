//! Public types describing a rate-limit scheme of the [`FakeGateway`](super::FakeGateway):
//! Wacht's `RateLimit` rule (`gateway-protocol.md` §3.2 step 9) with its unit and mode.

/// Unit of a rule's window; the window is the unit's length times
/// [`RateLimitRule::duration`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitUnit {
    /// One millisecond.
    Millisecond,
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (86 400 s), sliding.
    Day,
    /// One day; the count restarts at 00:00 UTC instead of sliding.
    CalendarDay,
    /// 30 days, sliding.
    Month,
    /// 30 days for the window length and labels; the count, as on the real gateway (a
    /// quirk), covers only the current UTC day (it restarts at 00:00 UTC).
    CalendarMonth,
}

impl RateLimitUnit {
    /// The unit's length in milliseconds (`Month` and `CalendarMonth`: 30 days).
    #[must_use]
    pub const fn millis(self) -> u64 {
        const DAY: u64 = 86_400_000;
        match self {
            Self::Millisecond => 1,
            Self::Second => 1000,
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day | Self::CalendarDay => DAY,
            Self::Month | Self::CalendarMonth => 30 * DAY,
        }
    }

    /// Its name in Wacht's rule JSON (`millisecond`, …, `calendar_month`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Millisecond => "millisecond",
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::CalendarDay => "calendar_day",
            Self::Month => "month",
            Self::CalendarMonth => "calendar_month",
        }
    }

    /// Whether the count restarts at 00:00 UTC (`CalendarDay`, `CalendarMonth`) instead of
    /// sliding.
    #[must_use]
    pub const fn is_calendar(self) -> bool {
        matches!(self, Self::CalendarDay | Self::CalendarMonth)
    }
}

/// Whose requests one counter of a rule counts: the layer's own
/// [`RateLimitMode`](crate::rate_limit::RateLimitMode), which names Wacht's modes.
pub use crate::rate_limit::RateLimitMode;

/// One rule of a rate-limit scheme, as Wacht stores it: at most
/// [`max_requests`](Self::max_requests) requests per window of
/// [`duration`](Self::duration) [`unit`](Self::unit)s, counted per
/// [`mode`](Self::mode), for the [`endpoints`](Self::endpoints) it names.
///
/// ```ignore
/// gateway.set_rate_limit_rules(vec![
///     RateLimitRule::new(1000, RateLimitUnit::Minute, 1),
///     RateLimitRule::new(5, RateLimitUnit::Second, 10)
///         .mode(RateLimitMode::PerKey)
///         .endpoints(["/v1/search"])
///         .priority(-1),
/// ]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitRule {
    /// Unit of the window.
    pub unit: RateLimitUnit,
    /// Number of units in the window.
    pub duration: u64,
    /// Requests allowed per window.
    pub max_requests: u32,
    /// Counting mode; `None` (absent in Wacht's JSON) means [`RateLimitMode::PerApp`].
    pub mode: Option<RateLimitMode>,
    /// Normalised resources (`/v1/projects`) the rule applies to, compared by exact string
    /// equality; `*` matches every resource. `None` (absent) means `["*"]`.
    pub endpoints: Option<Vec<String>>,
    /// Evaluation order, ascending (ties keep the configured order).
    pub priority: i32,
}

impl RateLimitRule {
    /// `max_requests` per `duration` `unit`s, mode absent (`per_app`), endpoints absent (every
    /// resource), priority 0.
    #[must_use]
    pub fn new(max_requests: u32, unit: RateLimitUnit, duration: u64) -> Self {
        Self {
            unit,
            duration,
            max_requests,
            mode: None,
            endpoints: None,
            priority: 0,
        }
    }

    /// Sets the counting mode.
    #[must_use]
    pub fn mode(mut self, mode: RateLimitMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Restricts the rule to these normalised resources (`*` for all).
    #[must_use]
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = Some(endpoints.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the priority (lower is evaluated first).
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The mode counters use: [`RateLimitRule::mode`], `per_app` when absent.
    #[must_use]
    pub fn effective_mode(&self) -> RateLimitMode {
        self.mode.unwrap_or_default()
    }

    /// Window length in milliseconds: the unit's length times the duration (saturating).
    #[must_use]
    pub fn window_ms(&self) -> u64 {
        self.unit.millis().saturating_mul(self.duration)
    }

    /// The window label `W` of the `x-ratelimit-<W>-*` header entries: `<n>ms` under one
    /// second, else whole seconds (`60s`).
    #[must_use]
    pub fn window_label(&self) -> String {
        super::protocol::window_label(self.window_ms())
    }

    /// The rule label answered in `rate_limits[].rule` and `blocked_rule`:
    /// `<max_requests>/<W>`, e.g. `1000/60s`.
    #[must_use]
    pub fn label(&self) -> String {
        format!("{}/{}", self.max_requests, self.window_label())
    }

    /// Whether the rule applies to the normalised `resource`: endpoints absent, or one of
    /// them is `*` or exactly `resource`. `None` (no resource known) matches only rules for
    /// every resource.
    pub(crate) fn applies_to(&self, resource: Option<&str>) -> bool {
        match &self.endpoints {
            None => true,
            Some(list) => list
                .iter()
                .any(|e| e == "*" || resource.is_some_and(|r| e.as_str() == r)),
        }
    }
}

impl Default for RateLimitRule {
    /// Wacht's default when an app has no scheme: 1000 requests per minute, `per_app`.
    fn default() -> Self {
        Self::new(1000, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerApp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_labels() {
        let rule = RateLimitRule::default();
        assert_eq!(rule.window_ms(), 60_000);
        assert_eq!(rule.label(), "1000/60s");
        assert_eq!(rule.effective_mode(), RateLimitMode::PerApp);
        let cases = [
            (RateLimitUnit::Millisecond, 300, "300ms"),
            (RateLimitUnit::Millisecond, 1500, "1s"),
            (RateLimitUnit::Second, 10, "10s"),
            (RateLimitUnit::Hour, 1, "3600s"),
            (RateLimitUnit::Day, 1, "86400s"),
            (RateLimitUnit::CalendarDay, 1, "86400s"),
            (RateLimitUnit::Month, 1, "2592000s"),
            (RateLimitUnit::CalendarMonth, 1, "2592000s"),
        ];
        for (unit, duration, label) in cases {
            assert_eq!(RateLimitRule::new(5, unit, duration).window_label(), label, "{unit:?}");
        }
        assert_eq!(
            RateLimitRule::new(1, RateLimitUnit::Month, u64::MAX).window_ms(),
            u64::MAX
        );
    }

    #[test]
    fn endpoint_matching() {
        let all = RateLimitRule::new(1, RateLimitUnit::Second, 1);
        assert!(all.applies_to(Some("/x")));
        assert!(all.applies_to(None));
        let star = all.clone().endpoints(["/a", "*"]);
        assert!(star.applies_to(Some("/x")));
        let scoped = all.clone().endpoints(["/a"]);
        assert!(scoped.applies_to(Some("/a")));
        assert!(!scoped.applies_to(Some("/a/")));
        assert!(!scoped.applies_to(Some("/A")));
        assert!(!scoped.applies_to(None));
        assert!(!all.endpoints(Vec::<String>::new()).applies_to(Some("/a")));
    }

    #[test]
    fn names() {
        assert_eq!(RateLimitUnit::CalendarMonth.as_str(), "calendar_month");
        assert!(RateLimitUnit::CalendarMonth.is_calendar());
        assert!(!RateLimitUnit::Day.is_calendar());
        assert_eq!(RateLimitMode::PerAppAndIp.as_str(), "per_app_and_ip");
        assert_eq!(RateLimitMode::default(), RateLimitMode::PerApp);
    }
}
