//! Legacy MCP sessions bound to the principal that created them.
//!
//! rmcp (legacy session mode, protocol versions before 2026-07-28) hands out an
//! `Mcp-Session-Id` in the response that created a session and accepts it from anyone who
//! presents it. The guard records which principal (OAuth client and user) the response went
//! to, and refuses a request that presents the session with another principal's token, as
//! the MCP security best practices ask ("Session Hijacking": bind the session to the user).
//! A refused request gets 404, as an unknown session does: it learns nothing.
//!
//! The check fails closed: a session id the guard holds no binding for (never seen, idle for
//! longer than a day, forgotten to stay within the bound, or from before a restart) is refused
//! like a foreign one, and the client starts a new session, as the transport tells it to on a
//! 404. Otherwise an attacker could make the guard forget a victim's binding (by creating many
//! sessions) and then use a leaked session id with their own token.
//!
//! None of this applies where there are no sessions: on a 2026-07-28 request and on a server
//! the guard is told is stateless, the service removes `Mcp-Session-Id` before anything reads
//! it (the transport asks such servers to ignore it), so it is neither checked here nor seen by
//! the server; a legacy request to a stateful server is always checked.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

use crate::principal::Principal;

/// The session header (case-insensitive).
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
/// Most bindings kept. Past it the least recently used is forgotten (logged): its session is
/// then refused and its client starts a new one.
const MAX_SESSIONS: usize = 100_000;
/// A binding is forgotten this long after its last use.
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
    /// Session id → its owner and when it was last used.
    owners: HashMap<Box<str>, (Owner, Instant)>,
    /// Session ids in the order they were recorded, each with the last use known when it was
    /// queued; an entry whose binding was used since is queued again when it reaches the front.
    order: VecDeque<(Box<str>, Instant)>,
}

/// What a request's session header says about it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// No session, or a live session of this principal.
    Allowed,
    /// A session created by another principal (or presented without one), or one the guard
    /// holds no binding for.
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
        let Some(principal) = principal else {
            return SessionCheck::Foreign;
        };
        let caller = Owner::of(principal);
        let mut bindings = self.lock();
        match bindings.owners.get_mut(id) {
            Some((owner, last_used)) if last_used.elapsed() < BINDING_TTL && *owner == caller => {
                *last_used = Instant::now();
                SessionCheck::Allowed
            }
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
        let idle = |since: Instant| now.duration_since(since) >= BINDING_TTL;
        let mut bindings = self.lock();
        let Bindings { owners, order } = &mut *bindings;
        while let Some((_, queued)) = order.front() {
            let full = order.len() >= MAX_SESSIONS;
            if !full && !idle(*queued) {
                break;
            }
            let Some((old, queued)) = order.pop_front() else {
                break;
            };
            match owners.get(&old).map(|(_, last_used)| *last_used) {
                // Used since it was queued: queued again with its last use (once per use).
                Some(last_used) if last_used != queued && !idle(last_used) => order.push_back((old, last_used)),
                Some(last_used) => {
                    if !idle(last_used) {
                        tracing::warn!(
                            limit = MAX_SESSIONS,
                            "MCP session bindings full: the least recently used is forgotten"
                        );
                    }
                    owners.remove(&old);
                }
                // Forgotten already (its session ended).
                None => {}
            }
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
        let mut twice = with_session("s1");
        twice.append(SESSION_HEADER, HeaderValue::from_static("s2"));
        assert_eq!(b.check(&twice, Some(&alice)), SessionCheck::Foreign);
        b.forget(&with_session("s1"));
        assert_eq!(b.check(&with_session("s1"), Some(&alice)), SessionCheck::Foreign);
    }

    #[test]
    fn a_session_the_guard_holds_no_binding_for_is_refused() {
        let b = SessionBindings::default();
        assert_eq!(
            b.check(&with_session("never-seen"), Some(&principal("oc_a", 1))),
            SessionCheck::Foreign
        );
        assert_eq!(
            b.check(&HeaderMap::new(), Some(&principal("oc_a", 1))),
            SessionCheck::Allowed
        );
    }

    #[test]
    fn at_the_bound_the_least_recently_used_binding_is_forgotten() {
        let b = SessionBindings::default();
        let alice = principal("oc_a", 1);
        let mallory = principal("oc_m", 2);
        b.record(false, &with_session("victim"), Some(&alice));
        b.record(false, &with_session("second"), Some(&alice));
        // The victim's session stays in use; the attacker fills the table.
        assert_eq!(b.check(&with_session("victim"), Some(&alice)), SessionCheck::Allowed);
        for i in 0..MAX_SESSIONS {
            b.record(false, &with_session(&format!("m{i}")), Some(&mallory));
        }
        assert_eq!(b.lock().owners.len(), MAX_SESSIONS);
        // Forgotten or kept, a binding never serves another principal.
        assert_eq!(b.check(&with_session("victim"), Some(&mallory)), SessionCheck::Foreign);
        assert_eq!(b.check(&with_session("second"), Some(&mallory)), SessionCheck::Foreign);
        // The least recently used ("second") went first; the victim's, used since, was kept.
        assert_eq!(b.check(&with_session("second"), Some(&alice)), SessionCheck::Foreign);
        assert_eq!(b.check(&with_session("victim"), Some(&alice)), SessionCheck::Allowed);
    }
}
