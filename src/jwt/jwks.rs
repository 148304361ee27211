//! The JWKS of one trusted issuer: fetched from `<issuer>/.well-known/jwks.json` with the
//! gateway client's discipline (timeouts, no redirects, a size cap), kept by `kid`, and
//! refreshed single-flight: when it is older than the refresh interval (on the next
//! verification or by the verifier's timer), and on an unknown `kid` at most once per
//! `unknown_kid_refresh` however many made-up kids arrive. A failed fetch keeps the last good
//! set; with none, verification is unavailable (503, fail closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use reqwest::Url;
use serde_json::Value;

use super::{JwtFailure, Refusal, jose};
use crate::json::parse_strict;
use crate::telemetry;

/// Largest JWKS body read.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most keys taken from one JWKS (Wacht keeps retired keys published indefinitely).
const MAX_KEYS: usize = 128;
/// Smallest RSA modulus accepted: 2048 bits.
const MIN_MODULUS_BYTES: usize = 256;
/// Largest RSA modulus accepted: 8192 bits.
const MAX_MODULUS_BYTES: usize = 1024;
/// While no key set was ever loaded, fetches are retried at most this often.
const INITIAL_RETRY: Duration = Duration::from_secs(1);

/// One issuer's key set and how it is kept fresh.
pub(crate) struct Jwks {
    /// The issuer, exactly as its tokens' `iss` must read.
    pub(crate) issuer: String,
    url: Url,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    fetch: tokio::sync::Mutex<FetchState>,
    refresh_every: Duration,
    unknown_kid_every: Duration,
    /// Counts refreshes that removed a key (a compromise): the verifier then drops its
    /// cached decisions.
    pub(crate) removals: AtomicU64,
}

/// The keys of the last good fetch.
#[derive(Default)]
struct KeySet {
    keys: HashMap<Box<str>, Arc<ParsedPublicKey>>,
    /// `None` until a fetch succeeds.
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_failure: Option<Instant>,
    last_unknown_kid: Option<Instant>,
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
    pub(crate) fn new(
        issuer: String,
        url: Url,
        client: reqwest::Client,
        refresh_every: Duration,
        unknown_kid_every: Duration,
    ) -> Self {
        Jwks {
            issuer,
            url,
            client,
            keys: RwLock::default(),
            fetch: tokio::sync::Mutex::default(),
            refresh_every,
            unknown_kid_every,
            removals: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The key `kid` names, refreshing the set first if it is missing, stale, or does not
    /// hold `kid` (within the rate limit). A stale set that holds `kid` is used at once while
    /// another caller's fetch is in flight: an issuer that hangs holds up one verification,
    /// not every one (the fetch is bounded by the request timeout, and a key withdrawn from
    /// the JWKS stops verifying once it ends).
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<ParsedPublicKey>, JwtFailure> {
        let set = self.snapshot();
        match set.fetched_at {
            None => self.refresh(Cause::Initial).await,
            Some(at) if at.elapsed() >= self.refresh_every => match set.keys.get(kid) {
                Some(key) if self.fetch.try_lock().is_err() => return Ok(Arc::clone(key)),
                _ => self.refresh(Cause::Stale).await,
            },
            Some(_) => match set.keys.get(kid) {
                Some(key) => return Ok(Arc::clone(key)),
                None => self.refresh(Cause::UnknownKid).await,
            },
        }
        let set = self.snapshot();
        if set.fetched_at.is_none() {
            return Err(JwtFailure::Unavailable);
        }
        set.keys
            .get(kid)
            .cloned()
            .ok_or(JwtFailure::Refused(Refusal::UnknownKey))
    }

    /// True if a key set was ever loaded.
    pub(crate) fn is_loaded(&self) -> bool {
        self.snapshot().fetched_at.is_some()
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
        let fetched_at = self.snapshot().fetched_at;
        // While the JWKS fails, a loaded set is kept and fetches are retried at this pace.
        let retry = self.refresh_every.min(self.unknown_kid_every);
        let skip = match cause {
            Cause::Initial => fetched_at.is_some() || recent(state.last_failure, INITIAL_RETRY),
            Cause::Stale => recent(fetched_at, self.refresh_every) || recent(state.last_failure, retry),
            Cause::Timer => recent(fetched_at, self.refresh_every / 2) || recent(state.last_failure, retry),
            // Made-up kids cannot make this issuer fetch more than once per interval.
            Cause::UnknownKid => recent(state.last_unknown_kid, self.unknown_kid_every),
        };
        if skip {
            return;
        }
        if cause == Cause::UnknownKid {
            state.last_unknown_kid = Some(now);
        }
        state.last_attempt = Some(now);
        match self.download().await {
            Ok(keys) => {
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
                let count = keys.len();
                *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(KeySet {
                    keys,
                    fetched_at: Some(Instant::now()),
                });
                if !removed.is_empty() {
                    self.removals.fetch_add(1, Ordering::AcqRel);
                }
                tracing::debug!(issuer = %self.issuer, keys = count, cause = cause.label(), "JWKS fetched");
                telemetry::jwks_fetch("ok", cause.label());
            }
            Err(error) => {
                state.last_failure = Some(Instant::now());
                tracing::warn!(issuer = %self.issuer, error = %error, cause = cause.label(), "JWKS fetch failed; keeping the last good key set");
                telemetry::jwks_fetch("error", cause.label());
            }
        }
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
