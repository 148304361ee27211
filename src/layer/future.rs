//! [`ResponseFuture`]: the inner service's future, a refusal, or a verification followed by
//! the inner call. No boxing except the verification of a miss, and a streamed response's
//! watch (see [`stream`](super::stream)).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::stream::Caller;
use crate::audit::Pending;
use crate::body::ResponseBody;
use crate::rate_limit::RateLimitHeaders;
use crate::reject::{AuthError, ChallengeParams, is_grpc, rechallenge, render};
use crate::stepup::StepUpSlot;
use crate::verify::{Refused, StreamPass, Verified};

pin_project! {
    /// Response future of [`WachtAuth`](super::WachtAuth).
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, F> {
        Inner {
            #[pin]
            future: F,
            // Whose challenge a handler's own `AuthError` response is given, and whose token a
            // streamed response lives with.
            caller: Option<Caller>,
        },
        Refused { response: Option<Response<Full<Bytes>>> },
        Verifying {
            verify: BoxFuture<'static, Result<Verified, Refused>>,
            request: Option<Request<ReqB>>,
            service: Option<S>,
            challenge: Arc<ChallengeParams>,
            pass: Option<StreamPass>,
            // Whether the handler gets a step-up slot (`handler_step_up`).
            handler_step_up: bool,
            // The request's audit record, when auditing is on.
            audit: Option<Box<Pending>>,
            // Which rate-limit headers the response carries.
            rate_headers: RateLimitHeaders,
        },
    }
}

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    pub(super) fn inner(future: S::Future, caller: Option<Caller>) -> Self {
        ResponseFuture {
            state: State::Inner { future, caller },
        }
    }

    pub(super) fn refused(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    // Each argument is a field of the verifying state, moved in once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn verifying(
        verify: BoxFuture<'static, Result<Verified, Refused>>,
        request: Request<ReqB>,
        service: S,
        challenge: Arc<ChallengeParams>,
        pass: StreamPass,
        handler_step_up: bool,
        audit: Option<Box<Pending>>,
        rate_headers: RateLimitHeaders,
    ) -> Self {
        ResponseFuture {
            state: State::Verifying {
                verify,
                request: Some(request),
                service: Some(service),
                challenge,
                pass: Some(pass),
                handler_step_up,
                audit,
                rate_headers,
            },
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future, caller } => {
                    let mut response = ready!(future.poll(cx))?;
                    let Some(caller) = caller.take() else {
                        return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                    };
                    if let Some(refusal) = caller.step_up(&mut response) {
                        // A handler demanded more scope: this layer's 403 instead of its answer.
                        return Poll::Ready(Ok(ResponseBody::refused(&mut Some(refusal))));
                    }
                    if !response.extensions().is_empty() {
                        // A handler that answered with an `AuthError` gets this layer's challenge.
                        rechallenge(&mut response, caller.principal().challenge());
                    }
                    return Poll::Ready(Ok(caller.respond(response)));
                }
                StateProj::Refused { response } => return Poll::Ready(Ok(ResponseBody::refused(response))),
                StateProj::Verifying {
                    verify,
                    request,
                    service,
                    challenge,
                    pass,
                    handler_step_up,
                    audit,
                    rate_headers,
                } => {
                    let mut outcome = ready!(verify.as_mut().poll(cx));
                    // A 429 reports its budget as a hit's does: the rule the gateway named as
                    // spent, or else the route's tightest, spent until its reset.
                    if let Err(refused) = &mut outcome
                        && matches!(refused.error, AuthError::RateLimited { .. })
                        && refused.usage.is_none()
                        && let (Some(req), Some(pass)) = (request.as_ref(), pass.as_ref())
                    {
                        refused.usage = pass.rate_usage(req).filter(|u| u.remaining == 0);
                    }
                    if let Some(mut audit) = audit.take() {
                        let told = match &outcome {
                            Ok(verified) => verified.source,
                            Err(refused) => refused.source,
                        };
                        let source = told.unwrap_or_else(|| audit.miss_source());
                        match &outcome {
                            Ok(verified) => {
                                audit.remaining(verified.usage.as_ref());
                                audit.allowed(source, &verified.principal);
                            }
                            Err(refused) => {
                                audit.remaining(refused.usage.as_ref());
                                audit.refused(source, &refused.error);
                            }
                        }
                    }
                    let (Some(mut req), Some(mut svc), Some(pass)) = (request.take(), service.take(), pass.take())
                    else {
                        // Polled again after completion: answer like an unavailable gateway.
                        let error = AuthError::Unavailable {
                            retry_after: std::time::Duration::from_secs(1),
                        };
                        let response = render(error, challenge, false);
                        state.set(State::Refused {
                            response: Some(response),
                        });
                        continue;
                    };
                    match outcome {
                        Ok(Verified { principal, usage, .. }) => {
                            req.extensions_mut().insert(principal.clone());
                            let slot = (*handler_step_up).then(|| StepUpSlot::insert_into(req.extensions_mut()));
                            let caller =
                                Caller::new(principal, pass, req.version(), slot).with_usage(usage, *rate_headers);
                            let future = svc.call(req);
                            state.set(State::Inner {
                                future,
                                caller: Some(caller),
                            });
                        }
                        Err(Refused { error, usage, .. }) => {
                            let spent = matches!(error, AuthError::RateLimited { .. });
                            let mut response = render(error, challenge, is_grpc(req.version(), req.headers()));
                            if spent && let Some(usage) = usage {
                                crate::rate_limit::headers::insert(response.headers_mut(), *rate_headers, &usage, true);
                            }
                            state.set(State::Refused {
                                response: Some(response),
                            });
                        }
                    }
                }
            }
        }
    }
}
