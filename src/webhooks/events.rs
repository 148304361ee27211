//! Wacht's events (`{"type": ..., "timestamp": ..., "data": {...}}`) and what each does here.
//! The table is in the module docs of [`webhooks`](super).

use serde_json::{Map, Value};

use crate::change::Target;

/// What an event asks of the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Wacht ended the session: refuse its JWTs (`sid`).
    EndSession(String),
    /// Void the answers of these (one or two) targets.
    Invalidate(Vec<Target>),
    /// Nothing to do here (the event names nothing a cached answer carries).
    Nothing,
}

/// An event: its name as a metric label (a known name, or `unknown`), and its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) label: &'static str,
    pub(crate) action: Action,
}

/// Why a body is not an event this receiver can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Not the envelope: not JSON (or a key repeated), not an object, no string `type`.
    NotAnEvent,
    /// A known event without the id its action needs (or an id of the wrong form).
    MissingId,
}

/// The events that end access, with what their payload names.
const EVENTS: &[(&str, Kind)] = &[
    ("session.deleted", Kind::Session),
    ("session.expired", Kind::Session),
    ("user.deleted", Kind::User),
    ("user.password.updated", Kind::User),
    ("user.mfa.disabled", Kind::User),
    ("api_key.deleted", Kind::ApiKey),
    ("api_key.rotated", Kind::ApiKey),
    ("organization.deleted", Kind::Organization),
    ("workspace.deleted", Kind::Workspace),
    ("organization.member.removed", Kind::OrganizationMembership),
    ("organization.member.role.updated", Kind::OrganizationMembership),
    ("workspace.member.removed", Kind::WorkspaceMembership),
    ("workspace.member.role.updated", Kind::WorkspaceMembership),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Session,
    User,
    ApiKey,
    Organization,
    Workspace,
    OrganizationMembership,
    WorkspaceMembership,
}

/// Reads a signed body. `Ok` with `unknown` and [`Action::Nothing`] for an event this receiver
/// does not know; the event's `type` is then in the second field (for a debug log).
pub(crate) fn read(body: &[u8]) -> Result<(Event, Option<String>), Unreadable> {
    let Some(Value::Object(envelope)) = crate::json::parse_strict(body) else {
        return Err(Unreadable::NotAnEvent);
    };
    let Some(Value::String(name)) = envelope.get("type") else {
        return Err(Unreadable::NotAnEvent);
    };
    let Some(&(label, kind)) = EVENTS.iter().find(|(known, _)| known == name) else {
        return Ok((
            Event {
                label: "unknown",
                action: Action::Nothing,
            },
            Some(name.clone()),
        ));
    };
    let data = match envelope.get("data") {
        Some(Value::Object(data)) => data,
        _ => return Err(Unreadable::MissingId),
    };
    let id = |field: &str| data.get(field).and_then(numeric_id);
    let entity = || id("entity_id").ok_or(Unreadable::MissingId);
    let action = match kind {
        Kind::Session => Action::EndSession(session_id(data).ok_or(Unreadable::MissingId)?),
        Kind::User => {
            // `user.mfa.disabled` names the user as `user_id` (and, per Wacht's table, as
            // `entity_id`); the others as `entity_id`. Both, when they differ: voiding an
            // answer too many costs a gateway call, one too few keeps access.
            let mut users: Vec<Target> = [id("user_id"), id("entity_id")]
                .into_iter()
                .flatten()
                .map(Target::User)
                .collect();
            users.dedup();
            if users.is_empty() {
                return Err(Unreadable::MissingId);
            }
            Action::Invalidate(users)
        }
        Kind::ApiKey => Action::Invalidate(vec![Target::ApiKey(entity()?)]),
        Kind::Organization => Action::Invalidate(vec![Target::Organization(entity()?)]),
        Kind::Workspace => Action::Invalidate(vec![Target::Workspace(entity()?)]),
        Kind::OrganizationMembership => Action::Invalidate(vec![Target::OrganizationMembership(entity()?)]),
        Kind::WorkspaceMembership => Action::Invalidate(vec![Target::WorkspaceMembership(entity()?)]),
    };
    Ok((Event { label, action }, None))
}

/// A Wacht id: a JSON string of decimal digits or a non-negative JSON integer, fitting an
/// `i64`.
fn numeric_id(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        Value::Number(n) => n.as_i64().filter(|id| *id >= 0),
        _ => None,
    }
}

/// The session id (`data.entity_id`) as a JWT's `sid` carries it: a string (at most 256
/// bytes, no control characters) or a non-negative integer in decimal.
fn session_id(data: &Map<String, Value>) -> Option<String> {
    match data.get("entity_id")? {
        Value::String(s) if !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) => Some(s.clone()),
        value => numeric_id(value).map(|id| id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(body: &str) -> Result<Action, Unreadable> {
        read(body.as_bytes()).map(|(event, _)| event.action)
    }

    #[test]
    fn each_event_maps_to_its_action() {
        let event = |name: &str, data: &str| {
            format!(r#"{{"type":"{name}","timestamp":"2026-03-04T10:00:00.000Z","data":{data}}}"#)
        };
        assert_eq!(
            action(&event(
                "session.deleted",
                r#"{"entity_id":"590011223344556677","entity_type":"session"}"#
            )),
            Ok(Action::EndSession("590011223344556677".into()))
        );
        assert_eq!(
            action(&event("session.expired", r#"{"entity_id":590011223344556677}"#)),
            Ok(Action::EndSession("590011223344556677".into()))
        );
        assert_eq!(
            action(&event("user.deleted", r#"{"entity_id":"42","id":"42"}"#)),
            Ok(Action::Invalidate(vec![Target::User(42)]))
        );
        assert_eq!(
            action(&event(
                "user.mfa.disabled",
                r#"{"entity_id":"42","id":"7","user_id":"42"}"#
            )),
            Ok(Action::Invalidate(vec![Target::User(42)]))
        );
        assert_eq!(
            action(&event("user.mfa.disabled", r#"{"entity_id":"43","user_id":"42"}"#)),
            Ok(Action::Invalidate(vec![Target::User(42), Target::User(43)]))
        );
        assert_eq!(
            action(&event("api_key.rotated", r#"{"entity_id":"7001"}"#)),
            Ok(Action::Invalidate(vec![Target::ApiKey(7001)]))
        );
        assert_eq!(
            action(&event("workspace.member.removed", r#"{"entity_id":"9"}"#)),
            Ok(Action::Invalidate(vec![Target::WorkspaceMembership(9)]))
        );
        let unknown = read(event("invitation.created", "{}").as_bytes());
        assert_eq!(
            unknown.map(|(e, name)| (e.label, e.action, name)),
            Ok(("unknown", Action::Nothing, Some("invitation.created".to_owned())))
        );
    }

    #[test]
    fn what_an_action_cannot_use_is_refused() {
        for body in [
            "not json",
            "[]",
            r#"{"data":{}}"#,
            r#"{"type":1}"#,
            r#"{"type":"user.deleted","type":"user.created","data":{"entity_id":"1"}}"#,
        ] {
            assert_eq!(action(body), Err(Unreadable::NotAnEvent), "{body}");
        }
        for body in [
            r#"{"type":"user.deleted"}"#,
            r#"{"type":"user.deleted","data":{}}"#,
            r#"{"type":"user.deleted","data":{"entity_id":"-1"}}"#,
            r#"{"type":"user.deleted","data":{"entity_id":"99999999999999999999"}}"#,
            r#"{"type":"api_key.deleted","data":{"entity_id":"0x10"}}"#,
            r#"{"type":"session.deleted","data":{"entity_id":""}}"#,
            r#"{"type":"session.deleted","data":{"entity_id":"a\nb"}}"#,
            r#"{"type":"session.deleted","data":{"entity_id":-3}}"#,
        ] {
            assert_eq!(action(body), Err(Unreadable::MissingId), "{body}");
        }
    }
}
