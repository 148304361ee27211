//! Per-method permission guards for gRPC (or any path-routed service): a map from
//! `/package.Service/Method` or `/package.Service/*` to required [`Permissions`].
//!
//! ```
//! use tower_wacht::{Permissions, RequireMethodPermissionsLayer};
//!
//! let guard = RequireMethodPermissionsLayer::new()
//!     .route("/greeter.v1.Greeter/SayHello", Permissions::all(["greeter:hello"]))
//!     .route("/admin.v1.Admin/*", Permissions::any(["admin:read", "admin:write"]));
//! // tonic: Server::builder().layer(auth).layer(guard).add_service(...)
//! ```
//!
//! A request whose path matches no rule is open to any caller with a valid token by default,
//! or refused with [`RequireMethodPermissionsLayer::deny_unmapped`]. Refusals are
//! PERMISSION_DENIED for gRPC requests (403 `insufficient_scope` for plain HTTP), and
//! UNAUTHENTICATED for a request without a principal: only a method marked
//! [`public`](RequireMethodPermissionsLayer::public) admits one, and only when the auth layer is in
//! optional mode.

use std::collections::HashMap;
use std::sync::Arc;

use tower_layer::Layer;

use super::sealed::{Guard, Rule};
use super::{GuardService, Permissions};

/// What happens to a method no rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Unmapped {
    /// Any caller with a valid token may call it (default).
    #[default]
    Allow,
    /// Nobody may call it: PERMISSION_DENIED.
    Deny,
}

/// What one method or service rule asks for.
#[derive(Debug, Clone)]
enum MethodRule {
    Requires(Permissions),
    Public,
}

#[derive(Debug, Clone)]
struct Rules {
    methods: HashMap<Box<str>, MethodRule>,
    services: HashMap<Box<str>, MethodRule>,
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
    fn lookup(&self, path: &str) -> Option<&MethodRule> {
        self.methods.get(path).or_else(|| {
            let service = &path[..path.rfind('/').filter(|&i| i > 0)?];
            self.services.get(service)
        })
    }
}

/// Layer requiring permissions per gRPC method (request path). See the module docs.
#[derive(Debug, Clone, Default)]
pub struct RequireMethodPermissionsLayer {
    rules: Arc<Rules>,
}

impl RequireMethodPermissionsLayer {
    /// No rules; unmapped methods allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule. `pattern` is a full method path (`/package.Service/Method`) or a whole
    /// service (`/package.Service/*`). A method rule wins over its service's rule.
    pub fn route(self, pattern: &str, permissions: Permissions) -> Self {
        self.rule(pattern, MethodRule::Requires(permissions))
    }

    /// Marks a method (`/package.Service/Method`) or a whole service (`/package.Service/*`) as
    /// callable without a token, when the auth layer is in
    /// [`optional`](crate::WachtAuthConfigBuilder::optional) mode (without optional mode the
    /// layer itself requires a token). Every other method refuses a request without a
    /// principal with UNAUTHENTICATED.
    pub fn public(self, pattern: &str) -> Self {
        self.rule(pattern, MethodRule::Public)
    }

    fn rule(mut self, pattern: &str, rule: MethodRule) -> Self {
        let rules = Arc::make_mut(&mut self.rules);
        match pattern.strip_suffix("/*") {
            Some(service) => rules.services.insert(service.into(), rule),
            None => rules.methods.insert(pattern.into(), rule),
        };
        self
    }

    /// Refuse methods that no rule names (PERMISSION_DENIED).
    pub fn deny_unmapped(mut self) -> Self {
        Arc::make_mut(&mut self.rules).unmapped = Unmapped::Deny;
        self
    }
}

impl<S> Layer<S> for RequireMethodPermissionsLayer {
    type Service = RequireMethodPermissions<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.clone(), inner)
    }
}

impl Guard for RequireMethodPermissionsLayer {
    /// The rule of a path. An unmapped path is open to any authenticated caller, or, when
    /// denied, requires `any` of nothing, which no principal satisfies.
    fn rule_for(&self, path: &str) -> Rule<'_> {
        match (self.rules.lookup(path), self.rules.unmapped) {
            (Some(MethodRule::Requires(p)), _) => Rule::Requires(p),
            (Some(MethodRule::Public), _) => Rule::Public,
            (None, Unmapped::Deny) => Rule::Requires(&self.rules.nobody),
            (None, Unmapped::Allow) => Rule::Authenticated,
        }
    }
}

/// The service produced by [`RequireMethodPermissionsLayer`].
pub type RequireMethodPermissions<S> = GuardService<RequireMethodPermissionsLayer, S>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_rules_win_over_service_rules() {
        let g = RequireMethodPermissionsLayer::new()
            .route("/pkg.Svc/*", Permissions::all(["svc"]))
            .route("/pkg.Svc/Special", Permissions::all(["special"]));
        let names = |path: &str| match g.rule_for(path) {
            Rule::Requires(p) => Some(p.iter().collect::<Vec<_>>()),
            _ => None,
        };
        assert_eq!(names("/pkg.Svc/Special"), Some(vec!["special"]));
        assert_eq!(names("/pkg.Svc/Other"), Some(vec!["svc"]));
        assert_eq!(names("/pkg.Other/Method"), None);
        assert_eq!(names("/"), None);
        assert_eq!(names(""), None);
        let deny = g.clone().deny_unmapped();
        assert!(matches!(deny.rule_for("/pkg.Other/Method"), Rule::Requires(p) if p.iter().next().is_none()));
        // The clone taken before `deny_unmapped` is unchanged.
        assert!(matches!(g.rule_for("/pkg.Other/Method"), Rule::Authenticated));
        let public = g.public("/pkg.Open/*");
        assert!(matches!(public.rule_for("/pkg.Open/Any"), Rule::Public));
    }
}
