//! [`RateLimitConfig`]: whether the layer meters Wacht's rate limits on the answers it serves
//! from cache, how it keys them, and which headers it adds.

use std::sync::Arc;

/// Whose requests a Wacht rate-limit rule counts together (the rule's `mode` in Wacht).
///
/// The gateway's answer names a rule (`1000/60s`) but not its mode, so the layer keys its
/// meters by the mode configured here ([`RateLimitConfig::mode`], per rule with
/// [`RateLimitConfig::rule_mode`]). The default is Wacht's own default, `per_app`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateLimitMode {
    /// Every credential of one API-auth app (for an OAuth token: every token its end user
    /// granted, the app `oauth_<user id>`; for an API key: every key of its app).
    #[default]
    PerApp,
    /// One credential (an API key, an OAuth token) on one route.
    PerKey,
    /// One credential on one route from one client IP.
    PerKeyAndIp,
    /// Every credential of one app from one client IP.
    PerAppAndIp,
}

impl RateLimitMode {
    /// Wacht's name: `per_app`, `per_key`, `per_key_and_ip` or `per_app_and_ip`.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitMode::PerApp => "per_app",
            RateLimitMode::PerKey => "per_key",
            RateLimitMode::PerKeyAndIp => "per_key_and_ip",
            RateLimitMode::PerAppAndIp => "per_app_and_ip",
        }
    }

    /// Parses Wacht's name.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "per_app" => Some(RateLimitMode::PerApp),
            "per_key" => Some(RateLimitMode::PerKey),
            "per_key_and_ip" => Some(RateLimitMode::PerKeyAndIp),
            "per_app_and_ip" => Some(RateLimitMode::PerAppAndIp),
            _ => None,
        }
    }

    /// True for the modes that count per client IP.
    pub(crate) fn by_ip(self) -> bool {
        matches!(self, RateLimitMode::PerKeyAndIp | RateLimitMode::PerAppAndIp)
    }
}

/// Which rate-limit headers protected responses carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitHeaders {
    /// None.
    None,
    /// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft, structured fields).
    #[default]
    Standard,
    /// The standard ones and the gateway's own names, `X-RateLimit-<W>-Limit`,
    /// `X-RateLimit-<W>-Remaining` (and `X-RateLimit-<W>-Reset` on a 429, in milliseconds as
    /// the gateway writes it).
    StandardAndWacht,
}

/// Metering of Wacht's rate limits on cached answers (see [`rate_limit`](crate::rate_limit)).
///
/// On by default: the layer keeps the limits configured in Wacht for the requests it serves
/// from its cache. [`disable_metering_unsafe`](Self::disable_metering_unsafe) turns it off
/// (logged): cached hits are then not limited at all.
///
/// ```
/// use tower_wacht::rate_limit::{RateLimitConfig, RateLimitMode};
///
/// let limits = RateLimitConfig::default()
///     // This app's scheme counts one rule per key and route.
///     .rule_mode("100/60s", RateLimitMode::PerKey);
/// # let _ = limits;
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    pub(crate) enabled: bool,
    pub(crate) mode: RateLimitMode,
    pub(crate) rule_modes: Vec<(Arc<str>, RateLimitMode)>,
    pub(crate) headers: RateLimitHeaders,
    pub(crate) fleet_batch: u64,
}

/// Default most requests a replica serves before it adds them to the fleet's meters.
pub const DEFAULT_FLEET_BATCH: u64 = 16;

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            mode: RateLimitMode::PerApp,
            rule_modes: Vec::new(),
            headers: RateLimitHeaders::Standard,
            fleet_batch: DEFAULT_FLEET_BATCH,
        }
    }
}

impl RateLimitConfig {
    /// The mode of every rule without a [`rule_mode`](Self::rule_mode) (default `per_app`,
    /// Wacht's default).
    pub fn mode(mut self, mode: RateLimitMode) -> Self {
        self.mode = mode;
        self
    }

    /// The mode of one rule, by the label the gateway gives it (`<max_requests>/<window>`,
    /// e.g. `1000/60s` or `20/500ms`).
    pub fn rule_mode(mut self, rule: impl Into<Arc<str>>, mode: RateLimitMode) -> Self {
        let rule = rule.into();
        self.rule_modes.retain(|(r, _)| *r != rule);
        self.rule_modes.push((rule, mode));
        self
    }

    /// Which headers protected responses carry (default [`RateLimitHeaders::Standard`]).
    pub fn headers(mut self, headers: RateLimitHeaders) -> Self {
        self.headers = headers;
        self
    }

    /// In fleet mode, how many requests a replica serves of a rule before it adds them to
    /// the fleet's count (default 16; at most a twentieth of the rule's limit is used). The
    /// fleet serves at most the rule's limit plus one batch per replica in a window.
    pub fn fleet_batch(mut self, requests: u64) -> Self {
        self.fleet_batch = requests.max(1);
        self
    }

    /// Serves cached hits without counting them against Wacht's rate limits, as before
    /// metering existed: a client can then exceed the limits configured in Wacht by as much
    /// as the cache serves it. Logged at `WARN` when the layer is built.
    pub fn disable_metering_unsafe(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// The mode of `rule`.
    pub(crate) fn mode_of(&self, rule: &str) -> RateLimitMode {
        self.rule_modes
            .iter()
            .find(|(r, _)| &**r == rule)
            .map_or(self.mode, |(_, m)| *m)
    }

    /// True when some rule is counted per client IP.
    pub(crate) fn by_ip(&self) -> bool {
        self.mode.by_ip() || self.rule_modes.iter().any(|(_, m)| m.by_ip())
    }
}
