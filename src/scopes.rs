//! [`ScopeHierarchy`]: which permissions imply which, so that a broader scope satisfies a
//! requirement for a narrower one (the MCP authorization spec makes accounting for scope
//! hierarchies a MUST when judging whether a token's scopes are sufficient).
//!
//! The table is configuration (OAuth defines no syntax for it): explicit implications
//! (`projects:write` implies `projects:read`), followed transitively, and optionally
//! wildcards (`projects:*` implies every `projects:…`). Every guard judges sufficiency through
//! [`Principal::has_permission`](crate::Principal::has_permission), which consults it; what a
//! 403 challenge asks for is unchanged (the permissions the operation needs that the token
//! does not already satisfy).

use std::collections::{HashMap, HashSet};

/// The OpenID Connect scope that asks the authorization server for a refresh token. A
/// resource server never asks for it (MCP authorization, "Refresh Tokens": SHOULD NOT): not
/// in its metadata's `scopes_supported`, not in a challenge.
const OFFLINE_ACCESS: &str = "offline_access";

/// True for a character RFC 6750 §3 allows in a scope token: %x21 / %x23-5B / %x5D-7E.
fn is_scope_char(c: char) -> bool {
    matches!(c, '!' | '#'..='[' | ']'..='~')
}

/// A scope as a challenge may carry it: the RFC 6750 scope-token characters of `s`, others
/// dropped.
pub(crate) fn scope_token(s: &str) -> String {
    s.chars().filter(|&c| is_scope_char(c)).collect()
}

/// True if `scope` is `offline_access` as a challenge would send it (its scope-token
/// characters): the one check behind every place that keeps it out.
pub(crate) fn is_offline_access(scope: &str) -> bool {
    scope.chars().filter(|&c| is_scope_char(c)).eq(OFFLINE_ACCESS.chars())
}

/// Most implication steps followed from one held permission (a guard against a huge table).
const MAX_STEPS: usize = 1024;

/// Permission implications. Build with [`ScopeHierarchy::new`] and [`implies`](Self::implies);
/// set on the layer with
/// [`WachtAuthConfigBuilder::scope_hierarchy`](crate::WachtAuthConfigBuilder::scope_hierarchy).
///
/// ```
/// use tower_wacht::scopes::ScopeHierarchy;
///
/// let hierarchy = ScopeHierarchy::new()
///     .implies("projects:admin", ["projects:write"])
///     .implies("projects:write", ["projects:read"])
///     .wildcards();
/// assert!(hierarchy.grants("projects:admin", "projects:read"));
/// assert!(hierarchy.grants("projects:*", "projects:archive"));
/// assert!(!hierarchy.grants("projects:read", "projects:write"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    /// Broader → the narrower permissions it implies directly.
    edges: HashMap<Box<str>, Vec<Box<str>>>,
    wildcards: bool,
}

impl ScopeHierarchy {
    /// No implications: permissions match exactly.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holding `broader` grants each of `narrower` (and, transitively, what they imply).
    pub fn implies<I, S>(mut self, broader: impl Into<Box<str>>, narrower: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.edges
            .entry(broader.into())
            .or_default()
            .extend(narrower.into_iter().map(Into::into));
        self
    }

    /// A held permission ending in `:*` grants every permission that starts with what comes
    /// before the `*` (`projects:*` grants `projects:read` and `projects:archive:all`, not
    /// `projects` or `projectsx:read`). A bare `*` grants nothing.
    pub fn wildcards(mut self) -> Self {
        self.wildcards = true;
        self
    }

    /// True when no implication is configured.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty() && !self.wildcards
    }

    /// True if holding `held` grants `needed` (equal, implied, or matched by a wildcard).
    pub fn grants(&self, held: &str, needed: &str) -> bool {
        if held == needed {
            return true;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo = vec![held];
        while let Some(current) = todo.pop() {
            if current == needed || self.wildcard_grants(current, needed) {
                return true;
            }
            if !seen.insert(current) || seen.len() > MAX_STEPS {
                continue;
            }
            if let Some(next) = self.edges.get(current) {
                todo.extend(next.iter().map(|n| &**n));
            }
        }
        false
    }

    /// True if any of `held` grants `needed`.
    pub fn grants_any<'a>(&self, held: impl IntoIterator<Item = &'a str>, needed: &str) -> bool {
        held.into_iter().any(|h| self.grants(h, needed))
    }

    fn wildcard_grants(&self, held: &str, needed: &str) -> bool {
        self.wildcards
            && held.strip_suffix('*').is_some_and(|prefix| {
                prefix.ends_with(':') && needed.len() > prefix.len() && needed.starts_with(prefix)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implications_are_followed_transitively_and_only_downwards() {
        let h = ScopeHierarchy::new()
            .implies("a:admin", ["a:write"])
            .implies("a:write", ["a:read"])
            .implies("a:read", ["a:admin"]); // a cycle must not loop
        assert!(h.grants("a:admin", "a:read"));
        assert!(h.grants("a:write", "a:read"));
        assert!(h.grants("a:read", "a:write"), "through the cycle");
        assert!(!h.grants("a:read", "b:read"));
        let plain = ScopeHierarchy::new().implies("a:write", ["a:read"]);
        assert!(!plain.grants("a:read", "a:write"));
        assert!(!plain.grants("a:*", "a:read"), "wildcards are opt-in");
    }

    #[test]
    fn wildcards_match_a_colon_prefix_only() {
        let h = ScopeHierarchy::new().wildcards().implies("admin", ["projects:*"]);
        assert!(h.grants("projects:*", "projects:read"));
        assert!(h.grants("projects:*", "projects:archive:all"));
        assert!(!h.grants("projects:*", "projects:"));
        assert!(!h.grants("projects:*", "projectsx:read"));
        assert!(!h.grants("projects:*", "projects"));
        assert!(!h.grants("*", "projects:read"));
        assert!(!h.grants("projects*", "projectsx"));
        assert!(h.grants("admin", "projects:read"), "implied wildcard");
    }
}
