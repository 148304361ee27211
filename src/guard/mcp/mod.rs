//! The MCP guard: per-primitive permissions for MCP servers over Streamable HTTP.
//!
//! [`McpGuardLayer`] sits in front of the MCP service (inside
//! [`WachtAuthLayer`](crate::WachtAuthLayer)), reads the JSON-RPC body of each POST (bounded,
//! handed on intact) and judges what it touches:
//!
//! | request | judged by |
//! | --- | --- |
//! | `tools/call` | the [`tool`](McpGuardLayer::tool) rule of `params.name` |
//! | `resources/read`, `resources/subscribe`, `resources/unsubscribe`, `resources/directory/read`; each URI of a 2026-07-28 `subscriptions/listen` filter's `resourceSubscriptions` | the [`resource`](McpGuardLayer::resource) rule of `params.uri`, else every [`resource_template`](McpGuardLayer::resource_template) rule it matches |
//! | `prompts/get` | the [`prompt`](McpGuardLayer::prompt) rule of `params.name` |
//! | `completion/complete` | the prompt or resource (template) rule its `ref` names |
//! | `tasks/*` | the [`tasks`](McpGuardLayer::tasks) rule |
//! | anything else (`initialize`, `server/discover`, lists, `ping`, notifications) | passes |
//!
//! A caller without the permissions gets HTTP 403 `insufficient_scope` naming the scopes to
//! ask for (MCP step-up; an any-of rule names its first alternative), before anything runs;
//! without a principal (the auth layer in optional mode), 401. A JSON-RPC batch (legacy
//! protocol versions) is judged message by message and refused whole if one is.
//!
//! **Unlisted names are refused by default** ([`deny_unlisted`](McpGuardLayer::deny_unlisted)):
//! a tool, resource or prompt no rule names, or a task without a `tasks` rule, is answered
//! as the server answers a name it does not have: a JSON-RPC error `-32602` (Invalid params;
//! the code MCP uses for an unknown tool or prompt and, since 2026-07-28, an unknown resource)
//! for the request's id, with HTTP 200 (a notification or a batch gets 400 and `id: null`).
//! Not a 403: no scope would open it, and a 403 `insufficient_scope` sends MCP clients into
//! a re-authorization that cannot help. Mark tools any caller may use with
//! [`Permissions::authenticated`]. [`allow_unlisted`](McpGuardLayer::allow_unlisted) restores
//! the open behaviour of earlier releases (logged at warn).
//!
//! **Tasks** (`tasks/get`, `tasks/update`, `tasks/cancel`, and `tasks/list`, `tasks/result`
//! of 2025-11-25) are named by a task id, a handle the server minted when a task-augmented
//! request (a `tools/call`, judged by its tool's rule) created the task: no rule can list it
//! in advance. So one rule covers every `tasks/*` request, and the handler must bind each task
//! to the caller that created it, as for any state handle: key tasks by
//! [`Principal::binding_key`](crate::Principal::binding_key) and answer a task id presented by
//! anyone else as unknown.
//!
//! **List filtering** (opt-in, [`filter_lists`](McpGuardLayer::filter_lists)): the answer to
//! `tools/list`, `resources/list`, `resources/templates/list` or `prompts/list` keeps only the
//! entries the caller may use by the same rules (JSON or SSE; every other field and the
//! JSON-RPC id kept byte for byte; an SSE answer event by event; an answer the guard cannot
//! filter is replaced by a JSON-RPC error, never passed on).
//!
//! A POST body the guard cannot read is refused with 400 and a JSON-RPC error, whatever
//! server sits behind it: `-32700` when it is not JSON or repeats a key anywhere (parsers
//! disagree on which repeated key counts), `-32600` when it is not JSON-RPC 2.0 messages the
//! guard can classify (a `tools/call` without a string `params.name`, for example).
//!
//! **MCP 2026-07-28 mirrored headers.** When the request's single `MCP-Protocol-Version` is
//! `2026-07-28` or later, its `Mcp-Method` and `Mcp-Name` headers are read as rmcp reads them
//! (at most once each, visible ASCII, `Mcp-Name` decoded from `=?base64?…?=`) and must say
//! what the body says: `Mcp-Method` on every request, `Mcp-Name` on `tools/call`,
//! `resources/read` and `prompts/get` (where the transport requires them; elsewhere, and on
//! notifications, a header that is sent must still match). A repeated, undecodable, missing
//! or differing header is answered 400 with JSON-RPC [`HEADER_MISMATCH`] (`-32020`) by the
//! guard itself, whatever the rules say and whatever server sits behind it; the decision is
//! always the body's. A batch is answered 400 `-32600` (a 2026-07-28 body is one message).
//! An `MCP-Protocol-Version` that is repeated or not a `YYYY-MM-DD` version is refused as
//! malformed (400 `-32020`); older or absent versions (legacy clients) are judged from the
//! body alone.
//!
//! **Sessions bound to their principal.** In rmcp's legacy session mode a session id is handed
//! out by the response that created the session; the guard records the principal (OAuth
//! client, user, issuer) it went to, and a later request (POST, GET or DELETE) presenting the
//! session with another principal's token, or a session the guard holds no binding for, gets
//! 404 with a JSON-RPC error, as an unknown session does. 2026-07-28 has no sessions: on a
//! 2026-07-28 request, and on every request to a server marked
//! [`stateless`](McpGuardLayer::stateless), `Mcp-Session-Id` is ignored, as the transport asks:
//! removed before the server sees it, so it can neither be refused nor reach a session. Bind
//! 2026-07-28 state handles to the caller in the handler, with the [`Principal`] it receives.
//!
//! ```
//! use tower_wacht::{McpGuardLayer, Permissions};
//!
//! let guard = McpGuardLayer::new()
//!     .tool("whoami", Permissions::authenticated())
//!     .tool("delete_project", Permissions::all(["projects:write"]))
//!     .tool("run_agent", Permissions::any(["agents:run", "mcp:admin"]))
//!     .resource("docs://guide", Permissions::authenticated())
//!     .resource_template("projects://{id}/readme", Permissions::all(["projects:read"]))
//!     .prompt("summarize_project", Permissions::all(["projects:read"]))
//!     .tasks(Permissions::authenticated())
//!     .filter_lists();
//! // Router::new().route_service("/mcp", mcp_service).layer(guard).layer(auth)
//! ```
//!
//! **Migrating from `McpToolGuardLayer`** (still available, deprecated, as an alias): rename
//! it `McpGuardLayer`. A new guard refuses what no rule lists, so list every tool (those any
//! caller may use with [`Permissions::authenticated`]), or keep the old behaviour for now
//! with [`allow_unlisted`](McpGuardLayer::allow_unlisted). A stateless server (rmcp
//! `with_legacy_session_mode(false)`) should say so with
//! [`stateless`](McpGuardLayer::stateless).
//!
//! [`Principal`]: crate::Principal
//! [`Permissions::authenticated`]: crate::Permissions::authenticated

mod filter;
mod future;
mod headers;
mod message;
mod policy;
mod service;
mod sessions;
mod template;

use std::sync::Arc;

use tower_layer::Layer;

pub use self::future::McpGuardFuture;
use self::message::Primitive;
use self::policy::{Policy, Unlisted};
pub use self::service::McpGuard;
use self::sessions::SessionBindings;
use self::template::UriTemplate;
use super::Permissions;
use crate::principal::Principal;

/// JSON-RPC error code of a request whose mirrored headers disagree with its body (MCP
/// 2026-07-28 `HeaderMismatch`).
pub const HEADER_MISMATCH: i32 = -32020;

/// JSON-RPC error code of a request for a tool, resource or prompt that no rule lists (and of
/// a task request without a tasks rule), under [`McpGuardLayer::deny_unlisted`]: Invalid
/// params, what MCP servers answer for a name they do not have.
pub const UNLISTED: i32 = -32602;

/// Default upper bound on a JSON-RPC request body the guard reads (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Default upper bound on a list answer the guard filters: a JSON body, or one SSE event
/// (4 MiB).
pub const DEFAULT_MAX_LIST_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Layer that requires permissions per MCP tool, resource, prompt and for tasks. See the
/// module docs.
#[derive(Debug, Clone)]
pub struct McpGuardLayer {
    policy: Arc<Policy>,
    max_body_bytes: usize,
    max_list_response_bytes: usize,
    filter_lists: bool,
    stateless: bool,
    /// Legacy MCP sessions and the principals that created them (shared by every clone).
    sessions: Arc<SessionBindings>,
}

/// Renamed [`McpGuardLayer`]. Its `new()` now refuses unlisted tools (see the module docs'
/// migration).
#[deprecated(
    note = "renamed McpGuardLayer; new() now refuses tools no rule lists: list them, or call allow_unlisted()"
)]
pub type McpToolGuardLayer = McpGuardLayer;

/// Renamed [`McpGuard`].
#[deprecated(note = "renamed McpGuard")]
pub type McpToolGuard<S> = McpGuard<S>;

/// Renamed [`McpGuardFuture`].
#[deprecated(note = "renamed McpGuardFuture")]
pub type McpToolGuardFuture<F, ResB, E> = McpGuardFuture<F, ResB, E>;

impl Default for McpGuardLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// What an MCP request touches, for [`McpGuardLayer::permits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum McpPrimitive<'a> {
    /// A tool, by name.
    Tool(&'a str),
    /// A resource, by URI (or a resource template, as written).
    Resource(&'a str),
    /// A prompt, by name.
    Prompt(&'a str),
    /// Any task.
    Task,
}

impl McpGuardLayer {
    /// A guard with no rules: every tool, resource, prompt and task is refused until a rule
    /// lists it ([`deny_unlisted`](Self::deny_unlisted)); the default body bound; lists not
    /// filtered; legacy sessions bound to their principal.
    pub fn new() -> Self {
        McpGuardLayer {
            policy: Arc::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_list_response_bytes: DEFAULT_MAX_LIST_RESPONSE_BYTES,
            filter_lists: false,
            stateless: false,
            sessions: Arc::default(),
        }
    }

    fn policy(&mut self) -> &mut Policy {
        Arc::make_mut(&mut self.policy)
    }

    /// Requires `permissions` to call tool `name` (`tools/call`).
    pub fn tool(mut self, name: impl Into<Box<str>>, permissions: Permissions) -> Self {
        self.policy().tools.insert(name.into(), permissions);
        self
    }

    /// Requires `permissions` to read, subscribe to or unsubscribe from the resource at exactly
    /// `uri` (compared as written, case-sensitive). An exact rule wins over templates.
    pub fn resource(mut self, uri: impl Into<Box<str>>, permissions: Permissions) -> Self {
        self.policy().resources.insert(uri.into(), permissions);
        self
    }

    /// Requires `permissions` for every resource whose URI matches `template` (RFC 6570
    /// `{var}`: one or more characters other than `/ ? # { }`; `{+var}`: may also hold `/`),
    /// e.g. `projects://{id}/readme`. A URI matching several templates needs every one's
    /// permissions. A template with other syntax (`{?q}`, `{/p}`, `{a,b}`, …) matches no URI
    /// (logged at warn): list those resources exactly. The template as written also names the
    /// rule of its `resources/templates/list` entry and of `completion/complete` references.
    pub fn resource_template(mut self, template: &str, permissions: Permissions) -> Self {
        let policy = self.policy();
        policy.templates.retain(|(t, _)| t.text() != template);
        policy.templates.push((UriTemplate::new(template), permissions));
        self
    }

    /// Requires `permissions` to get prompt `name` (`prompts/get`, and completing its
    /// arguments).
    pub fn prompt(mut self, name: impl Into<Box<str>>, permissions: Permissions) -> Self {
        self.policy().prompts.insert(name.into(), permissions);
        self
    }

    /// Requires `permissions` for every `tasks/*` request. A task id is a handle the server
    /// minted, not a name: the handler must refuse a task id presented by anyone but the
    /// caller that created the task (see the module docs).
    pub fn tasks(mut self, permissions: Permissions) -> Self {
        self.policy().tasks = Some(permissions);
        self
    }

    /// Refuses tools, resources and prompts no rule lists, and tasks without a `tasks` rule
    /// (the default; JSON-RPC `-32602`, see the module docs).
    pub fn deny_unlisted(mut self) -> Self {
        self.policy().unlisted = Unlisted::Deny;
        self
    }

    /// **Weakens security.** Lets any caller the auth layer admits use tools, resources and
    /// prompts no rule lists, and tasks when there is no `tasks` rule: a tool added later, or
    /// misspelled in a rule, is open to every token. What `McpToolGuardLayer` did in earlier
    /// releases; logged at warn.
    pub fn allow_unlisted(mut self) -> Self {
        tracing::warn!(
            "McpGuardLayer::allow_unlisted: tools, resources and prompts without a rule are open to every caller"
        );
        self.policy().unlisted = Unlisted::Allow;
        self
    }

    /// Filters the answers to `tools/list`, `resources/list`, `resources/templates/list` and
    /// `prompts/list` to the entries the caller may use (off by default). See the module docs.
    pub fn filter_lists(mut self) -> Self {
        self.filter_lists = true;
        self
    }

    /// The server behind hands out no sessions (rmcp `with_legacy_session_mode(false)`): an
    /// `Mcp-Session-Id` a client sends is ignored (removed before the server) instead of
    /// refused as a session the guard never bound. A server that does hand out sessions then
    /// never sees them again and refuses their requests (fail closed; logged at warn).
    pub fn stateless(mut self) -> Self {
        self.stateless = true;
        self
    }

    /// Largest body read (default 1 MiB). A larger POST is refused with 413 rather than let
    /// through unchecked.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Largest list answer filtered: a JSON body, or one SSE event (default 4 MiB). A larger
    /// one is replaced by a JSON-RPC error.
    pub fn max_list_response_bytes(mut self, n: usize) -> Self {
        self.max_list_response_bytes = n;
        self
    }

    /// The permissions a tool requires, if a rule lists it.
    pub fn required_for(&self, tool: &str) -> Option<&Permissions> {
        self.policy.tools.get(tool)
    }

    /// True if `principal` (`None`: an anonymous caller) may use `primitive` under this
    /// guard's rules, unlisted names included: for handlers that check again, and for
    /// building lists by hand.
    pub fn permits(&self, primitive: McpPrimitive<'_>, principal: Option<&Principal>) -> bool {
        let (primitive, name) = match primitive {
            McpPrimitive::Tool(name) => (Primitive::Tool, name),
            McpPrimitive::Resource(uri) => (Primitive::Resource, uri),
            McpPrimitive::Prompt(name) => (Primitive::Prompt, name),
            McpPrimitive::Task => (Primitive::Task, ""),
        };
        self.policy.permits(primitive, name, principal)
    }
}

impl<S> Layer<S> for McpGuardLayer {
    type Service = McpGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        McpGuard::new(self.clone(), inner)
    }
}

/// The tools a JSON-RPC POST body calls, as the guard reads it; `None` when the guard refuses
/// the body as unreadable. For fuzzing: the property is that a body it accepts calls exactly
/// the tools `serde_json` reads in it.
#[doc(hidden)]
pub fn classify_mcp_body(body: &[u8]) -> Option<Vec<String>> {
    message::tool_calls(body).ok()
}

/// [`classify_mcp_body`] with the request's headers: `None` when the guard refuses the
/// request (unreadable body; a repeated or malformed `MCP-Protocol-Version`; MCP 2026-07-28
/// mirrored headers that are repeated, undecodable, missing or differ from the body; a
/// 2026-07-28 batch). For fuzzing: an accepted 2026-07-28 request's `Mcp-Method` and
/// `Mcp-Name` say what its body says.
#[doc(hidden)]
pub fn classify_mcp_request(headers: &http::HeaderMap, body: &[u8]) -> Option<Vec<String>> {
    let mirrored = headers::read(headers).ok()?;
    let body = message::read(body).ok()?;
    if let Some(mirrored) = &mirrored {
        headers::same_as_body(mirrored, &body).ok()?;
    }
    Some(body.tools())
}
