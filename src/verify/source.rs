//! Where a verdict on an unseen token comes from: the Wacht gateway's authz check (behind the
//! fleet's shared tier when fleet mode is on) for opaque tokens, local signature and claim
//! checks for JWT access tokens. Either way the miss path, single flight and decision rules
//! are the same.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Verifier;
use super::miss::MissContext;
use crate::gateway::{CheckRequest, Decision, GatewayError};
use crate::jwt::{JwtFailure, Verified};
use crate::telemetry;
use crate::token::{BearerToken, TokenHash};

/// A verdict on a token, by source. Made and consumed once per miss, never stored: the
/// JWT's grant is not boxed.
#[allow(clippy::large_enum_variant)]
pub(super) enum Verdict {
    /// The gateway's decision, and the longest the local cache may keep it (a shared-tier
    /// copy has less time left).
    Gateway {
        decision: Result<Decision, GatewayError>,
        cap: Option<Duration>,
        /// False when the outage grace may not keep it past its cap (fleet mode, without
        /// the fleet).
        graceful: bool,
    },
    /// Local JWT verification.
    Jwt(Result<Verified, JwtFailure>),
}

impl Verifier {
    /// The verdict on a token the local tiers do not have. Without `shared_tier`, the
    /// fleet's shared tier is skipped: the gateway itself answers (a `max_cache_age` or live
    /// layer's verification, whose answer's age must be known).
    pub(super) async fn answer(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: &MissContext,
        shared_tier: bool,
    ) -> Verdict {
        if let Some(jwt) = self.jwt_for(token) {
            let verdict = jwt.verify(token.expose()).await;
            self.sync_key_removals();
            return Verdict::Jwt(verdict);
        }
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            if !shared_tier {
                let (cap, graceful) = fleet.unshared_bounds();
                return Verdict::Gateway {
                    decision: self.ask_gateway(token, ctx).await,
                    cap,
                    graceful,
                };
            }
            let answer = fleet.answer(hash, self.ask_gateway(token, ctx)).await;
            return Verdict::Gateway {
                decision: answer.verdict,
                cap: answer.cap,
                graceful: answer.graceful,
            };
        }
        let _ = (hash, shared_tier);
        Verdict::Gateway {
            decision: self.ask_gateway(token, ctx).await,
            cap: None,
            graceful: true,
        }
    }

    /// The JWT verifier, if `token` is a JWT and JWTs are verified here.
    pub(super) fn jwt_for(&self, token: BearerToken<'_>) -> Option<&crate::jwt::JwtVerifier> {
        self.jwt.as_ref().filter(|_| token.is_jwt_shaped())
    }

    /// After a JWKS refresh withdrew a key, no JWT decision cached before may be served:
    /// tokens signed by that key must be refused from now on. Opaque tokens' decisions and
    /// the negative cache stay (dropping them would send every busy token to the gateway at
    /// once); JWTs are verified again locally, without a fetch.
    fn sync_key_removals(&self) {
        let Some(jwt) = &self.jwt else { return };
        let removals = jwt.removals();
        if self.key_removals_seen.swap(removals, Ordering::AcqRel) != removals {
            tracing::warn!("JWKS key withdrawn: every cached JWT decision on this server is dropped");
            self.cache.invalidate_jwt();
        }
    }

    /// Starts the JWKS refresh timer of this verifier, once, if JWTs are verified and a Tokio
    /// runtime runs. It holds the verifier weakly and ends with it.
    pub(super) fn start_jwks_timer(self: &Arc<Self>) {
        let Some(jwt) = &self.jwt else { return };
        if self.jwks_timer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: keys are still refreshed when a verification finds them stale.
            self.jwks_timer_started.store(false, Ordering::Release);
            return;
        };
        let mut wait = jwt.next_timer_wait();
        let verifier = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                let Some(verifier) = verifier.upgrade() else { break };
                if let Some(jwt) = &verifier.jwt {
                    jwt.refresh_due().await;
                    wait = jwt.next_timer_wait();
                }
                verifier.sync_key_removals();
            }
        });
    }

    /// Asks the gateway about a token: one call, cut off at the call bound (a custom
    /// [`Gateway`](crate::gateway::Gateway) that never answers fails closed like a timeout).
    async fn ask_gateway(&self, token: BearerToken<'_>, ctx: &MissContext) -> Result<Decision, GatewayError> {
        let request = CheckRequest {
            token,
            kind: self.kind_of(token.secret_bytes()),
            method: ctx.method.as_str(),
            resource: &ctx.resource,
            client_ip: ctx.client_ip.as_deref(),
            user_agent: ctx.user_agent.as_deref(),
        };
        let started = Instant::now();
        let call = self.gateway.check(request);
        let decision = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::timeout(super::miss::call_bound(&self.settings), call)
                .await
                .unwrap_or(Err(GatewayError::Timeout))
        } else {
            call.await
        };
        let elapsed = started.elapsed();
        telemetry::gateway_call(elapsed, decision.as_ref().err().map(GatewayError::kind));
        tracing::Span::current().record("gateway_ms", elapsed.as_secs_f64() * 1000.0);
        decision
    }
}
