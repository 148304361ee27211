//! [`Ticket`]: what a streamed response needs to ask the verifier, later and again, whether
//! the caller it was opened for still stands.
//!
//! A request's answer is decided once; a stream (SSE, a gRPC server stream) keeps answering
//! long after. The ticket holds the token's cache key and the invalidation generation the
//! request began at, so the same generation records that void cached answers
//! ([`Generations`](crate::cache::Generations)) also void a stream's: an invalidation of the
//! token, its client, its JWT session or token id, or of everything, made here or applied from
//! another replica of the fleet after the request began, ends the stream. The deny lists are
//! asked too. Nothing here calls the gateway or holds the token.

use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use super::Verifier;
use crate::principal::Principal;
use crate::reject::InvalidTokenReason;
use crate::telemetry;
use crate::token::TokenHash;

/// The verifier of every layer, by its id, for the responses that turn out to need theirs
/// (see [`StreamPass`]). Dead ones are dropped as layers are built.
static LAYERS: RwLock<Vec<(u64, Weak<Verifier>)>> = RwLock::new(Vec::new());

/// Makes `verifier` findable by the responses of a layer built on it.
pub(crate) fn register(verifier: &Arc<Verifier>) {
    let mut layers = LAYERS.write().unwrap_or_else(PoisonError::into_inner);
    layers.retain(|(_, known)| known.strong_count() > 0);
    let id = verifier.cache.id();
    if !layers.iter().any(|(known, _)| *known == id) {
        layers.push((id, Arc::downgrade(verifier)));
    }
}

/// What a request keeps for its response, in case the response is a stream (or a miss's
/// 429 reports its budget): the verifier's id, the token's cache key and the generation the
/// request began at. Plain data: a hit takes no reference to its verifier, whose count every
/// hit on every thread would otherwise write (measured in `benches/contention.rs`). The few
/// responses that need the verifier find it by id ([`ticket`](Self::ticket)).
#[derive(Clone, Copy)]
pub(crate) struct StreamPass {
    verifier: u64,
    hash: TokenHash,
    stamp: u64,
}

impl StreamPass {
    /// A pass for the token with this cache key, whose principal stood at generation `stamp`.
    pub(crate) fn new(verifier: &Verifier, hash: TokenHash, stamp: u64) -> Self {
        StreamPass {
            verifier: verifier.cache.id(),
            hash,
            stamp,
        }
    }

    /// The ticket a streamed response asks with; `None` once no layer holds the verifier
    /// any more (the server is shutting down: the stream is ended).
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        let layers = LAYERS.read().unwrap_or_else(PoisonError::into_inner);
        let verifier = layers.iter().find(|(id, _)| *id == self.verifier)?.1.upgrade()?;
        Some(Ticket {
            verifier,
            hash: self.hash,
            stamp: self.stamp,
        })
    }

    /// The rate-limit budget of `req`'s route for this token now (a 429 from the miss path
    /// reports it).
    pub(crate) fn rate_usage<B>(&self, req: &http::Request<B>) -> Option<crate::rate_limit::Usage> {
        self.ticket()?.verifier.usage_on(&self.hash, req)
    }
}

/// What a streamed response needs to ask whether its caller still stands (see the module
/// docs).
pub(crate) struct Ticket {
    verifier: Arc<Verifier>,
    hash: TokenHash,
    /// The generation the caller was last known to stand at.
    stamp: u64,
}

impl Ticket {
    /// A ticket for the token with this cache key, whose principal stood at generation `stamp`.
    #[cfg(test)]
    pub(crate) fn new(verifier: &Arc<Verifier>, hash: TokenHash, stamp: u64) -> Self {
        Ticket {
            verifier: Arc::clone(verifier),
            hash,
            stamp,
        }
    }

    /// How often a streamed response asks (`stream_recheck`).
    pub(crate) fn recheck_every(&self) -> Duration {
        self.verifier.cache.stream_recheck()
    }

    /// `Ok` while `principal` may go on being served; why not, once it may not (logged and
    /// counted). `expired`: the token's `expires_at` has passed by the stream's clock.
    pub(crate) fn check(&mut self, principal: &Principal, expired: bool) -> Result<(), InvalidTokenReason> {
        let verdict = if expired {
            Err(InvalidTokenReason::Expired)
        } else {
            self.stands(principal)
        };
        if let Err(reason) = verdict {
            let label = match reason {
                InvalidTokenReason::Expired => "expired",
                InvalidTokenReason::DeniedClient => "denied_client",
                InvalidTokenReason::Revoked => "revoked",
                _ => "invalidated",
            };
            tracing::info!(
                client_id = principal.client_id().as_str(),
                reason = label,
                "a streamed response was ended: its caller no longer stands"
            );
            telemetry::stream_ended(label);
        }
        verdict
    }

    fn stands(&mut self, principal: &Principal) -> Result<(), InvalidTokenReason> {
        let verifier = &self.verifier;
        // Read first: whatever is recorded after this read is seen by the next check.
        let current = verifier.cache.stamp();
        if current == self.stamp {
            // Nothing was invalidated or denied since the last check.
            return Ok(());
        }
        if verifier.is_denied(principal.client_id().as_str()) {
            return Err(InvalidTokenReason::DeniedClient);
        }
        if verifier.revoked.covers_principal(principal) {
            return Err(InvalidTokenReason::Revoked);
        }
        if !verifier.cache.still_current(&self.hash, principal, self.stamp) {
            return Err(InvalidTokenReason::Rejected);
        }
        self.stamp = current;
        Ok(())
    }
}

impl super::Miss {
    /// The pass of the response this miss's request opens.
    pub(crate) fn pass(&self) -> StreamPass {
        StreamPass::new(&self.verifier, self.hash, self.stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WachtAuthConfig;
    use crate::change::ChangeOutcome;
    use crate::gateway::{CheckRequest, Decision, Gateway, GatewayError};
    use crate::principal::Grant;
    use futures_util::future::BoxFuture;
    use std::time::SystemTime;

    /// Allows every token: `oat_<client>` for client `oc_<client>`, in session `sid_<client>`.
    struct AllowAll;

    impl Gateway for AllowAll {
        fn check<'a>(&'a self, request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
            let name = request.token.expose().trim_start_matches("oat_").to_owned();
            Box::pin(async move {
                let mut grant = Grant::new(format!("oc_{name}"), SystemTime::now() + Duration::from_secs(3600));
                grant.session_id = Some(format!("sid_{name}").into());
                Ok(Decision::Allowed(Box::new(grant)))
            })
        }
    }

    fn verifier() -> Arc<Verifier> {
        let config = WachtAuthConfig::builder()
            .accept_any_deployment()
            .stream_recheck(Duration::from_millis(250))
            .build()
            .unwrap();
        Arc::new(Verifier::with_gateway(&config, AllowAll).unwrap())
    }

    /// A stream of `token` opened now: its principal and ticket.
    async fn open(verifier: &Arc<Verifier>, token: &str) -> (Principal, Ticket) {
        let stamp = verifier.cache.stamp();
        let principal = verifier.verify(token).await.unwrap();
        (principal, Ticket::new(verifier, verifier.hash_token(token), stamp))
    }

    #[tokio::test]
    async fn a_stream_ends_on_what_covers_it_and_only_on_that() {
        let verifier = verifier();
        let (a, mut ticket) = open(&verifier, "oat_a").await;
        assert_eq!(ticket.recheck_every(), Duration::from_millis(250));
        assert_eq!(ticket.check(&a, false), Ok(()));
        assert_eq!(ticket.check(&a, true), Err(InvalidTokenReason::Expired));

        // Changes that cover someone else leave it standing, however many.
        verifier.invalidate("oat_b").await;
        verifier.invalidate_client("oc_b").await;
        verifier.deny_client("oc_b").await;
        assert_eq!(verifier.deny_session("sid_b").await, ChangeOutcome::Applied);
        assert_eq!(verifier.deny_token_id("jti_b").await, ChangeOutcome::Applied);
        assert_eq!(ticket.check(&a, false), Ok(()));
        assert_eq!(ticket.stamp, verifier.cache.stamp(), "the ticket moves on");

        verifier.invalidate("oat_a").await;
        assert_eq!(ticket.check(&a, false), Err(InvalidTokenReason::Rejected));

        for (token, end, reason) in [
            ("oat_c", "invalidate_client", InvalidTokenReason::Rejected),
            ("oat_d", "deny_client", InvalidTokenReason::DeniedClient),
            ("oat_e", "deny_session", InvalidTokenReason::Revoked),
            ("oat_f", "invalidate_all", InvalidTokenReason::Rejected),
        ] {
            let (principal, mut ticket) = open(&verifier, token).await;
            let client = principal.client_id().as_str().to_owned();
            let outcome = match end {
                "invalidate_client" => verifier.invalidate_client(&client).await,
                "deny_client" => verifier.deny_client(&client).await,
                "deny_session" => verifier.deny_session(principal.session_id().unwrap()).await,
                _ => verifier.invalidate_all().await,
            };
            assert_eq!(outcome, ChangeOutcome::Applied, "{end}");
            assert_eq!(ticket.check(&principal, false), Err(reason), "{end}");
        }
    }

    #[tokio::test]
    async fn an_invalidation_while_the_request_was_served_ends_its_stream() {
        let verifier = verifier();
        // The request began (stamp), then the token was invalidated before its stream's
        // first check: the principal the request got may predate the revocation.
        let stamp = verifier.cache.stamp();
        let principal = verifier.verify("oat_a").await.unwrap();
        verifier.invalidate("oat_a").await;
        let mut ticket = Ticket::new(&verifier, verifier.hash_token("oat_a"), stamp);
        assert_eq!(ticket.check(&principal, false), Err(InvalidTokenReason::Rejected));
    }
}
