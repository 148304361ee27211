//! [`ChangeOutcome`]: what became of an invalidation, a denial or an allow made on this
//! server, so that an operator learns the truth (in fleet mode: written to the fleet's
//! change log, queued behind a Redis fault, or refused), never a silent drop.

use std::fmt;

use crate::principal::Grant;
use crate::token::TokenHash;

/// What became of [`invalidate`](crate::Verifier::invalidate),
/// [`deny_client`](crate::Verifier::deny_client), [`allow_client`](crate::Verifier::allow_client)
/// and the other changes.
///
/// ```
/// use tower_wacht::ChangeOutcome;
///
/// fn status(outcome: ChangeOutcome) -> u16 {
///     match outcome {
///         ChangeOutcome::Applied | ChangeOutcome::Durable | ChangeOutcome::Unchanged => 204,
///         ChangeOutcome::Queued(_) => 202,
///         ChangeOutcome::Refused(_) => 503,
///         _ => 500,
///     }
/// }
/// assert_eq!(status(ChangeOutcome::Durable), 204);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeOutcome {
    /// In force on this server (fleet mode is off: there is no one else to tell).
    Applied,
    /// In force on this server and written to the fleet's change log: every replica that
    /// reaches Redis applies it within about a second, and a replica started later reads it.
    Durable,
    /// In force on this server (an allow: not yet anywhere) and announced to the replicas
    /// listening now; Redis has not taken it. This replica keeps it, in order, and writes it
    /// as soon as Redis does; meanwhile every replica skips the shared tier and caches for
    /// at most `disconnected_ttl`.
    Queued(QueueReason),
    /// Nothing to change (an allow of a client that is not denied).
    Unchanged,
    /// Not kept for the fleet, for the reason given (a denial refused for a full queue is
    /// still in force on this server alone; an allow is nowhere).
    Refused(RefusalReason),
}

impl ChangeOutcome {
    /// True if every replica that reaches Redis has it or will read it (or there is no
    /// fleet).
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            ChangeOutcome::Applied | ChangeOutcome::Durable | ChangeOutcome::Unchanged
        )
    }
}

impl fmt::Display for ChangeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeOutcome::Applied => f.write_str("applied on this server"),
            ChangeOutcome::Durable => f.write_str("written to the fleet's change log"),
            ChangeOutcome::Queued(reason) => write!(f, "queued for the fleet: {reason}"),
            ChangeOutcome::Unchanged => f.write_str("nothing to change"),
            ChangeOutcome::Refused(reason) => write!(f, "refused: {reason}"),
        }
    }
}

/// Why a change is queued rather than written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueReason {
    /// Redis cannot be reached, or did not answer in time.
    RedisUnavailable,
    /// Redis refuses writes (too few replicas, out of memory, a read-only replica, a failed
    /// snapshot) or answered with an error.
    RedisRefusedWrite,
    /// This replica is re-reading the fleet's state (Redis lost it, or the log moved too
    /// often while writing); the change follows.
    Resyncing,
}

impl fmt::Display for QueueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueReason::RedisUnavailable => "Redis is unavailable",
            QueueReason::RedisRefusedWrite => "Redis refuses writes",
            QueueReason::Resyncing => "re-reading the fleet's state",
        })
    }
}

/// Why a change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Too many changes are waiting for Redis on this replica (10 000).
    OutboxFull,
    /// An allow: the client was denied again after the denial this allow lifts.
    NewerDenial,
    /// An allow: the denial it would lift has not reached Redis yet; try again once it has.
    PendingDenial,
    /// An allow: the client is denied in the configuration (`denied_clients`), permanently.
    ConfiguredDenial,
    /// A session or token-id denial: this server's list is full (100 000 live denials).
    DenyListFull,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalReason::OutboxFull => "too many changes are waiting for Redis on this replica",
            RefusalReason::NewerDenial => "the client was denied again after the denial this lifts",
            RefusalReason::PendingDenial => "the denial this lifts has not reached Redis yet",
            RefusalReason::ConfiguredDenial => "the client is denied in the configuration",
            RefusalReason::DenyListFull => "the deny list is full",
        })
    }
}

/// A change to what is accepted, as made on this server and (in fleet mode) written to the
/// fleet's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Change {
    /// One token's answers are void.
    Token(TokenHash),
    /// One client's answers are void.
    Client(String),
    /// Every answer is void.
    All,
    /// A client is denied from `version` on (the sequence number of the denial; a denial
    /// re-asserted after Redis lost state keeps its first version). `0` in the outbox: the
    /// version is the entry's own sequence number.
    Deny { client: String, version: u64 },
    /// A client's denial `lifts` is lifted; a newer denial is not. `version` as for `Deny`
    /// (an allow re-asserted after Redis lost state keeps its first version).
    Allow { client: String, lifts: u64, version: u64 },
    /// A JWT session (`sid`) is denied until `until` (Unix milliseconds).
    DenySession { id: String, until: u64 },
    /// A JWT token id (`jti`) is denied until `until`.
    DenyTokenId { id: String, until: u64 },
    /// The answers of one user, API key, tenant or membership are void.
    Target(Target),
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Change {
    /// True if applying it only ever refuses more (everything but `Allow`).
    pub(crate) fn restricts(&self) -> bool {
        !matches!(self, Change::Allow { .. })
    }

    /// True if it voids answers and does nothing else (no record to keep: a later answer
    /// stands).
    pub(crate) fn is_invalidation(&self) -> bool {
        matches!(
            self,
            Change::Token(_) | Change::Client(_) | Change::All | Change::Target(_)
        )
    }
}

/// Whose answers an invalidation by owner voids: every answer whose grant names this user,
/// API key, organization, workspace or membership (see [`Target::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// A Wacht user: the grant's `owner_user_id` (a JWT's `sub`, an API key's owner), or a
    /// `urn:wacht:user:<id>` granted resource.
    User(i64),
    /// An API key (`identity.key_id`).
    ApiKey(i64),
    /// A tenant: a grant for `urn:wacht:organization:<id>`, or an API key acting for it.
    Organization(i64),
    /// A tenant: a grant for `urn:wacht:workspace:<id>`, or an API key acting for it.
    Workspace(i64),
    /// An organization membership (only API-key answers carry one).
    OrganizationMembership(i64),
    /// A workspace membership (only API-key answers carry one).
    WorkspaceMembership(i64),
}

/// How many targets one grant can belong to (see [`Target::of`]).
pub(crate) const TARGETS_PER_GRANT: usize = 7;

impl Target {
    /// Every target an answer for `grant` belongs to (repeats possible), without allocating.
    pub(crate) fn of(grant: &Grant) -> [Option<Target>; TARGETS_PER_GRANT] {
        use crate::principal::ResourceUrn;
        let resource = match &grant.granted_resource {
            Some(ResourceUrn::User(id)) => Some(Target::User(id.get())),
            Some(ResourceUrn::Organization(id)) => Some(Target::Organization(id.get())),
            Some(ResourceUrn::Workspace(id)) => Some(Target::Workspace(id.get())),
            _ => None,
        };
        let key = grant.api_key.as_deref();
        [
            grant.owner_user_id.map(|id| Target::User(id.get())),
            resource,
            key.map(|k| Target::ApiKey(k.key_id.get())),
            key.and_then(|k| k.organization_id)
                .map(|id| Target::Organization(id.get())),
            key.and_then(|k| k.workspace_id).map(|id| Target::Workspace(id.get())),
            key.and_then(|k| k.organization_membership_id)
                .map(|id| Target::OrganizationMembership(id.get())),
            key.and_then(|k| k.workspace_membership_id)
                .map(|id| Target::WorkspaceMembership(id.get())),
        ]
    }
}
