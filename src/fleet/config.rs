//! [`FleetConfig`]: where Redis is, the secret every replica shares, and the bounds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;

/// The shortest fleet secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// What a replica does once it has been without the fleet (no notice heard, the change log
/// unreadable) for longer than `3 × heartbeat + disconnected_ttl`: it can no longer learn the
/// denials other replicas make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutOfSync {
    /// Keep serving, verifying through the gateway and caching for at most
    /// `disconnected_ttl` (the default): revocations made in Wacht and invalidations still
    /// apply within that bound, but a `deny_client`, `deny_session` or `deny_token_id` made
    /// on another replica meanwhile is not known here until the fleet is back.
    #[default]
    ServeThroughGateway,
    /// Answer 503 (`Retry-After`) to every request until the fleet is back: no request is
    /// served that a denial made elsewhere might cover.
    FailClosed,
}

/// Settings of fleet mode: where Redis is, the secret every replica shares, and the bounds.
///
/// ```
/// use std::time::Duration;
/// use tower_wacht::fleet::{FleetConfig, OutOfSync};
///
/// let fleet = FleetConfig::new("redis://127.0.0.1:6379", "a fleet secret of at least 32 bytes!!")
///     .timeout(Duration::from_millis(20))
///     .out_of_sync(OutOfSync::FailClosed);
/// # let _ = fleet;
/// ```
#[derive(Clone)]
pub struct FleetConfig {
    pub(crate) redis_url: String,
    pub(crate) secret: Arc<[u8]>,
    pub(crate) timeout: Duration,
    pub(crate) lease_wait: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) disconnected_ttl: Duration,
    pub(crate) max_reconnect_backoff: Duration,
    pub(crate) out_of_sync: OutOfSync,
    pub(crate) root_certificate: Option<Arc<[u8]>>,
    pub(crate) max_log_len: usize,
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password, the secret is a secret.
        f.debug_struct("FleetConfig")
            .field("redis_url", &"<redacted>")
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("lease_wait", &self.lease_wait)
            .field("heartbeat", &self.heartbeat)
            .field("disconnected_ttl", &self.disconnected_ttl)
            .field("max_reconnect_backoff", &self.max_reconnect_backoff)
            .field("out_of_sync", &self.out_of_sync)
            .field("root_certificate", &self.root_certificate.is_some())
            .field("max_log_len", &self.max_log_len)
            .finish()
    }
}

impl FleetConfig {
    /// Fleet mode on the Redis (or Valkey) at `redis_url`: `redis://[:password@]host:port[/db]`,
    /// or `rediss://` for TLS (verified against the system's roots, or the one given to
    /// [`root_certificate_pem`](Self::root_certificate_pem)), with `secret` (at least 32
    /// bytes, the same on every replica) keying token hashes and sealing entries, log
    /// entries and notices.
    ///
    /// Defaults: `timeout` 30 ms, `lease_wait` 1 s, `heartbeat` 1 s, `disconnected_ttl` 5 s,
    /// `max_reconnect_backoff` 2 s, `out_of_sync` [`OutOfSync::ServeThroughGateway`], a change
    /// log of about 10 000 entries.
    pub fn new(redis_url: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        FleetConfig {
            redis_url: redis_url.into(),
            secret: Arc::from(secret.as_ref()),
            timeout: Duration::from_millis(30),
            lease_wait: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
            disconnected_ttl: Duration::from_secs(5),
            max_reconnect_backoff: Duration::from_secs(2),
            out_of_sync: OutOfSync::ServeThroughGateway,
            root_certificate: None,
            max_log_len: 10_000,
        }
    }

    /// Longest wait for one Redis round trip on the request path (default 30 ms); past it the
    /// replica goes on without Redis.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest a replica waits for another replica's gateway call on the same token before it
    /// asks the gateway itself (default 1 s). It stops waiting as soon as the other replica
    /// is done, whatever its outcome.
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// How often each replica proves itself alive and reads the change log (default 1 s);
    /// three silent periods count as a lost fleet.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Longest a replica caches an answer locally while it is without the fleet, or while any
    /// replica holds changes Redis has not taken (default 5 s): the bound on how late a
    /// missed invalidation can take effect there.
    pub fn disconnected_ttl(mut self, ttl: Duration) -> Self {
        self.disconnected_ttl = ttl;
        self
    }

    /// Longest wait between reconnection attempts (default 2 s; each wait is jittered, so
    /// replicas that lost Redis together do not come back in step).
    pub fn max_reconnect_backoff(mut self, backoff: Duration) -> Self {
        self.max_reconnect_backoff = backoff;
        self
    }

    /// What a replica does once it has been without the fleet for longer than
    /// `3 × heartbeat + disconnected_ttl` (default [`OutOfSync::ServeThroughGateway`]).
    pub fn out_of_sync(mut self, policy: OutOfSync) -> Self {
        self.out_of_sync = policy;
        self
    }

    /// The certificate authority (PEM) a `rediss://` server's certificate must chain to,
    /// instead of the system's roots (a private CA).
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificate = Some(Arc::from(pem.as_ref()));
        self
    }

    /// About how many entries the change log keeps (default 10 000; Redis trims it
    /// approximately). A replica that falls further behind re-reads the shared state and
    /// drops its local cache.
    pub fn max_log_len(mut self, entries: usize) -> Self {
        self.max_log_len = entries;
        self
    }

    /// The Redis client these settings describe.
    pub(crate) fn client(&self) -> Result<redis::Client, ConfigError> {
        let invalid = |e: redis::RedisError| ConfigError::invalid("redis URL", e.to_string());
        match &self.root_certificate {
            Some(pem) => {
                if !self.redis_url.starts_with("rediss://") {
                    return Err(ConfigError::invalid(
                        "redis URL",
                        "a root certificate is given, so the URL must be rediss:// (TLS)",
                    ));
                }
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                };
                redis::Client::build_with_tls(self.redis_url.as_str(), certificates).map_err(invalid)
            }
            None => redis::Client::open(self.redis_url.as_str()).map_err(invalid),
        }
    }

    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::invalid(
                "fleet secret",
                format!("must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        self.client()?;
        for (name, d) in [
            ("fleet timeout", self.timeout),
            ("fleet heartbeat", self.heartbeat),
            ("fleet disconnected_ttl", self.disconnected_ttl),
            ("fleet max_reconnect_backoff", self.max_reconnect_backoff),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(name, "must be greater than zero"));
            }
        }
        if self.heartbeat > Duration::from_secs(3600) || self.disconnected_ttl > Duration::from_secs(86_400) {
            return Err(ConfigError::invalid(
                "fleet heartbeat / disconnected_ttl",
                "at most an hour / a day (they bound how late a missed change takes effect)",
            ));
        }
        if self.max_log_len < 100 {
            return Err(ConfigError::invalid("fleet max_log_len", "must be at least 100"));
        }
        Ok(())
    }

    /// How long a replica may be without the fleet before [`OutOfSync`] applies.
    pub(crate) fn out_of_sync_after(&self) -> Duration {
        self.heartbeat * 3 + self.disconnected_ttl
    }
}
