//! Per-tool permission guards for MCP servers over Streamable HTTP.
//!
//! [`McpToolGuardLayer`] sits in front of the MCP service (inside
//! [`WachtAuthLayer`](crate::WachtAuthLayer)), reads the JSON-RPC body of each POST (bounded),
//! and for a `tools/call` of a tool mapped to required permissions that the principal lacks,
//! answers HTTP 403 `insufficient_scope` with those scopes in the challenge before the tool
//! runs, which is what MCP clients use for step-up authorization. A JSON-RPC batch is checked
//! element by element and refused as a whole if any call in it is. Other methods, unmapped
//! tools and non-POST requests pass through unchanged; the body is handed on intact.
//!
//! A POST body the guard cannot read is refused with 400 and a JSON-RPC error, whatever
//! server sits behind it: `-32700` when it is not JSON or repeats a key anywhere (parsers
//! disagree on which repeated key counts), `-32600` when it is not JSON-RPC 2.0 messages the
//! guard can classify (a `tools/call` without a string `params.name`, for example).
//!
//! **MCP 2026-07-28 mirrored headers.** When the request's single `MCP-Protocol-Version` is
//! `2026-07-28` or later, its `Mcp-Method` and `Mcp-Name` headers are read as rmcp reads them
//! (at most once each, visible ASCII, `Mcp-Name` decoded from `=?base64?…?=`). A `tools/call`
//! they name that the caller may not make is refused (403) before the body is read; a call
//! they let through is still judged from the body, which must say the same: a repeated,
//! undecodable, missing or differing header, or a batch, is answered 400 with JSON-RPC
//! [`HEADER_MISMATCH`] (`-32020`) by the guard itself, whatever server sits behind it. Older
//! or absent versions (legacy clients) are judged from the body alone. A repeated
//! `MCP-Protocol-Version` is refused the same way: components could disagree on which counts.
//!
//! **Sessions bound to their principal.** In rmcp's legacy session mode a session id is handed
//! out by the response that created the session; the guard records the principal (OAuth
//! client, user, issuer) it went to, and a later request (POST, GET or DELETE) presenting the
//! session with another principal's token gets 404 with a JSON-RPC error, as an unknown
//! session does. The 2026-07-28 protocol has no sessions: its state handles are tool
//! arguments, which a handler binds to the caller with the [`Principal`] it receives (key
//! them by client id and user, and refuse a handle presented by anyone else).
//!
//! ```
//! use tower_wacht::{McpToolGuardLayer, Permissions};
//!
//! let guard = McpToolGuardLayer::new()
//!     .tool("delete_project", Permissions::all(["projects:write"]))
//!     .tool("run_agent", Permissions::any(["agents:run", "mcp:admin"]));
//! // Router::new().route_service("/mcp", mcp_service).layer(guard).layer(auth)
//! ```

mod headers;
mod message;
mod sessions;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use self::headers::{HeaderError, Mirrored};
use self::message::{Body as JsonRpcBody, tool_calls};
use self::sessions::{SESSION_HEADER, SessionBindings, SessionCheck};
use super::Permissions;
use crate::body::ResponseBody;
use crate::principal::Principal;
use crate::reject::{BodyRefusal, is_grpc, refusal, render};

/// JSON-RPC error code of a request whose mirrored headers disagree with its body (MCP
/// 2026-07-28 `HeaderMismatch`).
pub const HEADER_MISMATCH: i32 = -32020;

/// Default upper bound on a JSON-RPC request body the guard reads (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Layer that requires permissions per MCP tool. See the module docs.
#[derive(Debug, Clone)]
pub struct McpToolGuardLayer {
    tools: Arc<HashMap<Box<str>, Permissions>>,
    max_body_bytes: usize,
    /// Legacy MCP sessions and the principals that created them (shared by every clone).
    sessions: Arc<SessionBindings>,
}

impl Default for McpToolGuardLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl McpToolGuardLayer {
    /// A guard with no tool rules and the default body bound.
    pub fn new() -> Self {
        McpToolGuardLayer {
            tools: Arc::new(HashMap::new()),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            sessions: Arc::default(),
        }
    }

    /// Requires `permissions` to call tool `name`.
    pub fn tool(mut self, name: impl Into<Box<str>>, permissions: Permissions) -> Self {
        Arc::make_mut(&mut self.tools).insert(name.into(), permissions);
        self
    }

    /// Largest body read (default 1 MiB). A larger POST is refused with 413 rather than let
    /// through unchecked.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// The permissions a tool requires, if it is mapped.
    pub fn required_for(&self, tool: &str) -> Option<&Permissions> {
        self.tools.get(tool)
    }
}

impl<S> Layer<S> for McpToolGuardLayer {
    type Service = McpToolGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        McpToolGuard {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service produced by [`McpToolGuardLayer`].
#[derive(Debug, Clone)]
pub struct McpToolGuard<S> {
    inner: S,
    guard: McpToolGuardLayer,
}

/// The tools a JSON-RPC POST body calls, as the guard reads it; `None` when the guard refuses
/// the body as unreadable. For fuzzing: the property is that a body it accepts calls exactly
/// the tools `serde_json` reads in it.
#[doc(hidden)]
pub fn classify_mcp_body(body: &[u8]) -> Option<Vec<String>> {
    tool_calls(body).ok()
}

/// [`classify_mcp_body`] with the request's headers: `None` when the guard refuses the
/// request (unreadable body, or MCP 2026-07-28 mirrored headers that are repeated, undecodable
/// or differ from the body). For fuzzing: an accepted 2026-07-28 request's `Mcp-Method` and
/// `Mcp-Name` say what its body says.
#[doc(hidden)]
pub fn classify_mcp_request(headers: &http::HeaderMap, body: &[u8]) -> Option<Vec<String>> {
    let mirrored = headers::read(headers).ok()?;
    let body = message::read(body).ok()?;
    if let Some(mirrored) = &mirrored {
        same_as_body(mirrored, &body).ok()?;
    }
    Some(body.messages().iter().filter_map(|m| m.tool.clone()).collect())
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for McpToolGuard<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqB: Body + From<Bytes> + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = McpToolGuardFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let principal = req.extensions().get::<Principal>().cloned();
        if self.guard.sessions.check(req.headers(), principal.as_ref()) == SessionCheck::Foreign {
            tracing::info!("MCP request refused: its session was created by another principal");
            let grpc = is_grpc(req.version(), req.headers());
            let response = refusal(BodyRefusal::ForeignSession, grpc).map(ResponseBody::rejection);
            return McpToolGuardFuture {
                state: McpState::Checking {
                    future: Box::pin(std::future::ready(Ok(response))),
                },
            };
        }
        if req.method() == Method::DELETE {
            let headers = req.headers().clone();
            let sessions = Arc::clone(&self.guard.sessions);
            let ended = self.inner.call(req);
            return McpToolGuardFuture {
                state: McpState::Checking {
                    future: Box::pin(async move {
                        let response = ended.await?;
                        if response.status().is_success() {
                            sessions.forget(&headers);
                        }
                        Ok(response.map(ResponseBody::inner))
                    }),
                },
            };
        }
        if req.method() != Method::POST {
            return McpToolGuardFuture {
                state: McpState::Inner {
                    future: self.inner.call(req),
                },
            };
        }
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let guard = self.guard.clone();
        let checked = async move {
            let (parts, body) = req.into_parts();
            let grpc = is_grpc(parts.version, &parts.headers);
            let refuse = |body: BodyRefusal| Ok(refusal(body, grpc).map(ResponseBody::rejection));
            let mismatch = |error: HeaderError, id: Option<serde_json::Value>| {
                tracing::debug!(?error, "MCP request refused: mirrored headers");
                refuse(BodyRefusal::JsonRpc {
                    code: HEADER_MISMATCH,
                    message: error.message(),
                    id,
                })
            };
            // MCP 2026-07-28: the headers mirror the body. A call they name that the caller
            // may not make is refused now; one they let through is still read from the body.
            let mirrored = headers::read(&parts.headers);
            if let Ok(Some(Mirrored {
                method: Some(method),
                name: Some(tool),
            })) = &mirrored
                && method == "tools/call"
                && let Some(required) = guard.tools.get(tool.as_str())
                && let Err((error, challenge)) = super::sealed::Rule::Requires(required).check(&parts.extensions)
            {
                tracing::debug!(tool = tool.as_str(), "MCP tool call refused from its Mcp-Name header");
                return Ok(render(error, &challenge, grpc).map(ResponseBody::rejection));
            }
            let bytes = match Limited::new(body, guard.max_body_bytes).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                    return refuse(BodyRefusal::TooLarge);
                }
                Err(_) => return refuse(BodyRefusal::Unreadable),
            };
            let body = message::read(&bytes);
            // The body is read first (within its size limit: 413 before anything else); then
            // unusable headers are refused before the body is judged, answering its id if it
            // has one.
            let mirrored = match mirrored {
                Ok(mirrored) => mirrored,
                Err(error) => return mismatch(error, body.ok().and_then(|body| body.request_id())),
            };
            let body = match body {
                Ok(body) => body,
                Err(error) => {
                    tracing::debug!(?error, "MCP request refused: body not readable as JSON-RPC");
                    return refuse(BodyRefusal::JsonRpc {
                        code: error.code(),
                        message: error.message(),
                        id: None,
                    });
                }
            };
            if let Some(mirrored) = &mirrored
                && let Err(error) = same_as_body(mirrored, &body)
            {
                return mismatch(error, body.request_id());
            }
            for tool in body.messages().iter().filter_map(|m| m.tool.as_deref()) {
                let Some(required) = guard.tools.get(tool) else {
                    continue;
                };
                if let Err((error, challenge)) = super::sealed::Rule::Requires(required).check(&parts.extensions) {
                    tracing::debug!(tool, "MCP tool call refused: missing permission");
                    let response = render(error, &challenge, grpc);
                    return Ok(response.map(ResponseBody::rejection));
                }
            }
            let had_session = parts.headers.contains_key(SESSION_HEADER);
            let response = inner.call(Request::from_parts(parts, ReqB::from(bytes))).await?;
            guard
                .sessions
                .record(had_session, response.headers(), principal.as_ref());
            Ok(response.map(ResponseBody::inner))
        };
        McpToolGuardFuture {
            state: McpState::Checking {
                future: Box::pin(checked),
            },
        }
    }
}

/// The mirrored headers of a 2026-07-28 request against its body, as rmcp compares them: the
/// method always (a response has none), the name when the method carries one.
fn same_as_body(headers: &Mirrored, body: &JsonRpcBody) -> Result<(), HeaderError> {
    let JsonRpcBody::Single(message) = body else {
        return Err(HeaderError::Batch);
    };
    let Some(method) = &message.method else {
        return Ok(());
    };
    match &headers.method {
        None => return Err(HeaderError::Missing("Mcp-Method")),
        Some(header) if header != method => return Err(HeaderError::Mismatch("Mcp-Method")),
        Some(_) => {}
    }
    match (&message.mirrored_name, &headers.name) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(HeaderError::Missing("Mcp-Name")),
        (Some(body), Some(header)) if body == header => Ok(()),
        (Some(_), Some(_)) => Err(HeaderError::Mismatch("Mcp-Name")),
    }
}

pin_project! {
    /// Response future of [`McpToolGuard`]: the inner future for requests the guard does not
    /// inspect, a boxed future for POSTs whose body it reads.
    pub struct McpToolGuardFuture<F, ResB, E> {
        #[pin]
        state: McpState<F, ResB, E>,
    }
}

pin_project! {
    #[project = McpStateProj]
    enum McpState<F, ResB, E> {
        Inner { #[pin] future: F },
        Checking { future: BoxFuture<'static, Result<Response<ResponseBody<ResB>>, E>> },
    }
}

impl<F, ResB, E> Future for McpToolGuardFuture<F, ResB, E>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            McpStateProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            McpStateProj::Checking { future } => future.as_mut().poll(cx),
        }
    }
}
