//! The RFC 6750 `WWW-Authenticate: Bearer` challenge of a refusal, and the per-layer
//! [`ChallengeParams`] it carries (realm, RFC 9728 metadata URL, suggested scopes).

use std::fmt::Write as _;
use std::sync::Arc;

use super::AuthError;
use crate::scopes::{is_offline_access, scope_token};

impl AuthError {
    /// Builds the `WWW-Authenticate: Bearer ...` value for this error.
    ///
    /// Parameter order follows what MCP clients parse: `resource_metadata`, `scope`, `error`,
    /// `error_description`, then `realm`. Each parameter appears at most once, always as a
    /// quoted-string; values are sanitised to the RFC 6750 character sets, so the result is
    /// always a valid header value.
    pub fn challenge(&self, params: &ChallengeParams) -> String {
        let candidates: Vec<&str> = match self {
            // With nothing to ask for (a method nobody may call), naming scopes would only
            // send the client into a pointless re-authorization.
            AuthError::InsufficientScope { required, .. } if required.is_empty() => Vec::new(),
            // The granted scopes too, so that re-authorizing does not lose them.
            AuthError::InsufficientScope { required, granted } => {
                required.iter().chain(granted).map(String::as_str).collect()
            }
            _ => params.scopes.iter().map(|s| &**s).collect(),
        };
        // Sanitise first, then keep each scope once (first occurrence wins: required before
        // granted), dropping any that sanitising emptied, and `offline_access`, which a
        // challenge never asks for (MCP authorization, "Refresh Tokens": whether to ask for a
        // refresh token is the client's choice).
        let mut scopes: Vec<String> = Vec::new();
        for s in candidates.into_iter().map(scope_token) {
            if !s.is_empty() && !is_offline_access(&s) && !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let mut out = String::from("Bearer");
        let mut sep = " ";
        if let Some(url) = &params.resource_metadata {
            push_param(&mut out, &mut sep, "resource_metadata", &quoted_string(url));
        }
        let scope = scopes.join(" ");
        if !scope.is_empty() {
            push_param(&mut out, &mut sep, "scope", &scope);
        }
        if let Some(code) = self.error_code() {
            push_param(&mut out, &mut sep, "error", code);
            push_param(
                &mut out,
                &mut sep,
                "error_description",
                &description_text(self.description()),
            );
        }
        if let Some(realm) = &params.realm {
            push_param(&mut out, &mut sep, "realm", &quoted_string(realm));
        }
        if sep == " " {
            // A bare `Bearer` is not a valid challenge (RFC 6750 §3): name a realm.
            push_param(&mut out, &mut sep, "realm", "api");
        }
        out
    }
}

fn push_param(out: &mut String, sep: &mut &'static str, name: &str, value: &str) {
    let _ = write!(out, "{sep}{name}=\"{value}\"");
    *sep = ", ";
}

/// Content of an RFC 9110 quoted-string: visible ASCII and spaces, `"` and `\` escaped,
/// anything else dropped.
fn quoted_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' | '!'..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

/// `error_description` text: %x20-21 / %x23-5B / %x5D-7E; other characters dropped.
fn description_text(s: &str) -> String {
    s.chars()
        .filter(|&c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
        .collect()
}

/// What every challenge from one layer carries: realm, the RFC 9728 metadata URL, and the
/// scopes to suggest on a 401.
#[derive(Debug, Clone, Default)]
pub struct ChallengeParams {
    pub(crate) realm: Option<Box<str>>,
    pub(crate) resource_metadata: Option<Box<str>>,
    pub(crate) scopes: Vec<Box<str>>,
}

impl ChallengeParams {
    /// Challenge parameters: an optional `realm`, an optional RFC 9728 `resource_metadata`
    /// URL, and the scopes to suggest on a 401. The layer builds these from its configuration;
    /// this constructor is for rendering challenges elsewhere (and for tests and fuzzing).
    pub fn new<I, S>(realm: Option<&str>, resource_metadata: Option<&str>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        ChallengeParams {
            realm: realm.map(Into::into),
            resource_metadata: resource_metadata.map(Into::into),
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }

    pub(crate) fn shared_default() -> Arc<ChallengeParams> {
        Arc::new(ChallengeParams::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChallengeParams {
        ChallengeParams {
            realm: Some("my \"api\"".into()),
            resource_metadata: Some("https://h/.well-known/oauth-protected-resource/mcp".into()),
            scopes: vec!["mcp:invoke".into()],
        }
    }

    #[test]
    fn missing_credentials_challenge_has_no_error() {
        let c = AuthError::MissingCredentials.challenge(&params());
        assert_eq!(
            c,
            "Bearer resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:invoke\", realm=\"my \\\"api\\\"\""
        );
    }

    #[test]
    fn insufficient_scope_lists_required_then_granted_once() {
        let e = AuthError::InsufficientScope {
            required: vec!["tools:admin".into(), "mcp:invoke".into()],
            granted: vec!["mcp:invoke".into(), "bad\"scope".into()],
        };
        let c = e.challenge(&ChallengeParams::default());
        assert!(
            c.starts_with(
                "Bearer scope=\"tools:admin mcp:invoke badscope\", error=\"insufficient_scope\", error_description=\""
            ),
            "{c}"
        );
    }

    #[test]
    fn a_step_up_challenge_never_asks_for_offline_access() {
        let e = AuthError::InsufficientScope {
            required: vec!["projects:write".into()],
            granted: vec!["projects:read".into(), "offline_access".into()],
        };
        let c = e.challenge(&ChallengeParams::default());
        assert!(c.starts_with("Bearer scope=\"projects:write projects:read\", "), "{c}");
    }

    #[test]
    fn bare_challenge_gets_a_realm() {
        assert_eq!(
            AuthError::MissingCredentials.challenge(&ChallengeParams::default()),
            "Bearer realm=\"api\""
        );
    }
}
