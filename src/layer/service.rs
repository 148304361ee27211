//! [`WachtAuth`]: the service [`WachtAuthLayer`](super::WachtAuthLayer) wraps around yours.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::Shared;
use super::future::ResponseFuture;
use super::stream::Caller;
use crate::body::ResponseBody;
use crate::cors::is_preflight;
use crate::reject::{Anonymous, AuthError, InvalidRequestReason, InvalidTokenReason, is_grpc, render};
use crate::stepup::StepUpSlot;
use crate::token::{OwnedBearer, TokenError, credential_from_headers, strip_authorization};
use crate::verify::Authentication;

/// The service produced by [`WachtAuthLayer`](super::WachtAuthLayer): verifies the request's
/// token, then calls the inner service with the [`Principal`](crate::Principal) in the
/// request extensions, or answers the refusal itself.
#[derive(Clone, Debug)]
pub struct WachtAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> WachtAuth<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        WachtAuth { inner, shared }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for WachtAuth<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let credential = match credential_from_headers(req.headers(), shared.max_token_len) {
            Ok(Some(credential)) => credential,
            Ok(None) if shared.optional => return self.pass_anonymous(req, true),
            Ok(None) if shared.pass_cors_preflight && is_preflight(&req) => {
                return self.pass_anonymous(req, false);
            }
            Ok(None) => return self.refuse(&req, AuthError::MissingCredentials),
            Err(TokenError::DuplicateHeader) => {
                return self.refuse(
                    &req,
                    AuthError::InvalidRequest(InvalidRequestReason::RepeatedAuthorization),
                );
            }
            Err(TokenError::Malformed | TokenError::TooLong) => {
                return self.refuse(&req, AuthError::InvalidToken(InvalidTokenReason::Malformed));
            }
        };
        match shared
            .verifier
            .authenticate(credential, req.headers(), req.extensions())
        {
            Authentication::Hit(principal, ticket) => {
                strip_authorization(req.headers_mut(), shared.keep_authorization_header);
                req.extensions_mut().insert(principal.clone());
                let slot = shared
                    .handler_step_up
                    .then(|| StepUpSlot::insert_into(req.extensions_mut()));
                let caller = Caller::new(principal, ticket, req.version(), slot);
                ResponseFuture::inner(self.inner.call(req), Some(caller))
            }
            Authentication::Refused(error) => self.refuse(&req, *error),
            Authentication::Miss(miss) => {
                let token = strip_authorization(req.headers_mut(), shared.keep_authorization_header)
                    .and_then(|value| OwnedBearer::from_header(value, shared.max_token_len));
                let Some(token) = token else {
                    return self.refuse(&req, AuthError::InvalidToken(InvalidTokenReason::Malformed));
                };
                // The service that was made ready goes with the verification; a fresh clone
                // stays behind for the next request.
                let fresh = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, fresh);
                let challenge = Arc::clone(shared.verifier.challenge());
                let ticket = miss.ticket();
                let step_up = shared.handler_step_up;
                ResponseFuture::verifying(miss.verify(token), req, service, challenge, ticket, step_up)
            }
        }
    }
}

impl<S> WachtAuth<S> {
    fn refuse<ReqB, Svc>(&self, req: &Request<ReqB>, error: AuthError) -> ResponseFuture<Svc, ReqB>
    where
        Svc: Service<Request<ReqB>>,
    {
        let challenge = self.shared.verifier.challenge();
        ResponseFuture::refused(render(error, challenge, is_grpc(req.version(), req.headers())))
    }

    /// Hands a request without credentials to the inner service, marked anonymous.
    fn pass_anonymous<ReqB>(&mut self, mut req: Request<ReqB>, optional: bool) -> ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        strip_authorization(req.headers_mut(), self.shared.keep_authorization_header);
        req.extensions_mut().insert(Anonymous {
            challenge: Arc::clone(self.shared.verifier.challenge()),
            optional,
        });
        ResponseFuture::inner(self.inner.call(req), None)
    }
}
