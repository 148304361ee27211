//! [`Caller`]: the verified caller a response is for: whether its handler demanded more scope
//! (answered with this layer's 403 instead), and which responses live with its token.
//!
//! A response body of unknown length (SSE, a chunked body, a gRPC stream) is a stream: it is
//! watched ([`ResponseBody::watched`]) and ends at the token's expiry, or once the verifier
//! says the caller no longer stands (asked at most every `stream_recheck`). A body that is
//! already over, or whose length is known, answers a request that was authorized and is
//! passed as it is, with nothing boxed.
//!
//! How a stream ends: an HTTP body just ends (a last chunk, an HTTP/2 `END_STREAM`), with no
//! bytes added: the layer cannot know where the application's framing (an SSE event, an
//! NDJSON line) stands, and a client that reconnects presents its token again and learns why
//! from the 401. A gRPC response (HTTP/2, `content-type: application/grpc*`, as `reject`
//! decides for requests) ends with `grpc-status: 16` (`UNAUTHENTICATED`), `grpc-message` and
//! `www-authenticate` in its trailers.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response, Version};
use http_body::Body;
use http_body_util::Full;

use crate::body::{ResponseBody, Standing};
use crate::principal::Principal;
use crate::reject::{AuthError, InvalidTokenReason, grpc_trailers, is_grpc, render};
use crate::stepup::{InsufficientScope, StepUpSlot};
use crate::verify::{StreamPass, Ticket};

/// The verified caller of a request, held by its response future until the response arrives.
pub(crate) struct Caller {
    principal: Principal,
    /// For a stream: how to find the verifier and what to ask it.
    pass: StreamPass,
    /// The request's HTTP version (a gRPC response needs HTTP/2).
    version: Version,
    /// Where the handler records a demand for more scope (`handler_step_up`).
    slot: Option<StepUpSlot>,
    /// The rate-limit budget the response reports, and in which headers.
    usage: Option<crate::rate_limit::Usage>,
    headers: crate::rate_limit::RateLimitHeaders,
}

impl Caller {
    pub(crate) fn new(principal: Principal, pass: StreamPass, version: Version, slot: Option<StepUpSlot>) -> Self {
        Caller {
            principal,
            pass,
            version,
            slot,
            usage: None,
            headers: crate::rate_limit::RateLimitHeaders::None,
        }
    }

    /// The rate-limit budget to report on the response, in `headers`.
    pub(crate) fn with_usage(
        mut self,
        usage: Option<crate::rate_limit::Usage>,
        headers: crate::rate_limit::RateLimitHeaders,
    ) -> Self {
        self.usage = usage;
        self.headers = headers;
        self
    }

    /// The layer's refusal for a handler that demanded more scope (recorded in the request's
    /// slot, or carried by its response): 403 `insufficient_scope`, or `PERMISSION_DENIED` for
    /// a gRPC response, with this caller's challenge. `None`: answer the response.
    pub(crate) fn step_up<B>(&self, response: &mut Response<B>) -> Option<Response<Full<Bytes>>> {
        let demand = InsufficientScope::demanded(self.slot.as_ref(), response)?;
        let grpc = is_grpc(self.version, response.headers());
        Some(render(
            demand.refusal(&self.principal),
            self.principal.challenge(),
            grpc,
        ))
    }

    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The response, its body watched if it is a stream.
    pub(crate) fn respond<B: Body>(self, mut response: Response<B>) -> Response<ResponseBody<B>> {
        if let Some(usage) = &self.usage {
            crate::rate_limit::headers::insert(response.headers_mut(), self.headers, usage, false);
        }
        let body = response.body();
        if body.is_end_stream() || body.size_hint().exact().is_some() {
            return response.map(ResponseBody::inner);
        }
        let grpc = is_grpc(self.version, response.headers());
        let now = Instant::now();
        // The token's expiry on the monotonic clock, once: the deadlines never disagree.
        let expires = self
            .principal
            .expires_at()
            .duration_since(SystemTime::now())
            .map_or(Some(now), |left| now.checked_add(left));
        // No ticket once no layer holds the verifier (shutting down): the stream ends at its
        // first poll.
        let ticket = self.pass.ticket();
        let every = ticket.as_ref().map_or(Duration::ZERO, Ticket::recheck_every);
        let stream = Stream {
            principal: self.principal,
            ticket,
            expires,
            every,
            grpc,
        };
        response.map(|body| ResponseBody::watched(body, stream))
    }
}

/// What a watched body asks: the verifier, through the ticket (none: ended at once), and the
/// token's expiry.
struct Stream {
    principal: Principal,
    ticket: Option<Ticket>,
    /// `None`: further than this clock can say.
    expires: Option<Instant>,
    every: Duration,
    grpc: bool,
}

impl Standing for Stream {
    fn check(&mut self) -> Result<Instant, Option<HeaderMap>> {
        let now = Instant::now();
        let expired = self.expires.is_some_and(|at| now >= at);
        let verdict = match &mut self.ticket {
            Some(ticket) => ticket.check(&self.principal, expired),
            None => {
                tracing::debug!("a streamed response was ended: its layer's verifier is gone");
                Err(InvalidTokenReason::Rejected)
            }
        };
        match verdict {
            // `every` is at least a nanosecond and at most a day (the builder's rule), and the
            // expiry is later than now: the next deadline is always in the future.
            Ok(()) => {
                let next = now.checked_add(self.every).unwrap_or(now + Duration::from_nanos(1));
                Ok(self.expires.map_or(next, |expires| expires.min(next)))
            }
            Err(reason) => Err(self
                .grpc
                .then(|| grpc_trailers(&AuthError::InvalidToken(reason), self.principal.challenge()))),
        }
    }
}
