//! Where a verdict on an unseen token comes from: today the Wacht gateway's authz check.
//! This is the seam for further sources (a fleet-wide shared tier in front of the gateway,
//! local verification of JWT access tokens): they answer the same [`Decision`] here, and the
//! miss path, single flight and decision rules stay as they are.

use std::time::Instant;

use super::Verifier;
use super::miss::MissContext;
use crate::gateway::{CheckRequest, Decision, GatewayError};
use crate::telemetry;
use crate::token::BearerToken;

impl Verifier {
    /// Asks the gateway about a token: one call, cut off at the call bound (a custom
    /// [`Gateway`](crate::gateway::Gateway) that never answers fails closed like a timeout).
    pub(super) async fn answer(&self, token: BearerToken<'_>, ctx: &MissContext) -> Result<Decision, GatewayError> {
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
