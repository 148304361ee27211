//! [`McpGuard`]: the service of [`McpGuardLayer`]: sessions, then the body read and judged,
//! then the inner service, whose list answers it filters when asked to.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tower_service::Service;

use super::filter::ListFilter;
use super::future::McpGuardFuture;
use super::headers::{self, HeaderError};
use super::message::{self, Body as JsonRpcBody, Primitive};
use super::policy::Denied;
use super::sessions::{SESSION_HEADER, SessionCheck};
use super::{McpGuardLayer, UNLISTED};
use crate::body::ResponseBody;
use crate::principal::Principal;
use crate::reject::{BodyRefusal, is_grpc, refusal, render};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service produced by [`McpGuardLayer`].
#[derive(Debug, Clone)]
pub struct McpGuard<S> {
    inner: S,
    guard: McpGuardLayer,
}

impl<S> McpGuard<S> {
    pub(super) fn new(guard: McpGuardLayer, inner: S) -> Self {
        McpGuard { inner, guard }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for McpGuard<S>
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
    type Future = McpGuardFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let principal = req.extensions().get::<Principal>().cloned();
        // A session id means nothing on a server without sessions or on a 2026-07-28
        // request: ignored, and removed so that nothing behind can act on it. Elsewhere it
        // must be one the guard saw handed to this principal.
        let sessionless = self.guard.stateless || headers::version(req.headers()) == Ok(true);
        if sessionless {
            if req.headers_mut().remove(SESSION_HEADER).is_some() {
                tracing::debug!("Mcp-Session-Id ignored: no sessions on this server or protocol version");
            }
        } else if self.guard.sessions.check(req.headers(), principal.as_ref()) == SessionCheck::Foreign {
            tracing::info!("MCP request refused: its session was created by another principal");
            let grpc = is_grpc(req.version(), req.headers());
            let response = refusal(BodyRefusal::ForeignSession, grpc).map(ResponseBody::rejection);
            return McpGuardFuture::checking(Box::pin(std::future::ready(Ok(response))));
        }
        if req.method() == Method::DELETE {
            let headers = req.headers().clone();
            let sessions = std::sync::Arc::clone(&self.guard.sessions);
            let ended = self.inner.call(req);
            return McpGuardFuture::checking(Box::pin(async move {
                let response = ended.await?;
                if response.status().is_success() {
                    sessions.forget(&headers);
                }
                Ok(response.map(ResponseBody::inner))
            }));
        }
        if req.method() != Method::POST {
            return McpGuardFuture::inner(self.inner.call(req));
        }
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        McpGuardFuture::checking(Box::pin(judge(self.guard.clone(), inner, req, principal)))
    }
}

/// A POST: its body read and judged, then handed on (and its list answer filtered).
async fn judge<S, ReqB, ResB>(
    guard: McpGuardLayer,
    mut inner: S,
    req: Request<ReqB>,
    principal: Option<Principal>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let grpc = is_grpc(parts.version, &parts.headers);
    let refuse = |body: BodyRefusal| Ok(refusal(body, grpc).map(ResponseBody::rejection));
    let header_error = |error: HeaderError, id: Option<Value>| {
        tracing::debug!(?error, "MCP request refused: mirrored headers");
        refuse(BodyRefusal::JsonRpc {
            code: error.code(),
            message: error.message(),
            id,
        })
    };
    let bytes = match Limited::new(body, guard.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return refuse(BodyRefusal::TooLarge);
        }
        Err(_) => return refuse(BodyRefusal::Unreadable),
    };
    // The body is read first (within its size limit: 413 before anything else); then
    // unusable headers are refused before the body is judged, answering its id if it has one.
    let mirrored = headers::read(&parts.headers);
    let body = message::read(&bytes);
    let mirrored = match mirrored {
        Ok(mirrored) => mirrored,
        Err(error) => return header_error(error, body.ok().and_then(|body| body.request_id())),
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
    // MCP 2026-07-28: the headers must say what the body says, whatever the rules would
    // answer for either (a mismatch is the client's error, not a missing scope).
    if let Some(mirrored) = &mirrored
        && let Err(error) = headers::same_as_body(mirrored, &body)
    {
        return header_error(error, body.request_id());
    }
    for access in body.messages().iter().flat_map(|m| &m.access) {
        match guard.policy.check(access, &parts.extensions) {
            Ok(()) => {}
            Err(Denied::Auth(error, challenge)) => {
                tracing::debug!(primitive = ?access.primitive, name = access.name.as_str(), "MCP request refused: missing permission");
                return Ok(render(error, &challenge, grpc).map(ResponseBody::rejection));
            }
            Err(Denied::Unlisted(primitive)) => {
                tracing::debug!(
                    ?primitive,
                    name = access.name.as_str(),
                    "MCP request refused: no rule lists it"
                );
                return Ok(unlisted(primitive, &body, grpc));
            }
        }
    }
    let lists: Vec<(Value, message::ListKind)> = if guard.filter_lists {
        body.messages()
            .iter()
            .filter_map(|m| Some((m.request_id.clone()?, m.list?)))
            .collect()
    } else {
        Vec::new()
    };
    let had_session = parts.headers.contains_key(SESSION_HEADER);
    let response = inner.call(Request::from_parts(parts, ReqB::from(bytes))).await?;
    if guard.stateless {
        if response.headers().contains_key(SESSION_HEADER) {
            tracing::warn!("McpGuardLayer::stateless, but the server handed out an Mcp-Session-Id: it will be ignored");
        }
    } else {
        guard
            .sessions
            .record(had_session, response.headers(), principal.as_ref());
    }
    if lists.is_empty() {
        return Ok(response.map(ResponseBody::inner));
    }
    let (mut head, body) = response.into_parts();
    let filter = ListFilter::for_response(
        head.status,
        &mut head.headers,
        guard.policy,
        principal,
        lists,
        guard.max_list_response_bytes,
    );
    Ok(match filter {
        Some(filter) => Response::from_parts(head, ResponseBody::rewritten(body, filter)),
        None => Response::from_parts(head, ResponseBody::inner(body)),
    })
}

/// The answer to a request for something no rule lists: what a server answers for a name it
/// does not have, a JSON-RPC `-32602` for the request's id with HTTP 200 (400 and `id: null`
/// for a notification or a batch, which have no single id to answer).
fn unlisted<ResB>(primitive: Primitive, body: &JsonRpcBody, grpc: bool) -> Response<ResponseBody<ResB>> {
    let message = match primitive {
        Primitive::Tool => "Invalid params: unknown tool",
        Primitive::Resource => "Invalid params: unknown resource",
        Primitive::Prompt => "Invalid params: unknown prompt",
        Primitive::Task => "Invalid params: unknown task",
    };
    let id = match body {
        JsonRpcBody::Single(m) if m.is_request() => m.request_id.clone(),
        _ => None,
    };
    let answered = id.is_some();
    let mut response = refusal(
        BodyRefusal::JsonRpc {
            code: UNLISTED,
            message,
            id,
        },
        grpc,
    );
    if answered && !grpc {
        *response.status_mut() = StatusCode::OK;
    }
    response.map(ResponseBody::rejection)
}
