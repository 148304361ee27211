//! The JWKS of one trusted issuer: fetched from `<issuer>/.well-known/jwks.json` with the
//! gateway client's discipline (timeouts, no redirects, a size cap), kept by `kid`, and
//! refreshed single-flight: when it is older than the refresh interval (on the next
//! verification or by the verifier's timer), and on an unknown `kid` at most once per
//! `unknown_kid_refresh` however many made-up kids arrive. A failed fetch keeps the last good
//! set until it is `max_stale` old; with none (or past that), verification is unavailable
//! (503, fail closed).
//!
//! A `kid` the set lacks is judged unknown (401) only against a set fetched after the token
//! was signed: one whose fetch started after the token's `iat` (plus a second and the
//! leeway), or after this verification began (the token existed then), or one from which
//! the issuer withdrew that `kid`. Wacht publishes a key before it signs with it, so such a
//! set would hold a genuine token's key. Otherwise (the fetch is rate-limited or failing)
//! the token gets 503 with `Retry-After`: a token signed by a key rotated in after the last
//! fetch is never refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use reqwest::Url;
use serde_json::Value;

use super::{JwtFailure, Refusal, Unavailable, jose};
use crate::json::parse_strict;
use crate::telemetry;

/// Largest JWKS body read.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most keys taken from one JWKS (Wacht keeps retired keys published indefinitely).
const MAX_KEYS: usize = 128;
/// Most withdrawn `kid`s remembered (past it, the oldest are forgotten: their tokens are then
/// judged like any unknown `kid`'s).
const MAX_WITHDRAWN: usize = 128;
/// Smallest RSA modulus accepted: 2048 bits.
const MIN_MODULUS_BYTES: usize = 256;
/// Largest RSA modulus accepted: 8192 bits.
const MAX_MODULUS_BYTES: usize = 1024;
/// While no key set was ever loaded, fetches are retried at most this often.
const INITIAL_RETRY: Duration = Duration::from_secs(1);
/// Shortest `Retry-After` given to a token whose `kid` awaits a fetch.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How an issuer's key set is fetched and kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeySetPolicy {
    /// A set this old is fetched again.
    pub(crate) refresh_every: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    pub(crate) unknown_kid_every: Duration,
    /// A set this old verifies nothing.
    pub(crate) max_stale: Duration,
}

/// One issuer's key set and how it is kept fresh.
pub(crate) struct Jwks {
    /// The issuer, exactly as its tokens' `iss` must read.
    pub(crate) issuer: String,
    url: Url,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    fetch: tokio::sync::Mutex<FetchState>,
    policy: KeySetPolicy,
    /// Counts refreshes that removed a key (a compromise): the verifier then drops its
    /// cached JWT decisions.
    pub(crate) removals: AtomicU64,
}

/// The keys of the last good fetch.
#[derive(Default)]
struct KeySet {
    keys: HashMap<Box<str>, Arc<ParsedPublicKey>>,
    /// `kid`s earlier sets held and this one does not (rotated out or compromised), newest
    /// last: their tokens are refused at once.
    withdrawn: Vec<Box<str>>,
    /// When the fetch that got it started; `None` until a fetch succeeds.
    as_of: Option<AsOf>,
    /// Set once its expiry was logged.
    expiry_logged: AtomicBool,
}

/// The start of a fetch, on both clocks: the monotonic one for ages, the wall clock to
/// compare with a token's `iat`.
#[derive(Clone, Copy)]
struct AsOf {
    at: Instant,
    wall: SystemTime,
}

impl KeySet {
    /// True if the issuer's key set as of this fetch would hold the key of any token signed
    /// by `signed_by` (by this server's clock) that it still published.
    fn postdates(&self, signed_by: Option<SystemTime>) -> bool {
        self.as_of
            .zip(signed_by)
            .is_some_and(|(as_of, signed_by)| as_of.wall >= signed_by)
    }
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_failure: Option<Instant>,
    last_unknown_kid: Option<Instant>,
}

/// A key, and how much longer the set it came from may be trusted.
pub(crate) struct Key {
    pub(crate) key: Arc<ParsedPublicKey>,
    pub(crate) valid_for: Duration,
}

/// Why a fetch is made (the `cause` label of `wacht_jwks_fetches_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// No key set yet.
    Initial,
    /// The set is older than the refresh interval.
    Stale,
    /// A token names a `kid` the set does not hold.
    UnknownKid,
    /// The verifier's background timer.
    Timer,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Cause::Initial => "initial",
            Cause::Stale => "stale",
            Cause::UnknownKid => "unknown_kid",
            Cause::Timer => "timer",
        }
    }
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    pub(crate) fn new(issuer: String, url: Url, client: reqwest::Client, policy: KeySetPolicy) -> Self {
        Jwks {
            issuer,
            url,
            client,
            keys: RwLock::default(),
            fetch: tokio::sync::Mutex::default(),
            policy,
            removals: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// True while another caller's fetch is in flight.
    fn fetching(&self) -> bool {
        self.fetch.try_lock().is_err()
    }

    /// The key `kid` names, for a token signed by `signed_by` (see
    /// [`Claims::signed_by`](super::claims::Claims::signed_by)). The set is refreshed first if
    /// it is missing, stale, or lacks `kid` without settling it (within the rate limits). A
    /// stale set that holds `kid` is used at once while another caller's fetch is in flight:
    /// an issuer that hangs holds up one verification, not every one (the fetch is bounded by
    /// the request timeout, and a key withdrawn from the JWKS stops verifying once it ends).
    /// Past `max_stale`, nothing waits on a fetch in flight: the answer is 503 at once.
    pub(crate) async fn key(&self, kid: &str, signed_by: Option<SystemTime>) -> Result<Key, JwtFailure> {
        let asked = Instant::now();
        let set = self.snapshot();
        if set.withdrawn.iter().any(|w| &**w == kid) {
            return Err(Refusal::UnknownKey.into());
        }
        match set.as_of {
            None => self.refresh(Cause::Initial).await,
            Some(as_of) => {
                let age = as_of.at.elapsed();
                let expired = age >= self.policy.max_stale;
                if expired && self.fetching() {
                    return Err(self.expired(&set));
                }
                let stale = age >= self.policy.refresh_every;
                match set.keys.get(kid) {
                    Some(key) if !stale || (!expired && self.fetching()) => {
                        return Ok(self.usable(key, as_of));
                    }
                    Some(_) => self.refresh(Cause::Stale).await,
                    // Fetched after the token was signed, and without its key.
                    None if !expired && set.postdates(signed_by) => return Err(Refusal::UnknownKey.into()),
                    None if stale => self.refresh(Cause::Stale).await,
                    None => self.refresh(Cause::UnknownKid).await,
                }
            }
        }
        let set = self.snapshot();
        let Some(as_of) = set.as_of else {
            return Err(Unavailable::NoKeySet.into());
        };
        if as_of.at.elapsed() >= self.policy.max_stale {
            return Err(self.expired(&set));
        }
        if let Some(key) = set.keys.get(kid) {
            return Ok(self.usable(key, as_of));
        }
        if set.postdates(signed_by) || as_of.at >= asked || set.withdrawn.iter().any(|w| &**w == kid) {
            return Err(Refusal::UnknownKey.into());
        }
        // No set fetched after the token was signed: its key may have been rotated in since.
        Err(Unavailable::KeyNotFetched {
            retry_after: self.unknown_kid_retry(),
        }
        .into())
    }

    fn usable(&self, key: &Arc<ParsedPublicKey>, as_of: AsOf) -> Key {
        Key {
            key: Arc::clone(key),
            valid_for: self.policy.max_stale.saturating_sub(as_of.at.elapsed()),
        }
    }

    /// The refusal for a set past `max_stale`, logged at error level once per set.
    fn expired(&self, set: &KeySet) -> JwtFailure {
        if !set.expiry_logged.swap(true, Ordering::AcqRel) {
            tracing::error!(
                issuer = %self.issuer,
                max_stale_s = self.policy.max_stale.as_secs(),
                "JWKS: no successful fetch within jwks_max_stale; every JWT of this issuer gets 503 until one succeeds"
            );
        }
        Unavailable::KeySetExpired.into()
    }

    /// When an unknown `kid` may cause a fetch again.
    fn unknown_kid_retry(&self) -> Option<Duration> {
        let state = self.fetch.try_lock().ok()?;
        let next = state.last_unknown_kid? + self.policy.unknown_kid_every;
        Some(next.saturating_duration_since(Instant::now()).max(MIN_RETRY_AFTER))
    }

    /// True if a key set was ever loaded.
    pub(crate) fn is_loaded(&self) -> bool {
        self.snapshot().as_of.is_some()
    }

    /// When the timer should look at this issuer next: when its set reaches the refresh
    /// interval, or after a failed fetch, when the retry pace allows another. `None` until a
    /// set is loaded.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let as_of = self.snapshot().as_of?;
        let due = as_of.at + self.policy.refresh_every;
        let Ok(state) = self.fetch.try_lock() else {
            // A fetch is in flight: the timer waits for it, then looks again.
            return Some(Instant::now());
        };
        let retry = state.last_failure.map(|at| at + self.retry_pace());
        Some(retry.map_or(due, |retry| due.max(retry)))
    }

    /// While the JWKS fails, a loaded set is kept and fetches are retried at this pace.
    fn retry_pace(&self) -> Duration {
        self.policy.refresh_every.min(self.policy.unknown_kid_every)
    }

    /// One fetch at most, whoever asks at once: callers that waited for a fetch in flight use
    /// its result. Failures keep the current set.
    pub(crate) async fn refresh(&self, cause: Cause) {
        let asked = Instant::now();
        let mut state = self.fetch.lock().await;
        if state.last_attempt.is_some_and(|at| at >= asked) {
            // A fetch ran while this caller waited: use it.
            return;
        }
        let now = Instant::now();
        let recent = |at: Option<Instant>, floor: Duration| at.is_some_and(|at| now.duration_since(at) < floor);
        let fetched_at = self.snapshot().as_of.map(|as_of| as_of.at);
        let retry = self.retry_pace();
        let skip = match cause {
            Cause::Initial => fetched_at.is_some() || recent(state.last_failure, INITIAL_RETRY),
            Cause::Stale | Cause::Timer => {
                recent(fetched_at, self.policy.refresh_every) || recent(state.last_failure, retry)
            }
            // Made-up kids cannot make this issuer fetch more than once per interval.
            Cause::UnknownKid => recent(state.last_unknown_kid, self.policy.unknown_kid_every),
        };
        if skip {
            return;
        }
        if cause == Cause::UnknownKid {
            state.last_unknown_kid = Some(now);
        }
        state.last_attempt = Some(now);
        let as_of = AsOf {
            at: now,
            wall: SystemTime::now(),
        };
        match self.download().await {
            Ok(keys) => {
                state.last_failure = None;
                self.replace(keys, as_of, cause);
                telemetry::jwks_fetch("ok", cause.label());
            }
            Err(error) => {
                state.last_failure = Some(Instant::now());
                let set = self.snapshot();
                if set
                    .as_of
                    .is_some_and(|as_of| as_of.at.elapsed() >= self.policy.max_stale)
                {
                    set.expiry_logged.store(true, Ordering::Release);
                    tracing::error!(issuer = %self.issuer, error = %error, cause = cause.label(), "JWKS fetch failed and the key set is past jwks_max_stale: every JWT of this issuer gets 503");
                } else {
                    tracing::warn!(issuer = %self.issuer, error = %error, cause = cause.label(), "JWKS fetch failed; keeping the last good key set");
                }
                telemetry::jwks_fetch("error", cause.label());
            }
        }
    }

    /// Installs a fetched key set, remembering which `kid`s it withdrew.
    fn replace(&self, keys: HashMap<Box<str>, Arc<ParsedPublicKey>>, as_of: AsOf, cause: Cause) {
        let previous = self.snapshot();
        let removed: Vec<&str> = previous
            .keys
            .keys()
            .filter(|kid| !keys.contains_key(*kid))
            .map(|kid| &**kid)
            .collect();
        if !removed.is_empty() {
            tracing::warn!(issuer = %self.issuer, removed = ?removed, "JWKS: keys withdrawn (rotated out or compromised); tokens they signed are refused from now on");
        }
        let mut withdrawn: Vec<Box<str>> = previous
            .withdrawn
            .iter()
            .map(|kid| &**kid)
            .chain(removed.iter().copied())
            .filter(|kid| !keys.contains_key(*kid))
            .map(Box::from)
            .collect();
        let dropped = withdrawn.len().saturating_sub(MAX_WITHDRAWN);
        withdrawn.drain(..dropped);
        let count = keys.len();
        let any_removed = !removed.is_empty();
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(KeySet {
            keys,
            withdrawn,
            as_of: Some(as_of),
            expiry_logged: AtomicBool::new(false),
        });
        if any_removed {
            self.removals.fetch_add(1, Ordering::AcqRel);
        }
        tracing::debug!(issuer = %self.issuer, keys = count, cause = cause.label(), "JWKS fetched");
    }

    async fn download(&self) -> Result<HashMap<Box<str>, Arc<ParsedPublicKey>>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("body: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("body larger than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_key_set(&body, &self.issuer)
    }
}

/// The usable keys of a JWKS document: RSA signature keys of 2048 to 8192 bits for RS256.
/// Other keys are skipped (and logged); a document that is not a JWKS is an error.
pub(crate) fn parse_key_set(body: &[u8], issuer: &str) -> Result<HashMap<Box<str>, Arc<ParsedPublicKey>>, String> {
    let Some(Value::Object(doc)) = parse_strict(body) else {
        return Err("not a JSON object".into());
    };
    let Some(Value::Array(entries)) = doc.get("keys") else {
        return Err("no `keys` array".into());
    };
    let mut keys = HashMap::new();
    for entry in entries.iter().take(MAX_KEYS) {
        match parse_key(entry) {
            Ok((kid, key)) => {
                if keys.contains_key(kid) {
                    tracing::warn!(issuer, kid, "JWKS: a kid appears twice; the first key is used");
                    continue;
                }
                keys.insert(kid.into(), Arc::new(key));
            }
            Err((kid, why)) => tracing::warn!(issuer, kid, why, "JWKS: key skipped"),
        }
    }
    if entries.len() > MAX_KEYS {
        tracing::warn!(
            issuer,
            count = entries.len(),
            "JWKS: only the first {MAX_KEYS} keys are used"
        );
    }
    Ok(keys)
}

fn parse_key(entry: &Value) -> Result<(&str, ParsedPublicKey), (&str, &'static str)> {
    let field = |name: &str| entry.get(name).and_then(Value::as_str);
    let kid = field("kid").unwrap_or("");
    if kid.is_empty() || kid.len() > jose::MAX_KID {
        return Err((kid, "no usable kid"));
    }
    if field("kty") != Some("RSA") {
        return Err((kid, "not an RSA key"));
    }
    if entry.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return Err((kid, "not a signature key"));
    }
    if entry.get("alg").is_some_and(|a| a.as_str() != Some("RS256")) {
        return Err((kid, "not an RS256 key"));
    }
    let decode = |name: &str| field(name).and_then(|v| jose::decode(v).ok());
    let (Some(n), Some(e)) = (decode("n"), decode("e")) else {
        return Err((kid, "n or e missing or not base64url"));
    };
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    if n.len() < MIN_MODULUS_BYTES {
        return Err((kid, "RSA modulus below 2048 bits"));
    }
    if n.len() > MAX_MODULUS_BYTES || e.is_empty() || e.len() > 4 {
        return Err((kid, "RSA key size or exponent out of range"));
    }
    let key = RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|_| (kid, "not a valid RSA public key"))?;
    Ok((kid, key))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}
