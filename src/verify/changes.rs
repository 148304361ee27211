//! What operators and Wacht's webhooks change about whom a [`Verifier`] serves: cached
//! answers dropped (a token, a client, a user, an API key, a tenant, everything) and
//! credentials denied (an OAuth client, a JWT session or token id). Each change is in force
//! here before its first `await` completes and, in fleet mode, handed to the fleet's change
//! log (see [`fleet`](super::fleet)) so that every replica makes it; its [`ChangeOutcome`]
//! says which.

use std::time::SystemTime;

use super::Verifier;
use crate::change::{Change, ChangeOutcome, Target};
use crate::principal::{ApiKeyId, OrganizationId, UserId, WorkspaceId};

impl Verifier {
    /// Drops one token's cached decision everywhere (every tier, every thread), so its next
    /// use asks the gateway again; an answer in flight is voided too. Use it when you learn
    /// that a grant was revoked. In force here before the first `await` completes; the
    /// outcome says whether the fleet has it (see [`ChangeOutcome`]).
    pub async fn invalidate(&self, token: &str) -> ChangeOutcome {
        let hash = self.hash_token(token);
        let handed = self.hand(|| Change::Token(hash));
        self.cache.invalidate_token(hash).await;
        self.cache.forget_rejection(&hash).await;
        self.settle(handed).await
    }

    /// Drops every cached decision, answers in flight included.
    pub async fn invalidate_all(&self) -> ChangeOutcome {
        let handed = self.hand(|| Change::All);
        self.cache.invalidate_all();
        self.settle(handed).await
    }

    /// Drops every cached token of one OAuth client, so their next use asks the gateway.
    /// (The gateway still allows a deactivated client's tokens: to refuse them, use
    /// [`deny_client`](Self::deny_client).)
    pub async fn invalidate_client(&self, client_id: &str) -> ChangeOutcome {
        let handed = self.hand(|| Change::Client(client_id.to_owned()));
        self.cache.invalidate_client(client_id);
        self.settle(handed).await
    }

    /// Drops every cached answer for one Wacht user's credentials, so their next use asks
    /// again: OAuth access tokens the user granted (opaque ones by the gateway's
    /// `owner_user_id`, JWTs by their `sub`), tokens granted for `urn:wacht:user:<id>`, and the
    /// API keys the user owns. Answers in flight, the outage grace and open streams are
    /// covered too (every tier, every thread); in force here before the first `await`
    /// completes, and in fleet mode written to the change log, so every replica drops them
    /// (see the outcome). Use it when a user is deleted, changes their password or loses a
    /// second factor ([`WachtWebhooks`](crate::WachtWebhooks) does, on Wacht's webhooks). The
    /// gateway decides what their next use gets: a deleted user's tokens are
    /// refused there.
    ///
    /// Ids are the decimal ids Wacht's webhooks and the gateway name
    /// (`"432119876543210241".parse::<UserId>()`).
    ///
    /// ```
    /// # async fn f(verifier: &tower_wacht::Verifier) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_wacht::principal::UserId;
    ///
    /// let outcome = verifier.invalidate_user("432119876543210241".parse::<UserId>()?).await;
    /// assert!(outcome.is_settled());
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_user(&self, user_id: UserId) -> ChangeOutcome {
        self.invalidate_target(Target::User(user_id.get())).await
    }

    /// Drops every cached answer for one API key (`Principal::api_key().key_id`), as
    /// [`invalidate_user`](Self::invalidate_user) does for a user: use it when a key is
    /// deleted or rotated.
    pub async fn invalidate_api_key(&self, key_id: ApiKeyId) -> ChangeOutcome {
        self.invalidate_target(Target::ApiKey(key_id.get())).await
    }

    /// Drops every cached answer granted for one organization (`urn:wacht:organization:<id>`)
    /// and every API key acting for it, as [`invalidate_user`](Self::invalidate_user) does for
    /// a user. A grant for one of its workspaces names only the workspace: see
    /// [`invalidate_workspace`](Self::invalidate_workspace).
    pub async fn invalidate_organization(&self, organization_id: OrganizationId) -> ChangeOutcome {
        self.invalidate_target(Target::Organization(organization_id.get()))
            .await
    }

    /// Drops every cached answer granted for one workspace (`urn:wacht:workspace:<id>`) and
    /// every API key acting for it, as [`invalidate_user`](Self::invalidate_user) does for a
    /// user.
    pub async fn invalidate_workspace(&self, workspace_id: WorkspaceId) -> ChangeOutcome {
        self.invalidate_target(Target::Workspace(workspace_id.get())).await
    }

    /// Voids every answer whose grant names `target`, here and (in fleet mode) on every
    /// replica.
    pub(crate) async fn invalidate_target(&self, target: Target) -> ChangeOutcome {
        let handed = self.hand(|| Change::Target(target));
        self.cache.invalidate_target(target);
        self.settle(handed).await
    }

    /// Refuses every token of `client_id` from now on (401 `invalid_token`), even when the
    /// gateway allows it, and drops its cached tokens at once: in force on every thread here
    /// before the first `await` completes. In fleet mode every replica refuses it too (see
    /// the outcome), including replicas started later.
    pub async fn deny_client(&self, client_id: &str) -> ChangeOutcome {
        let handed = self.hand(|| Change::Deny {
            client: client_id.to_owned(),
            version: 0,
        });
        if !self.in_fleet() || handed.refused() {
            // In fleet mode the fleet's view holds it (pending from now on), unless the fleet
            // refused to keep it: then it holds here alone.
            self.denied.insert(client_id);
        }
        self.cache.invalidate_client(client_id);
        self.settle(handed).await
    }

    /// Lifts a [`deny_client`](Self::deny_client). Its tokens rejected within the last
    /// `negative_ttl` stay rejected until that entry ends. A client denied in the
    /// configuration stays denied. In fleet mode the allow lifts only the denial this replica
    /// knows, and takes effect (here too) once the fleet's log has it: a denial made
    /// meanwhile on any replica wins ([`RefusalReason::NewerDenial`](crate::change::RefusalReason::NewerDenial)).
    pub async fn allow_client(&self, client_id: &str) -> ChangeOutcome {
        if self.denied.is_configured(client_id) {
            return ChangeOutcome::Refused(crate::change::RefusalReason::ConfiguredDenial);
        }
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            return self.allow_through_fleet(fleet, client_id).await;
        }
        if self.denied.remove(client_id) {
            ChangeOutcome::Applied
        } else {
            ChangeOutcome::Unchanged
        }
    }

    /// Refuses every JWT of this Wacht session (`sid`) from now on (401 `invalid_token`) and
    /// drops its cached tokens at once: Wacht cannot revoke a JWT before it expires, so this
    /// is how an incident cuts a session off here. The denial lasts
    /// [`session_denial_lifetime`](crate::jwt::JwtConfig::session_denial_lifetime) (30 days by
    /// default: Wacht keeps minting access tokens for the session for as long as its refresh
    /// token lives). In fleet mode it is written to the fleet's change log and its records
    /// (for as long), so every replica, including one that was disconnected or starts later,
    /// refuses it. Refused when this server's list is full (100 000 live denials; logged).
    pub async fn deny_session(&self, session_id: &str) -> ChangeOutcome {
        // Recorded here first: a denial this server's full list cannot hold is refused, not
        // handed to the fleet (JWT verdicts are never in the shared tier, so the order does
        // not matter to it).
        if !self.revoked.deny_session(session_id) {
            return ChangeOutcome::Refused(crate::change::RefusalReason::DenyListFull);
        }
        let until = SystemTime::now() + self.revoked.session_lifetime();
        self.spread_session_denial(session_id, until).await
    }

    /// [`deny_session`](Self::deny_session) for a session Wacht itself ended (deleted or
    /// expired): Wacht mints no more access tokens for it, so the denial lasts as long as one
    /// it already minted can be accepted (the token-id lifetime: 24 hours plus twice the
    /// leeway), not `session_denial_lifetime`, and never shortens a longer denial known here.
    pub(crate) async fn deny_ended_session(&self, session_id: &str) -> ChangeOutcome {
        let until = SystemTime::now() + self.revoked.token_id_lifetime();
        if !self.revoked.deny_session_at_least(session_id, until) {
            return ChangeOutcome::Refused(crate::change::RefusalReason::DenyListFull);
        }
        self.spread_session_denial(session_id, until).await
    }

    /// A session denial recorded here until `until`: its cached tokens dropped, and the
    /// denial handed to the fleet's change log in fleet mode.
    async fn spread_session_denial(&self, session_id: &str, until: SystemTime) -> ChangeOutcome {
        let handed = self.hand(|| Change::DenySession {
            id: session_id.to_owned(),
            until: unix_millis(until),
        });
        self.cache.invalidate_session(session_id);
        self.settle(handed).await
    }

    /// Refuses the JWT with this token id (`jti`) from now on and drops it from the cache;
    /// see [`deny_session`](Self::deny_session) for the scope and bound. A token id names one
    /// token: the denial lasts as long as that token can be accepted (24 hours, its longest
    /// lifetime, plus twice the leeway).
    pub async fn deny_token_id(&self, token_id: &str) -> ChangeOutcome {
        if !self.revoked.deny_token_id(token_id) {
            return ChangeOutcome::Refused(crate::change::RefusalReason::DenyListFull);
        }
        let until = SystemTime::now() + self.revoked.token_id_lifetime();
        let handed = self.hand(|| Change::DenyTokenId {
            id: token_id.to_owned(),
            until: unix_millis(until),
        });
        self.cache.invalidate_token_id(token_id);
        self.settle(handed).await
    }

    /// The OAuth client ids currently denied, sorted: configured, and denied at run time
    /// (in fleet mode, anywhere in the fleet, as far as this replica knows).
    pub fn denied_clients(&self) -> Vec<String> {
        let ids = self.denied.list();
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            let mut ids = ids;
            ids.extend(fleet.denied_clients());
            ids.sort();
            ids.dedup();
            return ids;
        }
        ids
    }

    /// True if `client_id`'s tokens are refused: configured, or denied at run time (in fleet
    /// mode the fleet's view of the log is the one record of run-time denials, so that no
    /// interleaving of local calls and the fleet's changes can leave two answers).
    pub(super) fn is_denied(&self, client_id: &str) -> bool {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet
            && fleet.denies(client_id)
        {
            return true;
        }
        self.denied.contains(client_id)
    }

    /// True in fleet mode.
    fn in_fleet(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.fleet.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }
}

/// Unix milliseconds, saturating.
fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Without fleet mode, changes stay on this server.
#[cfg(not(feature = "redis"))]
struct Handed;

#[cfg(not(feature = "redis"))]
impl Handed {
    fn refused(&self) -> bool {
        false
    }
}

#[cfg(not(feature = "redis"))]
impl Verifier {
    fn hand(&self, _change: impl FnOnce() -> Change) -> Handed {
        Handed
    }

    async fn settle(&self, _handed: Handed) -> ChangeOutcome {
        ChangeOutcome::Applied
    }
}
