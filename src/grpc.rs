//! Per-method permission guards for gRPC (or any path-routed service): a map from
//! `/package.Service/Method` or `/package.Service/*` to required [`Permissions`].
//!
//! ```
//! use tower_wacht::{Permissions, RequireMethodPermissions};
//!
//! let guard = RequireMethodPermissions::new()
//!     .route("/greeter.v1.Greeter/SayHello", Permissions::all(["greeter:hello"]))
//!     .route("/admin.v1.Admin/*", Permissions::any(["admin:read", "admin:write"]));
//! // tonic: Server::builder().layer(auth).layer(guard).add_service(...)
//! ```
//!
//! A request whose path matches no rule follows [`Unmapped`]: allowed by default (the auth
//! layer has already required a valid token), or refused with
//! [`RequireMethodPermissions::deny_unmapped`]. Refusals are PERMISSION_DENIED for gRPC
//! requests (403 `insufficient_scope` for plain HTTP), UNAUTHENTICATED if no principal.

use std::collections::HashMap;
use std::sync::Arc;

use tower_layer::Layer;

use crate::guard::sealed::Guard;
use crate::guard::{GuardService, Permissions};

/// What happens to a method no rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmapped {
    /// Any authenticated caller may call it (default).
    #[default]
    Allow,
    /// Nobody may call it: PERMISSION_DENIED.
    Deny,
}

#[derive(Debug, Clone)]
struct Rules {
    methods: HashMap<Box<str>, Permissions>,
    services: HashMap<Box<str>, Permissions>,
    unmapped: Unmapped,
    /// What a denied unmapped method requires: any of nothing.
    nobody: Permissions,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            methods: HashMap::new(),
            services: HashMap::new(),
            unmapped: Unmapped::Allow,
            nobody: Permissions::any(std::iter::empty::<&str>()),
        }
    }
}

impl Rules {
    /// Exact method first, then its service's wildcard.
    fn lookup(&self, path: &str) -> Option<&Permissions> {
        self.methods.get(path).or_else(|| {
            let service = &path[..path.rfind('/').filter(|&i| i > 0)?];
            self.services.get(service)
        })
    }
}

/// Layer requiring permissions per gRPC method (request path). See the module docs.
#[derive(Debug, Clone, Default)]
pub struct RequireMethodPermissions {
    rules: Arc<Rules>,
}

impl RequireMethodPermissions {
    /// No rules; unmapped methods allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule. `pattern` is a full method path (`/package.Service/Method`) or a whole
    /// service (`/package.Service/*`). A method rule wins over its service's rule.
    pub fn route(mut self, pattern: &str, permissions: Permissions) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        match pattern.strip_suffix("/*") {
            Some(service) => rules.services.insert(service.into(), permissions),
            None => rules.methods.insert(pattern.into(), permissions),
        };
        self
    }

    /// Refuse methods that no rule names (PERMISSION_DENIED).
    pub fn deny_unmapped(mut self) -> Self {
        Arc::make_mut(&mut self.rules).unmapped = Unmapped::Deny;
        self
    }
}

impl<S> Layer<S> for RequireMethodPermissions {
    type Service = RequireMethodPermissionsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

impl Guard for RequireMethodPermissions {
    /// The permissions a path requires; `None` when it is unmapped and allowed. An unmapped,
    /// denied path requires `any` of nothing, which no principal satisfies.
    fn permissions_for(&self, path: &str) -> Option<&Permissions> {
        match (self.rules.lookup(path), self.rules.unmapped) {
            (Some(p), _) => Some(p),
            (None, Unmapped::Deny) => Some(&self.rules.nobody),
            (None, Unmapped::Allow) => None,
        }
    }
}

/// The service produced by [`RequireMethodPermissions`].
pub type RequireMethodPermissionsService<S> = GuardService<RequireMethodPermissions, S>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_rules_win_over_service_rules() {
        let g = RequireMethodPermissions::new()
            .route("/pkg.Svc/*", Permissions::all(["svc"]))
            .route("/pkg.Svc/Special", Permissions::all(["special"]));
        let names = |path: &str| g.permissions_for(path).map(|p| p.iter().collect::<Vec<_>>());
        assert_eq!(names("/pkg.Svc/Special"), Some(vec!["special"]));
        assert_eq!(names("/pkg.Svc/Other"), Some(vec!["svc"]));
        assert_eq!(names("/pkg.Other/Method"), None);
        assert_eq!(names("/"), None);
        assert_eq!(names(""), None);
        let deny = g.clone().deny_unmapped();
        assert!(
            deny.permissions_for("/pkg.Other/Method")
                .is_some_and(|p| p.iter().next().is_none())
        );
        // The clone taken before `deny_unmapped` is unchanged.
        assert!(g.permissions_for("/pkg.Other/Method").is_none());
    }
}
