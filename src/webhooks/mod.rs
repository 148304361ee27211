//! [`WachtWebhooks`]: a receiver for Wacht's webhooks that ends cached access when Wacht ends
//! it: a deleted or expired session, a deleted user (or a changed password, a second factor
//! removed), a deleted or rotated API key, a deleted organization or workspace.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use tower_wacht::{Principal, WachtAuthConfig, WachtAuthLayer, WachtWebhooks};
//!
//! let auth = WachtAuthLayer::new(WachtAuthConfig::from_env()?)?;
//! // The app's signing secret (two while rotating it: both are accepted).
//! let webhooks = WachtWebhooks::new(&auth, [std::env::var("WACHT_WEBHOOK_SECRET")?])?;
//! let app: Router = Router::new()
//!     .route("/whoami", get(|p: Principal| async move { p.client_id().to_string() }))
//!     .layer(auth)
//!     // Outside the auth layer: Wacht signs its deliveries, it sends no token.
//!     .merge(webhooks.router("/webhooks/wacht"));
//! # Ok(()) }
//! ```
//!
//! A delivery is acted on only if it is signed as [Standard Webhooks](https://www.standardwebhooks.com)
//! says (Wacht's scheme): `webhook-id`, `webhook-timestamp` and `webhook-signature` (space-
//! separated `v1,<base64>`; one match against any configured secret suffices), HMAC-SHA256
//! over `{id}.{timestamp}.{raw body}`, compared in constant time; a timestamp within
//! [`tolerance`](WachtWebhooks::tolerance) of now (5 minutes either side); a body of at most
//! [`max_body_bytes`](WachtWebhooks::max_body_bytes) (1 MiB).
//!
//! | event | action |
//! | --- | --- |
//! | `session.deleted`, `session.expired` | the session's JWTs (`sid` = `data.entity_id`) are refused, for as long as one already minted can be accepted (24 h plus twice the leeway): Wacht mints no more for it |
//! | `user.deleted`, `user.password.updated`, `user.mfa.disabled` | [`invalidate_user`](crate::Verifier::invalidate_user) (`data.entity_id`; `data.user_id` too for `user.mfa.disabled`) |
//! | `api_key.deleted`, `api_key.rotated` | [`invalidate_api_key`](crate::Verifier::invalidate_api_key) (`data.entity_id`) |
//! | `organization.deleted` / `workspace.deleted` | [`invalidate_organization`](crate::Verifier::invalidate_organization) / [`invalidate_workspace`](crate::Verifier::invalidate_workspace) (`data.entity_id`) |
//! | `organization.member.removed`, `organization.member.role.updated`, `workspace.member.removed`, `workspace.member.role.updated` | the API keys of that membership (`data.entity_id`) are asked again; OAuth access tokens carry no membership id in the gateway's answers, so theirs change within `ttl` |
//! | any other event | acknowledged, counted (`event="unknown"`) and logged at debug level |
//!
//! What is answered, so that Wacht's at-least-once delivery does the rest:
//!
//! | answer | when |
//! | --- | --- |
//! | 200 | acted on and settled ([`ChangeOutcome::Applied`], or in fleet mode [`ChangeOutcome::Durable`]: every replica has it or will read it); a known `webhook-id` handled within twice the tolerance (acknowledged, not acted on again); an event with no action |
//! | 503 + `Retry-After` | the change is in force here but the fleet has not taken it ([`ChangeOutcome::Queued`], after waiting up to 2 s) or refused it ([`ChangeOutcome::Refused`]): Wacht delivers it again (the same `webhook-id`, acted on again) |
//! | 400 | a `webhook-*` header missing, repeated or not of its form; a signed body that is not a Wacht event, or a known event without the id it needs |
//! | 401 | no signature verifies with any configured secret; the timestamp is outside the tolerance |
//! | 405 / 413 | not a `POST` / a body over the bound |
//!
//! Nothing about a delivery (its body, its signatures, the secret) is logged, put in an error
//! or in a metric label; a refusal says only which rule it broke.

mod events;
mod seen;
mod signature;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};

use self::events::{Action, Unreadable};
use self::seen::Seen;
use self::signature::{HeaderProblem, Secret};
use crate::change::ChangeOutcome;
use crate::error::ConfigError;
use crate::layer::WachtAuthLayer;
use crate::telemetry;
use crate::verify::Verifier;

/// How far a delivery's timestamp may be from now, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The largest body taken, by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The answer of [`WachtWebhooks`].
pub type WebhookResponse = Response<Full<Bytes>>;

/// The future of [`WachtWebhooks`] as a Tower service.
pub type WachtWebhooksFuture = BoxFuture<'static, Result<WebhookResponse, Infallible>>;

/// A receiver of Wacht's webhooks that applies them to a verifier's cache (see the module
/// docs for the events, the checks and the answers). A Tower service (`POST` with the raw
/// body), and with the `axum` feature a [`router`](Self::router). Clones share one verifier
/// and one memory of handled deliveries.
#[derive(Clone)]
pub struct WachtWebhooks {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Arc<Verifier>,
    secrets: Vec<Secret>,
    tolerance: Duration,
    max_body: usize,
    seen: Seen,
}

impl std::fmt::Debug for WachtWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WachtWebhooks")
            .field("secrets", &self.inner.secrets.len())
            .field("tolerance", &self.inner.tolerance)
            .field("max_body_bytes", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

impl WachtWebhooks {
    /// A receiver acting on `auth`'s verifier (every clone of the layer shares it), accepting
    /// deliveries signed with any of `secrets`: the app's signing secret (`whsec_...`), or
    /// two while it is rotated. Refuses no secret at all, and a secret that is not
    /// `whsec_` (optional) followed by base64 of at least 16 bytes; the error never repeats
    /// a secret.
    pub fn new<I, S>(auth: &WachtAuthLayer, secrets: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let secrets = secrets
            .into_iter()
            .map(|s| Secret::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err(ConfigError::invalid(
                "webhook secret",
                "at least one signing secret is needed",
            ));
        }
        Ok(WachtWebhooks {
            inner: Arc::new(Inner {
                verifier: auth.shared_verifier(),
                secrets,
                tolerance: DEFAULT_TOLERANCE,
                max_body: DEFAULT_MAX_BODY_BYTES,
                seen: Seen::new(keep_for(DEFAULT_TOLERANCE), seen::MAX_SEEN),
            }),
        })
    }

    /// How far a delivery's `webhook-timestamp` may be from now, either way (default 5
    /// minutes): an older or later one is refused (401), so a captured delivery cannot be
    /// replayed later. Handled ids are remembered for twice as long.
    pub fn tolerance(self, tolerance: Duration) -> Self {
        self.rebuild(|inner| {
            inner.tolerance = tolerance;
            inner.seen = Seen::new(keep_for(tolerance), seen::MAX_SEEN);
        })
    }

    /// The largest body taken (default 1 MiB): a larger one is refused with 413 before it is
    /// read whole.
    pub fn max_body_bytes(self, max: usize) -> Self {
        self.rebuild(|inner| inner.max_body = max)
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            verifier: Arc::clone(&shared.verifier),
            secrets: shared.secrets.clone(),
            tolerance: shared.tolerance,
            max_body: shared.max_body,
            seen: Seen::new(keep_for(shared.tolerance), seen::MAX_SEEN),
        });
        let mut inner = inner;
        change(&mut inner);
        WachtWebhooks { inner: Arc::new(inner) }
    }

    /// An Axum router answering `POST path` with this receiver. Merge it outside the auth
    /// layer (Wacht sends no token): `app.layer(auth).merge(webhooks.router("/webhooks/wacht"))`.
    #[cfg(feature = "axum")]
    pub fn router<S: Clone + Send + Sync + 'static>(&self, path: &str) -> axum::Router<S> {
        axum::Router::new().route_service(path, self.clone())
    }

    /// Handles one delivery: its method, headers and raw body (for servers that are not
    /// Tower services). The answer's status is what Wacht must be told.
    pub async fn handle(&self, method: &Method, headers: &HeaderMap, body: &[u8]) -> WebhookResponse {
        if method != Method::POST {
            return refuse_method();
        }
        if body.len() > self.inner.max_body {
            return self.refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the body is too large");
        }
        self.deliver(headers, body).await
    }

    async fn deliver(&self, headers: &HeaderMap, body: &[u8]) -> WebhookResponse {
        let inner = &self.inner;
        let signed = match signature::read_headers(headers) {
            Ok(signed) => signed,
            Err(HeaderProblem::Malformed(header)) => {
                return self.refused(StatusCode::BAD_REQUEST, "malformed", header_message(header));
            }
            Err(HeaderProblem::NoSignature) => {
                return self.refused(StatusCode::UNAUTHORIZED, "bad_signature", "no v1 signature");
            }
        };
        let now = unix_seconds(SystemTime::now());
        let tolerance = inner.tolerance.as_secs();
        let sent = signed.timestamp.1;
        if sent.saturating_add(tolerance) < now || sent > now.saturating_add(tolerance) {
            return self.refused(
                StatusCode::UNAUTHORIZED,
                "stale",
                "webhook-timestamp is outside the tolerance",
            );
        }
        if !signature::verifies(&inner.secrets, &signed, body) {
            return self.refused(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the signature does not verify",
            );
        }
        // Signed by Wacht from here on.
        let (event, unknown) = match events::read(body) {
            Ok(read) => read,
            Err(why) => {
                let message = match why {
                    Unreadable::NotAnEvent => "the body is not a Wacht event",
                    Unreadable::MissingId => "the event lacks the id its action needs",
                };
                tracing::warn!(
                    reason = message,
                    "Wacht webhook: a signed delivery could not be acted on"
                );
                return self.refused(StatusCode::BAD_REQUEST, "malformed", message);
            }
        };
        let started = Instant::now();
        if inner.seen.contains(signed.id, started) {
            telemetry::webhook(event.label, "duplicate");
            return answer(StatusCode::OK, "");
        }
        if let Some(name) = unknown {
            tracing::debug!(
                event = %printable(&name),
                "Wacht webhook: an event this receiver does not act on; acknowledged"
            );
        }
        let outcome = match &event.action {
            Action::Nothing => ChangeOutcome::Unchanged,
            Action::EndSession(session) => inner.verifier.deny_ended_session(session).await,
            Action::Invalidate(targets) => {
                // The first outcome that is not settled, else the last one.
                let mut outcome = ChangeOutcome::Unchanged;
                for target in targets {
                    let next = inner.verifier.invalidate_target(*target).await;
                    if outcome.is_settled() {
                        outcome = next;
                    }
                }
                outcome
            }
        };
        if !outcome.is_settled() {
            tracing::warn!(
                event = event.label,
                %outcome,
                "Wacht webhook: in force here, not settled for the fleet; answering 503 so that Wacht delivers it again"
            );
            telemetry::webhook(event.label, "unsettled");
            let mut response = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "not settled for the fleet; deliver again",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
        inner.seen.insert(signed.id, Instant::now());
        let result = match (&event.action, event.label) {
            (_, "unknown") => "unknown",
            (Action::Nothing, _) => "ignored",
            _ => "acted",
        };
        telemetry::webhook(event.label, result);
        answer(StatusCode::OK, "")
    }

    /// A refusal before the event is read: counted, logged at debug level (the reason only).
    fn refused(&self, status: StatusCode, result: &'static str, message: &'static str) -> WebhookResponse {
        tracing::debug!(status = status.as_u16(), reason = message, "Wacht webhook refused");
        telemetry::webhook("none", result);
        answer(status, message)
    }
}

impl<B> tower_service::Service<Request<B>> for WachtWebhooks
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = WebhookResponse;
    type Error = Infallible;
    type Future = WachtWebhooksFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            if parts.method != Method::POST {
                return Ok(refuse_method());
            }
            let max = this.inner.max_body;
            let declared = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max as u64) {
                return Ok(this.refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the body is too large"));
            }
            let body = match Limited::new(body, max).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<LengthLimitError>() => {
                    return Ok(this.refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the body is too large"));
                }
                Err(_) => {
                    return Ok(this.refused(StatusCode::BAD_REQUEST, "malformed", "the body could not be read"));
                }
            };
            Ok(this.deliver(&parts.headers, &body).await)
        })
    }
}

/// Handled ids are kept as long as a replay of them could still pass the timestamp check:
/// twice the tolerance (a timestamp up to `tolerance` ahead is taken for up to `2 × tolerance`).
fn keep_for(tolerance: Duration) -> Duration {
    tolerance.saturating_mul(2).max(Duration::from_secs(60))
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn header_message(header: &'static str) -> &'static str {
    match header {
        "webhook-id" => "webhook-id is missing, repeated or not of its form",
        "webhook-timestamp" => "webhook-timestamp is missing, repeated or not Unix seconds",
        _ => "webhook-signature is missing, repeated or not a list of signatures",
    }
}

/// An event name for a log line: printable ASCII, at most 64 characters.
fn printable(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn refuse_method() -> WebhookResponse {
    telemetry::webhook("none", "method");
    let mut response = answer(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
    response
}

fn answer(status: StatusCode, message: &'static str) -> WebhookResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !message.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    response
}

/// Fuzz entry point: the `v1` signatures `webhook-signature` names (see the `webhook_signature`
/// fuzz target), `None` when the header is refused.
#[doc(hidden)]
pub fn parse_signature_header(value: &[u8]) -> Option<Vec<[u8; 32]>> {
    signature::parse_signature_header(value)
}
