//! Per-route permission guards, answered locally from the cached [`Principal`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::layer::Anonymous;
use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams, render};

/// How a set of required permissions is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Every listed permission is needed.
    All,
    /// Any one of the listed permissions is enough.
    Any,
}

/// A set of permissions and how to match them; shared by the HTTP guard, the gRPC method
/// guard and the MCP tool guard.
#[derive(Debug, Clone)]
pub struct Permissions {
    requirement: Requirement,
    permissions: Arc<[Box<str>]>,
}

impl Permissions {
    /// All of `permissions` are required.
    pub fn all<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Permissions {
            requirement: Requirement::All,
            permissions: permissions.into_iter().map(Into::into).collect(),
        }
    }

    /// Any one of `permissions` is required. An empty list is never satisfied.
    pub fn any<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Permissions {
            requirement: Requirement::Any,
            permissions: permissions.into_iter().map(Into::into).collect(),
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

    /// True if the principal satisfies the requirement (exact, case-sensitive membership).
    pub fn is_satisfied_by(&self, principal: &Principal) -> bool {
        match self.requirement {
            Requirement::All => self.iter().all(|p| principal.has_permission(p)),
            Requirement::Any => self.iter().any(|p| principal.has_permission(p)),
        }
    }

    /// Checks a principal: `Ok` or the 403 `insufficient_scope` error naming the permissions
    /// needed (the missing ones for all-of, every alternative for any-of) followed by the
    /// scopes the token already has.
    pub fn check(&self, principal: &Principal) -> Result<(), AuthError> {
        if self.is_satisfied_by(principal) {
            return Ok(());
        }
        let required = match self.requirement {
            Requirement::All => self
                .iter()
                .filter(|p| !principal.has_permission(p))
                .map(str::to_owned)
                .collect(),
            Requirement::Any => self.iter().map(str::to_owned).collect(),
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

    /// Checks the request's extensions: the principal the auth layer inserted, if any.
    pub(crate) fn check_extensions(&self, ext: &http::Extensions) -> Result<(), (AuthError, Arc<ChallengeParams>)> {
        match ext.get::<Principal>() {
            Some(p) => self.check(p).map_err(|e| (e, Arc::clone(p.challenge()))),
            None => Err((AuthError::MissingCredentials, challenge_of(ext))),
        }
    }
}

/// The challenge parameters for a request without a principal.
pub(crate) fn challenge_of(ext: &http::Extensions) -> Arc<ChallengeParams> {
    match ext.get::<Anonymous>() {
        Some(a) => Arc::clone(&a.challenge),
        None => {
            tracing::warn!("no Principal in the request: is WachtAuthLayer applied outside this route?");
            ChallengeParams::shared_default()
        }
    }
}

/// A layer that lets a request through only if its [`Principal`] has the required
/// permissions; otherwise 403 `insufficient_scope` (or 401 if there is no principal).
///
/// Use with Axum's `route_layer`, inside a [`WachtAuthLayer`](crate::WachtAuthLayer):
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_wacht::RequirePermissions;
///
/// let app: Router = Router::new()
///     .route("/tools/invoke", post(|| async { "ok" }))
///     .route_layer(RequirePermissions::all(["mcp:invoke"]));
/// ```
#[derive(Debug, Clone)]
pub struct RequirePermissions {
    permissions: Permissions,
}

impl RequirePermissions {
    /// Requires every permission listed.
    pub fn all<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        RequirePermissions {
            permissions: Permissions::all(permissions),
        }
    }

    /// Requires at least one of the permissions listed.
    pub fn any<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        RequirePermissions {
            permissions: Permissions::any(permissions),
        }
    }
}

impl<S> Layer<S> for RequirePermissions {
    type Service = RequirePermissionsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

use sealed::Rule;

impl sealed::Guard for RequirePermissions {
    fn rule_for(&self, _path: &str) -> Rule<'_> {
        Rule::Requires(&self.permissions)
    }
}

/// The service produced by [`RequirePermissions`].
pub type RequirePermissionsService<S> = GuardService<RequirePermissions, S>;

pub(crate) mod sealed {
    use std::sync::Arc;

    use super::{Anonymous, AuthError, ChallengeParams, Permissions, Principal, challenge_of};

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
        /// Judges a request by its extensions. A request without a principal is refused (401 with
        /// the layer's challenge) unless the rule is [`Rule::Public`] and the auth layer let it
        /// through in optional mode.
        pub(crate) fn check(self, ext: &http::Extensions) -> Result<(), (AuthError, Arc<ChallengeParams>)> {
            match self {
                Rule::Requires(permissions) => permissions.check_extensions(ext),
                Rule::Authenticated | Rule::Public if ext.get::<Principal>().is_some() => Ok(()),
                Rule::Public if ext.get::<Anonymous>().is_some_and(|a| a.optional) => Ok(()),
                Rule::Authenticated | Rule::Public => Err((AuthError::MissingCredentials, challenge_of(ext))),
            }
        }
    }

    /// What a guard requires of a request, by its path (implemented by the crate's guards).
    pub trait Guard: Clone {
        /// The rule for a request to `path`.
        fn rule_for(&self, path: &str) -> Rule<'_>;
    }
}

/// The service of a permission guard ([`RequirePermissions`] or
/// [`RequireMethodPermissions`](crate::RequireMethodPermissions)): checks the request's
/// [`Principal`] against what the guard requires for the request's path, then calls the inner
/// service, or answers 403 (`PERMISSION_DENIED` for gRPC), or 401 (`UNAUTHENTICATED`) if
/// there is no principal, unless the auth layer is in optional mode and the rule allows
/// anonymous callers.
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
            Err((error, challenge)) => GuardFuture::reject(render(error, &challenge, req.version(), req.headers())),
        }
    }
}

pin_project! {
    /// Response future of the guards: the inner future, or an immediate rejection.
    pub struct GuardFuture<F> {
        #[pin]
        state: GuardState<F>,
    }
}

pin_project! {
    #[project = GuardStateProj]
    enum GuardState<F> {
        Inner { #[pin] future: F },
        Reject { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F> GuardFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        GuardFuture {
            state: GuardState::Inner { future },
        }
    }

    pub(crate) fn reject(response: Response<Full<Bytes>>) -> Self {
        GuardFuture {
            state: GuardState::Reject {
                response: Some(response),
            },
        }
    }
}

impl<F, ResB, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardStateProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            GuardStateProj::Reject { response } => {
                let response = response
                    .take()
                    .unwrap_or_else(|| Response::new(Full::new(Bytes::new())));
                Poll::Ready(Ok(response.map(ResponseBody::rejection)))
            }
        }
    }
}
