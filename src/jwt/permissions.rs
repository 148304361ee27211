//! [`ScopeDefinition`]: the OAuth app's scope-to-permission mapping, and the effective
//! permissions of a token computed from it exactly as the gateway does (its step 6).

use serde::Deserialize;

use crate::principal::{ResourceUrn, StringSet};

/// One entry of a Wacht OAuth app's `scope_definitions`: the organization or workspace
/// permission a scope stands for.
///
/// The gateway maps a token's scopes through the app's current definitions on every check. A
/// JWT carries only its scopes, so a server verifying JWTs locally must be given the same
/// definitions ([`JwtConfig::scope_definitions`](super::JwtConfig::scope_definitions)) to
/// compute the same permissions. They deserialize from the backend API's OAuth app listing
/// (`scope_definitions`; other fields are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ScopeDefinition {
    /// The scope string.
    pub scope: String,
    /// Resource category the mapping applies to: `organization` or `workspace` (compared
    /// trimmed and case-insensitively with the type of the granted resource).
    #[serde(default)]
    pub category: String,
    /// Permission added for organization-scoped tokens.
    #[serde(default)]
    pub organization_permission: Option<String>,
    /// Permission added for workspace-scoped tokens.
    #[serde(default)]
    pub workspace_permission: Option<String>,
}

impl ScopeDefinition {
    /// `scope` maps to organization permission `permission` (category `organization`).
    #[must_use]
    pub fn organization(scope: impl Into<String>, permission: impl Into<String>) -> Self {
        Self {
            scope: scope.into(),
            category: "organization".to_owned(),
            organization_permission: Some(permission.into()),
            workspace_permission: None,
        }
    }

    /// `scope` maps to workspace permission `permission` (category `workspace`).
    #[must_use]
    pub fn workspace(scope: impl Into<String>, permission: impl Into<String>) -> Self {
        Self {
            scope: scope.into(),
            category: "workspace".to_owned(),
            organization_permission: None,
            workspace_permission: Some(permission.into()),
        }
    }

    /// Parses the `scope_definitions` JSON array of the backend API's OAuth app listing.
    ///
    /// # Errors
    ///
    /// The text is not a JSON array of objects with a string `scope`.
    pub fn parse_list(json: &str) -> Result<Vec<ScopeDefinition>, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// The token's scopes, plus the permission of every definition of one of those scopes whose
/// category is the granted resource's type (organization or workspace; other resources add
/// nothing), sorted and de-duplicated.
pub(crate) fn effective_permissions(
    scopes: &[&str],
    resource: &ResourceUrn,
    definitions: &[ScopeDefinition],
) -> StringSet {
    let kind = match resource {
        ResourceUrn::Organization(_) => Some("organization"),
        ResourceUrn::Workspace(_) => Some("workspace"),
        _ => None,
    };
    let mapped = kind.into_iter().flat_map(|kind| {
        definitions
            .iter()
            .filter(move |d| scopes.contains(&d.scope.as_str()) && d.category.trim().eq_ignore_ascii_case(kind))
            .filter_map(move |d| match kind {
                "organization" => d.organization_permission.as_deref(),
                _ => d.workspace_permission.as_deref(),
            })
            .map(str::trim)
            .filter(|p| !p.is_empty())
    });
    StringSet::new(scopes.iter().copied().chain(mapped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_map_by_the_granted_resource_type() {
        let defs = vec![
            ScopeDefinition::organization("projects:read", " org:projects:read "),
            ScopeDefinition::workspace("projects:read", "ws:projects:read"),
            ScopeDefinition {
                scope: "billing".into(),
                category: " Organization ".into(),
                organization_permission: Some(String::new()),
                workspace_permission: None,
            },
        ];
        let org = ResourceUrn::parse("urn:wacht:organization:5");
        let perms = effective_permissions(&["projects:read", "billing"], &org, &defs);
        assert_eq!(
            perms.iter().collect::<Vec<_>>(),
            ["billing", "org:projects:read", "projects:read"]
        );
        let ws = ResourceUrn::parse("urn:wacht:workspace:5");
        let perms = effective_permissions(&["projects:read"], &ws, &defs);
        assert_eq!(perms.iter().collect::<Vec<_>>(), ["projects:read", "ws:projects:read"]);
        let user = ResourceUrn::parse("urn:wacht:user:5");
        let perms = effective_permissions(&["projects:read"], &user, &defs);
        assert_eq!(perms.iter().collect::<Vec<_>>(), ["projects:read"]);
    }

    #[test]
    fn the_backend_api_listing_parses() {
        let defs = ScopeDefinition::parse_list(
            r#"[{"scope":"a","display_name":"A","description":"","archived":false,"category":"organization",
                 "organization_permission":"org:a","workspace_permission":null},
                {"scope":"b","display_name":"B","description":""}]"#,
        )
        .unwrap();
        assert_eq!(defs[0], ScopeDefinition::organization("a", "org:a"));
        assert_eq!(defs[1].category, "");
        assert!(ScopeDefinition::parse_list(r#"[{"display_name":"x"}]"#).is_err());
    }
}
