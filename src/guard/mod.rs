//! Permission guards, answered locally from the cached [`Principal`]'s effective permissions
//! (no extra gateway call): per route ([`RequirePermissionsLayer`]), per gRPC method
//! ([`RequireMethodPermissionsLayer`]) and per MCP tool, resource, prompt and for tasks
//! ([`McpGuardLayer`]).
//!
//! Every guard refuses a request without a principal (401 / `UNAUTHENTICATED` with the auth
//! layer's challenge), unless the auth layer is in optional mode and the rule admits
//! anonymous callers ([`RequireMethodPermissionsLayer::public`]); a principal without the
//! required permissions gets 403 `insufficient_scope` (`PERMISSION_DENIED` for gRPC) naming
//! what to ask for.

pub(crate) mod future;
pub(crate) mod mcp;
mod method;
mod route;

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

pub(crate) use self::future::GuardFuture;
pub use self::mcp::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_LIST_RESPONSE_BYTES, HEADER_MISMATCH, McpGuard, McpGuardLayer, McpPrimitive,
    UNLISTED, classify_mcp_body, classify_mcp_request,
};
#[allow(deprecated)]
pub use self::mcp::{McpToolGuard, McpToolGuardLayer};
pub use self::method::{RequireMethodPermissions, RequireMethodPermissionsLayer};
pub use self::route::{RequirePermissions, RequirePermissionsLayer};
use crate::body::ResponseBody;
use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams, challenge_of, is_grpc, render};

/// How a set of required permissions is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Every listed permission is needed.
    All,
    /// Any one of the listed permissions is enough.
    Any,
}

/// A set of permissions and how to match them; shared by the route guard, the gRPC method
/// guard and the MCP guard.
#[derive(Debug, Clone)]
pub struct Permissions {
    requirement: Requirement,
    permissions: Arc<[Box<str>]>,
    /// The credentials that may hold them (`None`: any the auth layer takes).
    credentials: Option<Credentials>,
}

/// Which credentials a rule admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credentials {
    OAuth,
    ApiKeys,
}

impl Permissions {
    /// All of `permissions` are required.
    pub fn all<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Self::new(Requirement::All, permissions)
    }

    /// Any one of `permissions` is required. An empty list is never satisfied. A caller
    /// without any of them is asked for the first (list the cheapest first): asking for
    /// every alternative would have the client request them all.
    pub fn any<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Self::new(Requirement::Any, permissions)
    }

    /// No permission: any verified caller (a principal is still required). For an MCP tool,
    /// resource or prompt every caller may use, which an
    /// [`McpGuardLayer`] refuses unless a rule lists it.
    pub fn authenticated() -> Self {
        Self::new(Requirement::All, std::iter::empty::<Box<str>>())
    }

    fn new<I, S>(requirement: Requirement, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Permissions {
            requirement,
            permissions: permissions.into_iter().map(Into::into).collect(),
            credentials: None,
        }
    }

    /// These permissions, held by an OAuth access token (opaque or JWT) only: an API key is
    /// refused with 401 `invalid_token`, whatever its permissions. For one gRPC method or MCP
    /// tool of a layer that also takes keys; a whole route says it with
    /// [`WachtAuthLayer::oauth_only`](crate::WachtAuthLayer::oauth_only).
    #[must_use]
    pub fn oauth_only(mut self) -> Self {
        self.credentials = Some(Credentials::OAuth);
        self
    }

    /// These permissions, held by an API key only: an access token is refused with 401
    /// `invalid_token`.
    #[must_use]
    pub fn api_keys_only(mut self) -> Self {
        self.credentials = Some(Credentials::ApiKeys);
        self
    }

    /// The refusal of a principal holding a credential this rule does not admit.
    fn credential_refusal(&self, principal: &Principal) -> Option<AuthError> {
        let is_key = principal.credential_kind() == crate::principal::CredentialKind::ApiKey;
        match (self.credentials?, is_key) {
            (Credentials::OAuth, true) => Some(AuthError::InvalidToken(
                crate::reject::InvalidTokenReason::ApiKeyNotAccepted,
            )),
            (Credentials::ApiKeys, false) => Some(AuthError::InvalidToken(
                crate::reject::InvalidTokenReason::ApiKeyRequired,
            )),
            _ => None,
        }
    }

    /// The listed permissions.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.permissions.iter().map(|p| &**p)
    }

    /// How they are matched.
    pub fn requirement(&self) -> Requirement {
        self.requirement
    }

    /// True if the principal satisfies the requirement (exact, case-sensitive membership), with
    /// a credential the rule admits.
    pub fn is_satisfied_by(&self, principal: &Principal) -> bool {
        if self.credential_refusal(principal).is_some() {
            return false;
        }
        match self.requirement {
            Requirement::All => self.iter().all(|p| principal.has_permission(p)),
            Requirement::Any => self.iter().any(|p| principal.has_permission(p)),
        }
    }

    /// Checks a principal: `Ok`; 401 `invalid_token` for a credential the rule does not admit
    /// ([`oauth_only`](Self::oauth_only), [`api_keys_only`](Self::api_keys_only)); or the 403
    /// `insufficient_scope` error naming the permissions
    /// needed (the missing ones for all-of, the first alternative for any-of) followed by the
    /// scopes the token already has.
    pub fn check(&self, principal: &Principal) -> Result<(), AuthError> {
        if let Some(refusal) = self.credential_refusal(principal) {
            return Err(refusal);
        }
        if self.is_satisfied_by(principal) {
            return Ok(());
        }
        let required = match self.requirement {
            Requirement::All => self
                .iter()
                .filter(|p| !principal.has_permission(p))
                .map(str::to_owned)
                .collect(),
            // The first alternative, not all of them: one is enough, and a client asks for
            // exactly what the challenge names.
            Requirement::Any => self.iter().take(1).map(str::to_owned).collect(),
        };
        tracing::debug!(client_id = principal.client_id().as_str(), required = ?required, "permission denied");
        for permission in self.iter().filter(|p| !principal.has_permission(p)) {
            crate::telemetry::permission_denied(principal.client_id().as_str(), permission);
        }
        Err(AuthError::InsufficientScope {
            required,
            granted: principal.scopes().iter().map(str::to_owned).collect(),
        })
    }
}

pub(crate) mod sealed {
    use std::sync::Arc;

    use super::{AuthError, ChallengeParams, Permissions, Principal, challenge_of};
    use crate::reject::Anonymous;

    /// What a guard rule asks of a request.
    #[derive(Debug, Clone, Copy)]
    pub enum Rule<'a> {
        /// A verified principal, whatever its permissions.
        Authenticated,
        /// Nothing, when the auth layer is in optional mode; otherwise a principal.
        Public,
        /// A principal with these permissions.
        Requires(&'a Permissions),
    }

    impl Rule<'_> {
        /// Judges a request by its extensions. A request without a principal is refused (401
        /// with the layer's challenge) unless the rule is [`Rule::Public`] and the auth layer
        /// let it through in optional mode.
        pub(crate) fn check(self, ext: &http::Extensions) -> Result<(), (AuthError, Arc<ChallengeParams>)> {
            let principal = ext.get::<Principal>();
            match (self, principal) {
                (Rule::Requires(permissions), Some(p)) => {
                    permissions.check(p).map_err(|e| (e, Arc::clone(p.challenge())))
                }
                (Rule::Authenticated | Rule::Public, Some(_)) => Ok(()),
                (Rule::Public, None) if ext.get::<Anonymous>().is_some_and(|a| a.optional) => Ok(()),
                (_, None) => Err((AuthError::MissingCredentials, challenge_of(ext))),
            }
        }
    }

    /// What a guard requires of a request, by its path (implemented by the crate's guards).
    pub trait Guard: Clone {
        /// The rule for a request to `path`.
        fn rule_for(&self, path: &str) -> Rule<'_>;
    }
}

/// The service of a path-based permission guard ([`RequirePermissions`],
/// [`RequireMethodPermissions`]): checks the request against the guard's rule for its path,
/// then calls the inner service or answers the refusal.
#[derive(Debug, Clone)]
pub struct GuardService<G, S> {
    inner: S,
    guard: G,
}

impl<G, S> GuardService<G, S> {
    pub(crate) fn new(guard: G, inner: S) -> Self {
        GuardService { inner, guard }
    }
}

impl<G, S, ReqB, ResB> Service<Request<ReqB>> for GuardService<G, S>
where
    G: sealed::Guard,
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.guard.rule_for(req.uri().path()).check(req.extensions()) {
            Ok(()) => GuardFuture::inner(self.inner.call(req)),
            Err((error, challenge)) => {
                GuardFuture::refused(render(error, &challenge, is_grpc(req.version(), req.headers())))
            }
        }
    }
}
