//! [`JwksIssuer`]: a double of a Wacht OAuth app issuing JWT access tokens, for tests of
//! services that accept them ([`jwt`](crate::jwt)).
//!
//! It serves the app's JWKS at `<url>/.well-known/jwks.json` from `127.0.0.1` exactly as Wacht
//! does (RSA-2048 keys, `kid`, `use`, `alg`, no cache headers), and mints tokens shaped like
//! Wacht's: header `{"typ":"JWT","alg":"RS256","kid":…}`, the claims of
//! [`AccessTokenClaims`], `iss` = [`JwksIssuer::url`]. Keys rotate (the retired key stays
//! published) and can be compromised (withdrawn at once), as on the platform; the JWKS can be
//! made unavailable (503), answer 404 as for a deactivated app, or hang, and fetches are
//! counted.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tower_wacht::testing::{AccessTokenClaims, JwksIssuer};
//!
//! let issuer = JwksIssuer::start().await?;
//! let token = issuer.mint(&AccessTokenClaims::new("oc_demo").scopes(["projects:read"]));
//! // Configure the service with `expected_issuer(issuer.url())` and `jwt(JwtConfig::new())`.
//! # Ok(()) }
//! ```

mod keys;
mod server;

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use self::keys::SigningKey;
use super::ids::generate_decimal_id;
use super::loopback::Running;
use super::model::EXAMPLE_OWNER_USER_ID;

/// The tenant a minted token is granted for unless told otherwise.
pub const DEFAULT_JWT_AUDIENCE: &str = "urn:wacht:organization:427001234567890561";

/// A running JWKS issuer double on `127.0.0.1`. Cheap to clone; the server stops when the
/// last handle is dropped or [`shutdown`](Self::shutdown) is called.
#[derive(Clone)]
pub struct JwksIssuer {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<Mutex<IssuerState>>,
    /// While true, JWKS requests are held without an answer.
    hanging: tokio::sync::watch::Sender<bool>,
    server: Running,
}

/// The keys and switches, shared with the server task.
#[derive(Default)]
pub(crate) struct IssuerState {
    /// Published keys, newest first (as Wacht lists them); the first is the active one.
    published: Vec<Arc<SigningKey>>,
    /// Every key ever made, published or not (compromised keys can still sign, for tests).
    all: Vec<Arc<SigningKey>>,
    /// Extra JWKS entries published verbatim.
    extra: Vec<Value>,
    unavailable: bool,
    deactivated: bool,
    fetches: usize,
    next_key: u64,
    /// The OAuth app id in this issuer's `kid`s (random, so two issuers never share a kid).
    app_id: String,
}

/// What one JWKS request is answered.
pub(crate) enum JwksAnswer {
    /// The document.
    Keys(Value),
    /// 503.
    Unavailable,
    /// 404 with a JSON error body, as Wacht answers for an unknown or deactivated app.
    Deactivated,
}

impl IssuerState {
    /// The answer to a JWKS request. Counts the fetch.
    pub(crate) fn fetch(&mut self) -> JwksAnswer {
        self.fetches += 1;
        if self.deactivated {
            return JwksAnswer::Deactivated;
        }
        if self.unavailable {
            return JwksAnswer::Unavailable;
        }
        let keys: Vec<Value> = self
            .published
            .iter()
            .map(|k| k.jwk())
            .chain(self.extra.iter().cloned())
            .collect();
        JwksAnswer::Keys(json!({ "keys": keys }))
    }

    fn new_key(&mut self) -> io::Result<Arc<SigningKey>> {
        self.next_key += 1;
        let kid = format!("oas-{}-{}", self.app_id, 593_800_112_233_445_000 + self.next_key);
        let key = Arc::new(SigningKey::generate(kid).ok_or_else(|| io::Error::other("RSA key generation failed"))?);
        self.all.push(Arc::clone(&key));
        self.published.insert(0, Arc::clone(&key));
        Ok(key)
    }
}

impl fmt::Debug for JwksIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksIssuer")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl JwksIssuer {
    /// Binds `127.0.0.1:0`, makes one active RSA-2048 key and serves the JWKS on the current
    /// Tokio runtime.
    ///
    /// # Errors
    ///
    /// The listener cannot be bound, or key generation failed.
    pub async fn start() -> io::Result<JwksIssuer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let mut state = IssuerState {
            app_id: generate_decimal_id(),
            ..IssuerState::default()
        };
        state.new_key()?;
        let state = Arc::new(Mutex::new(state));
        let keys = Arc::clone(&state);
        let (hanging, hang) = tokio::sync::watch::channel(false);
        let server = Running::spawn(listener, "jwks issuer", move |req| {
            let response = server::route(&keys, &req);
            let mut hang = hang.clone();
            async move {
                let _ = hang.wait_for(|hanging| !*hanging).await;
                Ok(response)
            }
        })?;
        Ok(JwksIssuer {
            inner: Arc::new(Inner { state, hanging, server }),
        })
    }

    fn state(&self) -> MutexGuard<'_, IssuerState> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The issuer, `http://127.0.0.1:PORT`: the `iss` of every minted token, and what to
    /// configure as `expected_issuer`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.server.addr())
    }

    /// `<url>/.well-known/jwks.json`.
    #[must_use]
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.url())
    }

    /// The `kid` of the active (signing) key.
    #[must_use]
    pub fn active_kid(&self) -> String {
        self.state()
            .published
            .first()
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// The `kid`s currently published, newest first.
    #[must_use]
    pub fn published_kids(&self) -> Vec<String> {
        self.state().published.iter().map(|k| k.kid.clone()).collect()
    }

    /// Rotates as Wacht does: a new key becomes active at once, the old one stays published
    /// (retired). Returns the new `kid`.
    ///
    /// # Errors
    ///
    /// Key generation failed.
    pub fn rotate(&self) -> io::Result<String> {
        Ok(self.state().new_key()?.kid.clone())
    }

    /// Marks a key compromised as Wacht does: it leaves the JWKS at once. If it was the
    /// active key, a new one is made. Tokens can still be minted with it
    /// ([`mint_with_key`](Self::mint_with_key)), to test that they are refused. False if no
    /// such key is published.
    pub fn compromise(&self, kid: &str) -> bool {
        let mut state = self.state();
        let before = state.published.len();
        let was_active = state.published.first().is_some_and(|k| k.kid == kid);
        state.published.retain(|k| k.kid != kid);
        if was_active && state.new_key().is_err() {
            tracing::warn!("jwks issuer: no new key after compromising the active one");
        }
        state.published.len() < before || was_active
    }

    /// Publishes an extra JWKS entry verbatim (a foreign, weak or malformed key).
    pub fn publish_jwk(&self, jwk: Value) {
        self.state().extra.push(jwk);
    }

    /// While false, the JWKS answers `503`.
    pub fn set_available(&self, available: bool) {
        self.state().unavailable = !available;
    }

    /// While true, the JWKS answers `404` with a JSON error body, as Wacht does once the
    /// OAuth app is deactivated (or its host is unknown). Takes precedence over
    /// [`set_available`](Self::set_available).
    pub fn set_deactivated(&self, deactivated: bool) {
        self.state().deactivated = deactivated;
    }

    /// While true, JWKS requests get no answer (the connection stays open, as with an issuer
    /// that hangs); requests held are answered when it is set back to false. Takes
    /// precedence over the other switches; a held request counts as a fetch when it arrives.
    pub fn set_hanging(&self, hanging: bool) {
        self.inner.hanging.send_replace(hanging);
    }

    /// Number of JWKS requests served (any outcome).
    #[must_use]
    pub fn fetches(&self) -> usize {
        self.state().fetches
    }

    /// Resets [`fetches`](Self::fetches) to zero.
    pub fn reset_fetches(&self) {
        self.state().fetches = 0;
    }

    /// An access token with these claims, signed by the active key.
    #[must_use]
    pub fn mint(&self, claims: &AccessTokenClaims) -> String {
        self.mint_with_key(&self.active_kid(), claims).unwrap_or_default()
    }

    /// An access token signed by the key `kid` (published or not), or `None` if this issuer
    /// never had that key.
    #[must_use]
    pub fn mint_with_key(&self, kid: &str, claims: &AccessTokenClaims) -> Option<String> {
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": kid });
        self.sign_with_key(kid, &header, &claims.to_json(&self.url()))
    }

    /// An OpenID Connect id_token for `client_id`, signed by the active key as Wacht signs
    /// them: same key, `kid` and `iss`, `aud` = the client, no `token_use`. Never an access
    /// token.
    #[must_use]
    pub fn mint_id_token(&self, client_id: &str) -> String {
        let now = unix(SystemTime::now());
        let payload = json!({
            "iss": self.url(), "sub": EXAMPLE_OWNER_USER_ID.to_string(), "aud": client_id,
            "exp": now + 900, "iat": now, "auth_time": now, "at_hash": "x4Ih0s0fXVgbY3cXTo1hOw",
        });
        let kid = self.active_kid();
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": kid });
        self.sign_with_key(&kid, &header, &payload).unwrap_or_default()
    }

    /// A compact JWS of `header` and `payload`, both serialised as given, with an RS256
    /// signature by the key `kid`: for attack tests (a forbidden header member with a valid
    /// signature, claims Wacht never issues). `None` if this issuer never had that key.
    #[must_use]
    pub fn sign_with_key(&self, kid: &str, header: &Value, payload: &Value) -> Option<String> {
        let key = self.state().all.iter().find(|k| k.kid == kid).cloned()?;
        Some(key.sign(header, payload))
    }

    /// Stops the server (even if other handles exist).
    pub fn shutdown(&self) {
        self.inner.server.signal_stop();
    }
}

/// The claims of a Wacht JWT access token, built with chaining setters. `iss` is the
/// issuer's URL; everything else has a Wacht-shaped default: `sub` the example owner user,
/// `aud` [`DEFAULT_JWT_AUDIENCE`], no scopes, a one-hour lifetime from now, fresh `jti` and
/// `sid`, `token_use` `access_token`.
#[derive(Clone, Debug)]
pub struct AccessTokenClaims {
    client_id: String,
    subject: String,
    audience: String,
    scopes: Vec<String>,
    issued_at: SystemTime,
    ttl: Duration,
    session_id: Option<String>,
    token_id: String,
    overrides: Map<String, Value>,
    removed: Vec<String>,
}

impl AccessTokenClaims {
    /// Claims for a token of OAuth client `client_id`.
    #[must_use]
    pub fn new(client_id: impl Into<String>) -> Self {
        AccessTokenClaims {
            client_id: client_id.into(),
            subject: EXAMPLE_OWNER_USER_ID.to_string(),
            audience: DEFAULT_JWT_AUDIENCE.to_owned(),
            scopes: Vec::new(),
            issued_at: SystemTime::now(),
            ttl: Duration::from_secs(3600),
            session_id: Some(generate_decimal_id()),
            token_id: generate_decimal_id(),
            overrides: Map::new(),
            removed: Vec::new(),
        }
    }

    /// The granted scopes (`scope`, space-separated).
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The granted tenant URN (`aud`).
    #[must_use]
    pub fn audience(mut self, urn: impl Into<String>) -> Self {
        self.audience = urn.into();
        self
    }

    /// The end user (`sub`).
    #[must_use]
    pub fn subject(mut self, user_id: i64) -> Self {
        self.subject = user_id.to_string();
        self
    }

    /// Issued at `iat` (default now).
    #[must_use]
    pub fn issued_at(mut self, at: SystemTime) -> Self {
        self.issued_at = at;
        self
    }

    /// Lifetime: `exp = iat + ttl` (default one hour).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The Wacht session (`sid`); `None` omits the claim.
    #[must_use]
    pub fn session_id(mut self, sid: Option<String>) -> Self {
        self.session_id = sid;
        self
    }

    /// The token id (`jti`).
    #[must_use]
    pub fn token_id(mut self, jti: impl Into<String>) -> Self {
        self.token_id = jti.into();
        self
    }

    /// Sets any claim to any value (replacing the default one, `iss` included).
    #[must_use]
    pub fn claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.overrides.insert(name.into(), value);
        self
    }

    /// Leaves a claim out.
    #[must_use]
    pub fn without(mut self, name: impl Into<String>) -> Self {
        self.removed.push(name.into());
        self
    }

    /// The `jti` these claims carry.
    #[must_use]
    pub fn jti(&self) -> &str {
        &self.token_id
    }

    /// The `sid` these claims carry.
    #[must_use]
    pub fn sid(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The payload, in Wacht's member order, for issuer `iss`.
    #[must_use]
    pub fn to_json(&self, iss: &str) -> Value {
        let iat = unix(self.issued_at);
        let exp = iat + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let mut map = Map::new();
        map.insert("iss".into(), json!(iss));
        map.insert("sub".into(), json!(self.subject));
        map.insert("aud".into(), json!(self.audience));
        map.insert("exp".into(), json!(exp));
        map.insert("iat".into(), json!(iat));
        map.insert("jti".into(), json!(self.token_id));
        map.insert("client_id".into(), json!(self.client_id));
        map.insert("scope".into(), json!(self.scopes.join(" ")));
        if let Some(sid) = &self.session_id {
            map.insert("sid".into(), json!(sid));
        }
        map.insert("token_use".into(), json!("access_token"));
        for (name, value) in &self.overrides {
            map.insert(name.clone(), value.clone());
        }
        for name in &self.removed {
            map.remove(name);
        }
        Value::Object(map)
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX / 2),
    }
}
