//! [`RequirePermissionsLayer`]: one set of permissions for every request it wraps (an Axum
//! route, a group of routes, a whole service).

use tower_layer::Layer;

use super::sealed::{Guard, Rule};
use super::{GuardService, Permissions};

/// A layer that lets a request through only if its [`Principal`](crate::Principal) has the
/// required permissions; otherwise 403 `insufficient_scope` (or 401 if there is no principal).
///
/// Use with Axum's `route_layer`, inside a [`WachtAuthLayer`](crate::WachtAuthLayer):
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_wacht::RequirePermissionsLayer;
///
/// let app: Router = Router::new()
///     .route("/tools/invoke", post(|| async { "ok" }))
///     .route_layer(RequirePermissionsLayer::all(["mcp:invoke"]));
/// ```
#[derive(Debug, Clone)]
pub struct RequirePermissionsLayer {
    permissions: Permissions,
}

impl RequirePermissionsLayer {
    /// Requires every permission listed.
    pub fn all<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Self::new(Permissions::all(permissions))
    }

    /// Requires at least one of the permissions listed.
    pub fn any<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        Self::new(Permissions::any(permissions))
    }

    /// Requires `permissions`.
    pub fn new(permissions: Permissions) -> Self {
        RequirePermissionsLayer { permissions }
    }
}

impl<S> Layer<S> for RequirePermissionsLayer {
    type Service = RequirePermissions<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

impl Guard for RequirePermissionsLayer {
    fn rule_for(&self, _path: &str) -> Rule<'_> {
        Rule::Requires(&self.permissions)
    }
}

/// The service produced by [`RequirePermissionsLayer`].
pub type RequirePermissions<S> = super::GuardService<RequirePermissionsLayer, S>;
