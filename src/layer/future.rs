//! [`ResponseFuture`]: the inner service's future, a refusal, or a verification followed by
//! the inner call. No boxing except the verification of a miss.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams, is_grpc, rechallenge, render};

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
            // Whose challenge a handler's own `AuthError` response is given.
            principal: Option<Principal>,
        },
        Refused { response: Option<Response<Full<Bytes>>> },
        Verifying {
            verify: BoxFuture<'static, Result<Principal, AuthError>>,
            request: Option<Request<ReqB>>,
            service: Option<S>,
            challenge: Arc<ChallengeParams>,
        },
    }
}

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    pub(super) fn inner(future: S::Future, principal: Option<Principal>) -> Self {
        ResponseFuture {
            state: State::Inner { future, principal },
        }
    }

    pub(super) fn refused(response: Response<Full<Bytes>>) -> Self {
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    pub(super) fn verifying(
        verify: BoxFuture<'static, Result<Principal, AuthError>>,
        request: Request<ReqB>,
        service: S,
        challenge: Arc<ChallengeParams>,
    ) -> Self {
        ResponseFuture {
            state: State::Verifying {
                verify,
                request: Some(request),
                service: Some(service),
                challenge,
            },
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future, principal } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(principal) = principal
                        && !response.extensions().is_empty()
                    {
                        // A handler that answered with an `AuthError` gets this layer's challenge.
                        rechallenge(&mut response, principal.challenge());
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Refused { response } => return Poll::Ready(Ok(ResponseBody::refused(response))),
                StateProj::Verifying {
                    verify,
                    request,
                    service,
                    challenge,
                } => {
                    let outcome = ready!(verify.as_mut().poll(cx));
                    let (Some(mut req), Some(mut svc)) = (request.take(), service.take()) else {
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
                        Ok(principal) => {
                            req.extensions_mut().insert(principal.clone());
                            let future = svc.call(req);
                            state.set(State::Inner {
                                future,
                                principal: Some(principal),
                            });
                        }
                        Err(error) => {
                            let response = render(error, challenge, is_grpc(req.version(), req.headers()));
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
