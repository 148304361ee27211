//! Refresh-ahead: a hot token used near the end of its entry is re-verified in the background
//! by one request, so busy clients never wait on the gateway at a ttl boundary, and a
//! revocation found that way takes effect at once.

use std::sync::Arc;

use tracing::Instrument as _;

use super::Verifier;
use super::miss::MissContext;
use crate::reject::AuthError;
use crate::telemetry;
use crate::token::{OwnedBearer, TokenHash};

impl Verifier {
    /// Starts a background re-verification of a cached token, if a Tokio runtime is running.
    /// The caller has claimed the entry's refresh.
    pub(super) fn spawn_refresh(self: &Arc<Self>, token: OwnedBearer, hash: TokenHash, ctx: MissContext) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let span = tracing::debug_span!(
                "wacht.refresh",
                token = ?hash,
                client_id = tracing::field::Empty,
                outcome = tracing::field::Empty,
                gateway_ms = tracing::field::Empty,
            );
            this.refresh(&token, hash, ctx).instrument(span).await;
        });
    }

    async fn refresh(&self, token: &OwnedBearer, hash: TokenHash, ctx: MissContext) {
        match self
            .flight(token.token(), hash, &ctx, true, &super::miss::FlightNotes::default())
            .await
        {
            Ok(entry) => {
                self.cache.store(hash, entry).await;
                telemetry::refresh("allowed");
            }
            Err(AuthError::InvalidToken(_)) => {
                // Revoked (or now failing a pin) while cached: stop serving it everywhere now.
                self.cache.invalidate_token(hash).await;
                telemetry::refresh("invalid_token");
            }
            // Rate limited, unavailable: keep the entry until its deadline; the next miss asks.
            Err(_) => telemetry::refresh("failed"),
        }
    }
}
