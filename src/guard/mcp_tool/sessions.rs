//! Legacy MCP sessions bound to the principal that created them.
//!
//! rmcp (legacy session mode, protocol versions before 2026-07-28) hands out an
//! `Mcp-Session-Id` in the response that created a session and accepts it from anyone who
//! presents it. The guard records which principal (OAuth client and user) the response went
//! to, and refuses a request that presents the session with another principal's token, as
//! the MCP security best practices ask ("Session Hijacking": bind the session to the user).
//! A refused request gets 404, as an unknown session does: it learns nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

use crate::principal::Principal;

/// The session header (case-insensitive).
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
/// Most bindings kept. Past it the oldest is forgotten (logged): its session, if rmcp still
/// keeps it, is then no longer bound.
const MAX_SESSIONS: usize = 100_000;
/// A binding is forgotten this long after it was made.
const BINDING_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Who a session belongs to: the principal's [`Principal::binding_key`] (issuer, deployment,
/// OAuth client, end user).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner(String);

impl Owner {
    fn of(principal: &Principal) -> Self {
        Owner(principal.binding_key())
    }
}

/// Session id → owner, bounded.
#[derive(Debug, Default)]
pub(crate) struct SessionBindings {
    inner: Mutex<Bindings>,
}

#[derive(Debug, Default)]
struct Bindings {
    owners: HashMap<Box<str>, (Owner, Instant)>,
    order: VecDeque<(Box<str>, Instant)>,
}

/// What a request's session header says about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// No session, an unknown one, or one of this principal.
    Allowed,
    /// A session created by another principal (or presented without one).
    Foreign,
}

impl SessionBindings {
    fn lock(&self) -> MutexGuard<'_, Bindings> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Judges a request by its `Mcp-Session-Id` (a repeated header is foreign: ambiguous).
    pub(crate) fn check(&self, headers: &HeaderMap, principal: Option<&Principal>) -> SessionCheck {
        let mut values = headers.get_all(SESSION_HEADER).iter();
        let Some(id) = values.next() else {
            return SessionCheck::Allowed;
        };
        if values.next().is_some() {
            return SessionCheck::Foreign;
        }
        let Ok(id) = id.to_str() else {
            return SessionCheck::Foreign;
        };
        let bindings = self.lock();
        match (bindings.owners.get(id), principal) {
            (None, _) => SessionCheck::Allowed,
            (Some((owner, at)), Some(p)) if at.elapsed() < BINDING_TTL && *owner == Owner::of(p) => {
                SessionCheck::Allowed
            }
            (Some((_, at)), _) if at.elapsed() >= BINDING_TTL => SessionCheck::Allowed,
            _ => SessionCheck::Foreign,
        }
    }

    /// Records the owner of a session a response created (its `Mcp-Session-Id`), unless the
    /// request already presented one.
    pub(crate) fn record(&self, request_had_session: bool, response: &HeaderMap, principal: Option<&Principal>) {
        let (Some(principal), Some(id)) = (principal, response.get(SESSION_HEADER).and_then(|v| v.to_str().ok()))
        else {
            return;
        };
        if request_had_session {
            return;
        }
        let now = Instant::now();
        let mut bindings = self.lock();
        let Bindings { owners, order } = &mut *bindings;
        while let Some((old, at)) = order.front() {
            let expired = now.duration_since(*at) >= BINDING_TTL;
            if !expired && order.len() < MAX_SESSIONS {
                break;
            }
            if !expired {
                tracing::warn!(
                    limit = MAX_SESSIONS,
                    "MCP session bindings full: the oldest is forgotten"
                );
            }
            if owners.get(old).is_some_and(|(_, made)| made == at) {
                owners.remove(old);
            }
            order.pop_front();
        }
        owners.insert(id.into(), (Owner::of(principal), now));
        order.push_back((id.into(), now));
    }

    /// Forgets a session (after a successful `DELETE`).
    pub(crate) fn forget(&self, headers: &HeaderMap) {
        if let Some(id) = headers.get(SESSION_HEADER).and_then(|v: &HeaderValue| v.to_str().ok()) {
            self.lock().owners.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Grant;
    use std::time::SystemTime;

    fn principal(client: &str, user: i64) -> Principal {
        let mut grant = Grant::new(client, SystemTime::now());
        grant.owner_user_id = Some(crate::principal::UserId(user));
        Principal::from_grant(grant)
    }

    fn with_session(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SESSION_HEADER, HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn a_session_serves_only_the_principal_that_created_it() {
        let b = SessionBindings::default();
        let alice = principal("oc_a", 1);
        b.record(false, &with_session("s1"), Some(&alice));
        assert_eq!(b.check(&with_session("s1"), Some(&alice)), SessionCheck::Allowed);
        assert_eq!(
            b.check(&with_session("s1"), Some(&principal("oc_a", 2))),
            SessionCheck::Foreign
        );
        assert_eq!(
            b.check(&with_session("s1"), Some(&principal("oc_b", 1))),
            SessionCheck::Foreign
        );
        assert_eq!(b.check(&with_session("s1"), None), SessionCheck::Foreign);
        assert_eq!(
            b.check(&with_session("s2"), Some(&principal("oc_b", 1))),
            SessionCheck::Allowed
        );
        let mut twice = with_session("s1");
        twice.append(SESSION_HEADER, HeaderValue::from_static("s2"));
        assert_eq!(b.check(&twice, Some(&alice)), SessionCheck::Foreign);
        b.forget(&with_session("s1"));
        assert_eq!(
            b.check(&with_session("s1"), Some(&principal("oc_b", 1))),
            SessionCheck::Allowed
        );
    }
}
