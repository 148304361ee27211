//! [`ResponseBody`]: the inner service's body (watched while it streams, see `watch`;
//! rewritten as it passes, see `rewrite`), a rejection written by this crate, or nothing (a
//! CORS preflight's answer).

pub(crate) mod rewrite;
pub(crate) mod watch;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use self::rewrite::Rewriting;
pub(crate) use self::rewrite::{Rewrite, Step};
pub(crate) use self::watch::Standing;
use self::watch::Watch;

pin_project! {
    /// Response body of [`WachtAuthLayer`](crate::WachtAuthLayer), the guards and
    /// [`McpCorsLayer`](crate::McpCorsLayer): the inner service's body on success, a small
    /// in-memory rejection body, or none (a preflight's answer).
    ///
    /// Behind the layer, a body of unknown length (SSE, a chunked body, a gRPC stream) of a
    /// verified caller is watched: it ends at the token's `expires_at`, and within
    /// [`stream_recheck`](crate::WachtAuthConfigBuilder::stream_recheck) of an invalidation or
    /// denial that covers the caller. An HTTP body then just ends; a gRPC response ends with
    /// `grpc-status: 16` (`UNAUTHENTICATED`) in its trailers. Only a watched body is boxed
    /// (once, when the response arrives); a frame costs it one comparison.
    ///
    /// Behind [`McpGuardLayer::filter_lists`](crate::guard::McpGuardLayer::filter_lists), the
    /// answer to an MCP list request is rewritten as it passes: the entries its caller may not
    /// use are taken out.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Watched { #[pin] body: B, watch: Box<Watch<dyn Standing>> },
        Rewritten { #[pin] body: B, rewriting: Box<Rewriting> },
        Rejection { #[pin] body: Full<Bytes> },
        Empty,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    /// The inner body, ended when `standing` says its caller no longer stands.
    pub(crate) fn watched(body: B, standing: impl Standing + 'static) -> Self {
        ResponseBody {
            kind: Kind::Watched {
                body,
                watch: Box::new(Watch::new(standing)),
            },
        }
    }

    /// The inner body, its bytes rewritten by `rewrite` as they pass.
    pub(crate) fn rewritten(body: B, rewrite: impl Rewrite + 'static) -> Self {
        ResponseBody {
            kind: Kind::Rewritten {
                body,
                rewriting: Box::new(Rewriting::new(rewrite)),
            },
        }
    }

    pub(crate) fn rejection(body: Full<Bytes>) -> Self {
        ResponseBody {
            kind: Kind::Rejection { body },
        }
    }

    /// No body at all (the answer to a CORS preflight).
    pub(crate) fn empty() -> Self {
        ResponseBody { kind: Kind::Empty }
    }

    /// The refusal a response future holds, taken out as a response (an empty one if the
    /// future is polled again after completing).
    pub(crate) fn refused(response: &mut Option<Response<Full<Bytes>>>) -> Response<Self> {
        response
            .take()
            .unwrap_or_else(|| Response::new(Full::new(Bytes::new())))
            .map(ResponseBody::rejection)
    }

    /// True if this body is a rejection written by this crate.
    pub fn is_rejection(&self) -> bool {
        matches!(self.kind, Kind::Rejection { .. })
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Watched { body, watch } => watch.poll_frame(body, cx),
            KindProj::Rewritten { body, rewriting } => rewriting.poll_frame(body, cx),
            KindProj::Rejection { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Watched { body, watch } => watch.is_end_stream(body),
            Kind::Rewritten { rewriting, .. } => rewriting.is_end_stream(),
            Kind::Rejection { body } => body.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Watched { body, watch } => watch.size_hint(body),
            // The rewrite changes the length: unknown.
            Kind::Rewritten { .. } => SizeHint::default(),
            Kind::Rejection { body } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}
