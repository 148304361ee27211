//! Where a verdict on an unseen token comes from: the Wacht gateway's authz check, behind the
//! fleet's shared tier when fleet mode is on. This is the seam for sources: they answer the
//! same [`Decision`] here (with a cap on how long it may be cached locally), and the miss
//! path, single flight and decision rules stay as they are.

use std::time::Instant;

use std::time::Duration;

use super::Verifier;
use super::miss::MissContext;
use crate::gateway::{CheckRequest, Decision, GatewayError};
use crate::telemetry;
use crate::token::{BearerToken, TokenHash};

/// A verdict, and the longest the local cache may keep it.
pub(super) struct Verdict {
    pub(super) decision: Result<Decision, GatewayError>,
    pub(super) cap: Option<Duration>,
}

impl Verifier {
    /// The verdict on a token the local tiers do not have.
    pub(super) async fn answer(&self, token: BearerToken<'_>, hash: TokenHash, ctx: &MissContext) -> Verdict {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            let answer = fleet.answer(hash, self.ask_gateway(token, ctx)).await;
            return Verdict {
                decision: answer.verdict,
                cap: answer.cap,
            };
        }
        let _ = hash;
        Verdict {
            decision: self.ask_gateway(token, ctx).await,
            cap: None,
        }
    }

    /// Asks the gateway about a token: one call, cut off at the call bound (a custom
    /// [`Gateway`](crate::gateway::Gateway) that never answers fails closed like a timeout).
    async fn ask_gateway(&self, token: BearerToken<'_>, ctx: &MissContext) -> Result<Decision, GatewayError> {
        let request = CheckRequest {
            token,
            method: &self.settings.method,
            resource: &self.settings.resource,
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
