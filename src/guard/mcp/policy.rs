//! The MCP guard's rules: which permissions each tool, resource (by URI or template), prompt
//! and the tasks need, what happens to a name no rule lists, and the check of one access
//! against them.

use std::collections::HashMap;
use std::sync::Arc;

use super::message::{Access, Primitive};
use super::template::UriTemplate;
use crate::guard::Permissions;
use crate::guard::sealed::Rule;
use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams};

/// What happens to a tool, resource or prompt that no rule lists (and to tasks without a
/// `tasks` rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Unlisted {
    /// Refused, as the server refuses a name it does not have (the default).
    #[default]
    Deny,
    /// Open to every caller the auth layer let through (the behaviour before `deny_unlisted`
    /// became the default).
    Allow,
}

/// Every rule of a guard.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    pub(crate) tools: HashMap<Box<str>, Permissions>,
    pub(crate) prompts: HashMap<Box<str>, Permissions>,
    pub(crate) resources: HashMap<Box<str>, Permissions>,
    /// In the order they were added.
    pub(crate) templates: Vec<(UriTemplate, Permissions)>,
    pub(crate) tasks: Option<Permissions>,
    pub(crate) unlisted: Unlisted,
}

/// Why one access was refused.
#[derive(Debug)]
pub(crate) enum Denied {
    /// No principal (401), or one without the permissions (403 `insufficient_scope`), with the
    /// challenge to render it with.
    Auth(AuthError, Arc<ChallengeParams>),
    /// No rule lists it and unlisted names are refused: answered as the server answers a
    /// name it does not have.
    Unlisted(Primitive),
}

/// The rules that apply to one access.
enum Applies<'a> {
    One(&'a Permissions),
    /// Every template rule whose template the URI matches (at least one does).
    Templates(&'a str),
    Unlisted,
}

impl Policy {
    /// The rules of an access: for a resource, the rule of its exact URI, else the rule of a
    /// template written exactly so (a `completion/complete` reference, a
    /// `resources/templates/list` entry), else every template rule it matches.
    fn applies<'a>(&'a self, primitive: Primitive, name: &'a str) -> Applies<'a> {
        let found = match primitive {
            Primitive::Tool => self.tools.get(name),
            Primitive::Prompt => self.prompts.get(name),
            Primitive::Task => self.tasks.as_ref(),
            Primitive::Resource => self
                .resources
                .get(name)
                .or_else(|| self.templates.iter().find(|(t, _)| t.text() == name).map(|(_, p)| p)),
        };
        match found {
            Some(permissions) => Applies::One(permissions),
            None if primitive == Primitive::Resource && self.templates.iter().any(|(t, _)| t.matches(name)) => {
                Applies::Templates(name)
            }
            None => Applies::Unlisted,
        }
    }

    fn matching<'a>(&'a self, uri: &'a str) -> impl Iterator<Item = &'a Permissions> + 'a {
        self.templates
            .iter()
            .filter(move |(t, _)| t.matches(uri))
            .map(|(_, p)| p)
    }

    /// Judges one access of a request (its extensions hold the principal, if any).
    pub(crate) fn check(&self, access: &Access, ext: &http::Extensions) -> Result<(), Denied> {
        let deny = |(error, challenge)| Denied::Auth(error, challenge);
        match self.applies(access.primitive, &access.name) {
            Applies::One(permissions) => Rule::Requires(permissions).check(ext).map_err(deny),
            Applies::Templates(uri) => self
                .matching(uri)
                .try_for_each(|permissions| Rule::Requires(permissions).check(ext))
                .map_err(deny),
            Applies::Unlisted => match self.unlisted {
                Unlisted::Allow => Ok(()),
                Unlisted::Deny => Err(Denied::Unlisted(access.primitive)),
            },
        }
    }

    /// True if the caller may use the tool, resource or prompt `name` (or the tasks): what a
    /// filtered list shows (the same rules as [`Policy::check`], without building a refusal).
    pub(crate) fn permits(&self, primitive: Primitive, name: &str, principal: Option<&Principal>) -> bool {
        let satisfied = |p: &Permissions| principal.is_some_and(|principal| p.is_satisfied_by(principal));
        match self.applies(primitive, name) {
            Applies::One(permissions) => satisfied(permissions),
            Applies::Templates(uri) => self.matching(uri).all(satisfied),
            Applies::Unlisted => self.unlisted == Unlisted::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{Grant, StringSet};
    use std::time::{Duration, SystemTime};

    fn principal(permissions: &[&str]) -> Principal {
        let mut grant = Grant::new("oc_test", SystemTime::now() + Duration::from_secs(60));
        grant.permissions = StringSet::new(permissions.iter().copied());
        Principal::from_grant(grant)
    }

    fn access(primitive: Primitive, name: &str) -> Access {
        Access {
            primitive,
            name: name.to_owned(),
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        p.tools.insert("t".into(), Permissions::all(["a"]));
        p.resources
            .insert("projects://apollo/readme".into(), Permissions::all(["apollo"]));
        p.templates
            .push((UriTemplate::new("projects://{id}/readme"), Permissions::all(["readme"])));
        p.templates
            .push((UriTemplate::new("projects://{id}/{file}"), Permissions::all(["files"])));
        p
    }

    #[test]
    fn an_exact_uri_wins_over_templates_and_every_matching_template_applies() {
        let p = policy();
        let apollo = access(Primitive::Resource, "projects://apollo/readme");
        assert!(p.permits(apollo.primitive, &apollo.name, Some(&principal(&["apollo"]))));
        let gemini = access(Primitive::Resource, "projects://gemini/readme");
        assert!(
            !p.permits(gemini.primitive, &gemini.name, Some(&principal(&["readme"]))),
            "both templates match"
        );
        assert!(p.permits(gemini.primitive, &gemini.name, Some(&principal(&["readme", "files"]))));
        let template = access(Primitive::Resource, "projects://{id}/readme");
        assert!(
            p.permits(template.primitive, &template.name, Some(&principal(&["readme"]))),
            "the template as written"
        );
        assert!(!p.permits(gemini.primitive, &gemini.name, None));
    }

    #[test]
    fn unlisted_names_follow_the_guards_choice() {
        let mut p = policy();
        for a in [
            access(Primitive::Tool, "other"),
            access(Primitive::Prompt, "p"),
            access(Primitive::Task, ""),
            access(Primitive::Resource, "docs://x"),
        ] {
            assert!(!p.permits(a.primitive, &a.name, Some(&principal(&["a"]))));
            assert!(matches!(
                p.check(&a, &http::Extensions::new()),
                Err(Denied::Unlisted(primitive)) if primitive == a.primitive
            ));
        }
        p.unlisted = Unlisted::Allow;
        assert!(p.permits(Primitive::Tool, "other", None));
        assert!(p.check(&access(Primitive::Task, ""), &http::Extensions::new()).is_ok());
    }
}
