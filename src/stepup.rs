//! Handler-initiated step-up: a handler that learns mid-call that its caller needs more scope
//! (this project is private, this amount needs an approver) says so with an
//! [`InsufficientScope`], and [`WachtAuthLayer`](crate::WachtAuthLayer) answers for it: `403`
//! with `WWW-Authenticate: Bearer error="insufficient_scope"` naming the scopes demanded, then
//! the ones the token already has, with the layer's `resource_metadata` and realm (gRPC:
//! `PERMISSION_DENIED` with the same challenge in `www-authenticate`). The handler's own response
//! is dropped: a demand always wins over what the handler answered.
//!
//! Two ways to hand the demand to the layer:
//!
//! * **As a response** (Axum): `InsufficientScope` is an `IntoResponse`, so a handler returns it
//!   (`Result<T, InsufficientScope>`). The response carries the demand as an extension, which the
//!   layer turns into its refusal. Nothing to configure.
//! * **Through the request** (an rmcp tool, a Tonic method, anything whose response the handler
//!   does not build): with
//!   [`handler_step_up(true)`](crate::WachtAuthConfigBuilder::handler_step_up) the layer gives
//!   every verified request a slot in its extensions; [`InsufficientScope::step_up`] records the
//!   demand there, the handler answers any refusal of its own, and the layer replaces that
//!   answer when it comes back.
//!
//! ```
//! use axum::{Router, extract::Path, routing::get};
//! use tower_wacht::{InsufficientScope, Principal};
//!
//! async fn project(principal: Principal, Path(id): Path<String>) -> Result<String, InsufficientScope> {
//!     let private = id.starts_with("private-");
//!     if private && !principal.has_permission("projects:private") {
//!         return Err(InsufficientScope::new(["projects:private"]));
//!     }
//!     Ok(format!("project {id}"))
//! }
//!
//! let app: Router = Router::new().route("/projects/{id}", get(project));
//! ```
//!
//! The layer can only replace a response that has not started: a streamed answer (an MCP tool
//! answering over SSE, a gRPC server stream) whose handler demands more scope after its first
//! bytes went out ends as the handler ends it, with whatever refusal the handler wrote.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::principal::Principal;
use crate::reject::AuthError;

/// A handler's demand for more scope than its caller's token has: the layer answers `403`
/// `insufficient_scope` for it (see the [module docs](self)).
///
/// Name the scopes the operation needs and the token lacks, as the authorization server
/// knows them (they are what the client asks for next). The challenge lists them, then the
/// scopes the token already has (so a client that replaces its scopes instead of adding to
/// them keeps what it had), never `offline_access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsufficientScope {
    scopes: Vec<Box<str>>,
}

impl InsufficientScope {
    /// A demand for `scopes` (each kept once, in order).
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        let mut demand = InsufficientScope { scopes: Vec::new() };
        demand.add(scopes.into_iter().map(Into::into));
        demand
    }

    /// The scopes demanded.
    pub fn scopes(&self) -> impl Iterator<Item = &str> + '_ {
        self.scopes.iter().map(|s| &**s)
    }

    /// Hands this demand to the auth layer through the request's extensions (rmcp's
    /// `Extension<http::request::Parts>`, `tonic::Request::extensions()`, Axum's `Extensions`):
    /// when the handler's response comes back, the layer answers `403` `insufficient_scope`
    /// instead. Returns `false` when no layer will: no
    /// [`WachtAuthLayer`](crate::WachtAuthLayer) with
    /// [`handler_step_up(true)`](crate::WachtAuthConfigBuilder::handler_step_up) verified this
    /// request (said once at warn level). Either way, answer a refusal of your own as well
    /// (an rmcp `ErrorData`, a `tonic::Status`): it is what the client gets without the layer.
    ///
    /// ```
    /// use tower_wacht::InsufficientScope;
    ///
    /// # fn tool(parts: &http::request::Parts) -> Result<(), String> {
    /// let demand = InsufficientScope::new(["projects:private"]);
    /// demand.step_up(&parts.extensions);
    /// return Err(demand.to_string()); // what the tool answers, replaced by the layer's 403
    /// # }
    /// ```
    pub fn step_up(&self, extensions: &http::Extensions) -> bool {
        match extensions.get::<StepUpSlot>() {
            Some(slot) => {
                slot.record(self);
                true
            }
            None => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "InsufficientScope::step_up: no WachtAuthLayer with handler_step_up(true) verified this request; \
                         the handler's own refusal is answered, without a step-up challenge"
                    );
                }
                false
            }
        }
    }

    fn add(&mut self, scopes: impl IntoIterator<Item = Box<str>>) {
        for scope in scopes {
            if !self.scopes.contains(&scope) {
                self.scopes.push(scope);
            }
        }
    }

    /// The refusal the layer answers for `principal`: the demanded scopes, then the granted ones.
    pub(crate) fn refusal(self, principal: &Principal) -> AuthError {
        let client_id = principal.client_id().as_str();
        tracing::debug!(client_id, required = ?self.scopes, "a handler asked for more scope");
        for scope in &self.scopes {
            crate::telemetry::permission_denied(client_id, scope);
        }
        AuthError::InsufficientScope {
            required: self.scopes.into_iter().map(String::from).collect(),
            granted: principal.scopes().iter().map(str::to_owned).collect(),
        }
    }

    /// The demand for a handler's response: recorded in the request's slot, or carried by the
    /// response (both, united, when a handler did both).
    pub(crate) fn demanded<B>(slot: Option<&StepUpSlot>, response: &mut http::Response<B>) -> Option<Self> {
        let recorded = slot.and_then(StepUpSlot::take);
        let carried = if response.extensions().is_empty() {
            None
        } else {
            response.extensions_mut().remove::<InsufficientScope>()
        };
        match (recorded, carried) {
            (Some(mut demand), Some(more)) => {
                demand.add(more.scopes);
                Some(demand)
            }
            (demand, more) => demand.or(more),
        }
    }
}

impl fmt::Display for InsufficientScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scopes.is_empty() {
            return f.write_str("insufficient scope: no permission grants access to this operation");
        }
        f.write_str("insufficient scope: requires")?;
        for scope in &self.scopes {
            write!(f, " {scope}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InsufficientScope {}

impl From<InsufficientScope> for AuthError {
    /// The refusal without the caller's granted scopes (the layer adds them when it answers).
    fn from(demand: InsufficientScope) -> Self {
        AuthError::InsufficientScope {
            required: demand.scopes.into_iter().map(String::from).collect(),
            granted: Vec::new(),
        }
    }
}

/// Where a handler's demand waits for the layer: one per verified request, in its
/// extensions, while [`handler_step_up`](crate::WachtAuthConfigBuilder::handler_step_up) is on.
/// Clones (rmcp clones the request's `Parts` for each tool) share it.
#[derive(Clone, Default)]
pub(crate) struct StepUpSlot(Arc<Mutex<Option<InsufficientScope>>>);

impl StepUpSlot {
    /// A new slot, put into `extensions`.
    pub(crate) fn insert_into(extensions: &mut http::Extensions) -> Self {
        let slot = StepUpSlot::default();
        extensions.insert(slot.clone());
        slot
    }

    fn record(&self, demand: &InsufficientScope) {
        // A handler that panicked while holding the lock left a demand or nothing: either is
        // still a demand to answer (or none), never a reason to let the response through.
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match held.as_mut() {
            Some(earlier) => earlier.add(demand.scopes.iter().cloned()),
            None => *held = Some(demand.clone()),
        }
    }

    fn take(&self) -> Option<InsufficientScope> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demand_names_each_scope_once_and_reads_like_the_refusal() {
        let demand = InsufficientScope::new(["projects:private", "projects:read", "projects:private"]);
        assert_eq!(
            demand.scopes().collect::<Vec<_>>(),
            ["projects:private", "projects:read"]
        );
        assert_eq!(
            demand.to_string(),
            "insufficient scope: requires projects:private projects:read"
        );
        assert_eq!(demand.to_string(), AuthError::from(demand).to_string());
        let nothing = InsufficientScope::new(Vec::<String>::new());
        assert_eq!(nothing.to_string(), AuthError::from(nothing).to_string());
    }

    #[test]
    fn demands_recorded_in_the_slot_and_carried_by_the_response_are_united() {
        let mut extensions = http::Extensions::new();
        assert!(!InsufficientScope::new(["a"]).step_up(&extensions), "no slot, no layer");
        let slot = StepUpSlot::insert_into(&mut extensions);
        // What rmcp does: the tool gets a clone of the request's parts.
        let cloned = extensions.clone();
        assert!(InsufficientScope::new(["a", "b"]).step_up(&cloned));
        assert!(InsufficientScope::new(["b", "c"]).step_up(&cloned));
        let mut response = http::Response::new(());
        response.extensions_mut().insert(InsufficientScope::new(["d", "a"]));
        let demand = InsufficientScope::demanded(Some(&slot), &mut response).expect("a demand");
        assert_eq!(demand.scopes().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert!(response.extensions().get::<InsufficientScope>().is_none());
        assert_eq!(
            InsufficientScope::demanded(Some(&slot), &mut response),
            None,
            "taken once"
        );
    }
}
