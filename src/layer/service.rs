//! [`WachtAuth`]: the service [`WachtAuthLayer`](super::WachtAuthLayer) wraps around yours.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::stream::Caller;
use super::{Accepts, Shared};
use crate::audit::{DecisionSource, Pending};
use crate::body::ResponseBody;
use crate::cors::is_preflight;
use crate::principal::CredentialKind;
use crate::reject::{Anonymous, AuthError, InvalidRequestReason, InvalidTokenReason, is_grpc, render};
use crate::stepup::StepUpSlot;
use crate::token::{
    Credential, OwnedBearer, TokenError, credential_from_headers, credential_from_key_header, strip_authorization,
    strip_key_header,
};
use crate::verify::{Authentication, Freshness, Served};

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
        // Off, auditing costs this one test.
        let mut audit = shared.audit.as_ref().and_then(|auditor| auditor.begin(&req));
        let (credential, from) = match find_credential(&req, shared) {
            Ok(Some(found)) => found,
            Ok(None) if shared.optional => return self.pass_anonymous(req, true, audit),
            Ok(None) if shared.pass_cors_preflight && is_preflight(&req) => {
                return self.pass_anonymous(req, false, audit);
            }
            Ok(None) => return self.refuse(&req, AuthError::MissingCredentials, audit),
            Err(refusal) => return self.refuse(&req, refusal, audit),
        };
        if let Some(audit) = &mut audit {
            let secret = credential.secret_bytes();
            audit.credential(shared.verifier.kind_of(secret), crate::token::jwt_shaped(secret));
        }
        let freshness = match &shared.live_routes {
            Some(live) if live.covers(&crate::route::RouteRequest::of(&req).automatic_bounded()) => Freshness::Live,
            _ => shared.freshness,
        };
        let authentication = match freshness {
            Freshness::Cached => shared.verifier.authenticate(credential, &req),
            freshness => shared.verifier.authenticate_fresh(credential, &req, freshness),
        };
        match authentication {
            Authentication::Hit(Served {
                principal,
                pass,
                usage,
                source,
            }) => {
                if let Some(mut audit) = audit {
                    audit.remaining(usage.as_ref());
                    audit.allowed(source, &principal);
                }
                strip_credential(&mut req, shared, from);
                req.extensions_mut().insert(principal.clone());
                let slot = shared
                    .handler_step_up
                    .then(|| StepUpSlot::insert_into(req.extensions_mut()));
                let caller = Caller::new(principal, pass, req.version(), slot)
                    .with_usage(usage, shared.verifier.rate_limit_headers());
                ResponseFuture::inner(self.inner.call(req), Some(caller))
            }
            Authentication::Spent(usage) => self.refuse_spent(&req, &usage, audit),
            Authentication::Refused(error) => self.refuse(&req, *error, audit),
            Authentication::Miss(miss) => {
                let token = take_credential(&mut req, shared, from);
                let Some(token) = token else {
                    return self.refuse(&req, AuthError::InvalidToken(InvalidTokenReason::Malformed), audit);
                };
                // The service that was made ready goes with the verification; a fresh clone
                // stays behind for the next request.
                let fresh = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, fresh);
                let challenge = Arc::clone(shared.verifier.challenge());
                let pass = miss.pass();
                let step_up = shared.handler_step_up;
                let rate_headers = shared.verifier.rate_limit_headers();
                if let Some(audit) = &mut audit {
                    audit.deferred(miss.cached_source());
                }
                ResponseFuture::verifying(
                    miss.verify(token),
                    req,
                    service,
                    challenge,
                    pass,
                    step_up,
                    audit,
                    rate_headers,
                )
            }
        }
    }
}

/// Where a request's credential came from.
#[derive(Clone, Copy)]
enum From {
    Authorization,
    KeyHeader,
}

/// The request's credential, if it carries one this layer takes; or the refusal (a
/// malformed, repeated or doubled credential; a kind this layer does not take).
fn find_credential<'r, B>(req: &'r Request<B>, shared: &Shared) -> Result<Option<(Credential<'r>, From)>, AuthError> {
    let malformed = || AuthError::InvalidToken(InvalidTokenReason::Malformed);
    let authorization = match credential_from_headers(req.headers(), shared.max_token_len) {
        Ok(found) => found,
        Err(TokenError::DuplicateHeader) => {
            return Err(AuthError::InvalidRequest(InvalidRequestReason::RepeatedAuthorization));
        }
        Err(TokenError::Malformed | TokenError::TooLong) => return Err(malformed()),
    };
    let key_header = match &shared.api_key_header {
        None => None,
        Some(name) => match credential_from_key_header(req.headers(), name, shared.max_token_len) {
            Ok(found) => found,
            Err(TokenError::DuplicateHeader) => {
                return Err(AuthError::InvalidRequest(InvalidRequestReason::TwoCredentials));
            }
            Err(TokenError::Malformed | TokenError::TooLong) => return Err(malformed()),
        },
    };
    let found = match (authorization, key_header) {
        (Some(_), Some(_)) => return Err(AuthError::InvalidRequest(InvalidRequestReason::TwoCredentials)),
        (Some(credential), None) => (credential, From::Authorization),
        (None, Some(key)) => {
            // The key header carries API keys, never an access token.
            if shared.verifier.kind_of(key.secret_bytes()) != CredentialKind::ApiKey {
                return Err(AuthError::InvalidToken(InvalidTokenReason::ApiKeyRequired));
            }
            (key, From::KeyHeader)
        }
        (None, None) => return Ok(None),
    };
    match shared.accepts {
        Accepts::Any => {}
        Accepts::OAuthOnly => {
            if shared.verifier.kind_of(found.0.secret_bytes()) == CredentialKind::ApiKey {
                return Err(AuthError::InvalidToken(InvalidTokenReason::ApiKeyNotAccepted));
            }
        }
        Accepts::ApiKeysOnly => {
            if shared.verifier.kind_of(found.0.secret_bytes()) != CredentialKind::ApiKey {
                return Err(AuthError::InvalidToken(InvalidTokenReason::ApiKeyRequired));
            }
        }
    }
    Ok(Some(found))
}

/// Takes the credential's header off the request (no credential passthrough), returning its
/// value.
fn strip_credential<B>(req: &mut Request<B>, shared: &Shared, from: From) -> Option<http::HeaderValue> {
    let keep = shared.keep_authorization_header;
    match (from, &shared.api_key_header) {
        (From::KeyHeader, Some(name)) => strip_key_header(req.headers_mut(), name, keep),
        _ => strip_authorization(req.headers_mut(), keep),
    }
}

/// [`strip_credential`], keeping the credential for the verification that needs it.
fn take_credential<B>(req: &mut Request<B>, shared: &Shared, from: From) -> Option<OwnedBearer> {
    let value = strip_credential(req, shared, from)?;
    match from {
        From::KeyHeader => OwnedBearer::from_key_header(value, shared.max_token_len),
        From::Authorization => OwnedBearer::from_header(value, shared.max_token_len),
    }
}

impl<S> WachtAuth<S> {
    fn refuse<ReqB, Svc>(
        &self,
        req: &Request<ReqB>,
        error: AuthError,
        audit: Option<Box<Pending>>,
    ) -> ResponseFuture<Svc, ReqB>
    where
        Svc: Service<Request<ReqB>>,
    {
        if let Some(audit) = audit {
            audit.refused(DecisionSource::Local, &error);
        }
        let challenge = match self.shared.accepts {
            Accepts::ApiKeysOnly => &self.shared.key_challenge,
            _ => self.shared.verifier.challenge(),
        };
        ResponseFuture::refused(render(error, challenge, is_grpc(req.version(), req.headers())))
    }

    /// 429 from the meters: a rate-limit budget is spent until its window rolls.
    fn refuse_spent<ReqB, Svc>(
        &self,
        req: &Request<ReqB>,
        usage: &crate::rate_limit::Usage,
        audit: Option<Box<Pending>>,
    ) -> ResponseFuture<Svc, ReqB>
    where
        Svc: Service<Request<ReqB>>,
    {
        let error = AuthError::RateLimited {
            // Whole seconds, rounded up: never "retry now" while the window lasts.
            retry_after: std::time::Duration::from_secs(crate::rate_limit::headers::ceil_secs(usage.reset).max(1)),
        };
        if let Some(mut audit) = audit {
            audit.remaining(Some(usage));
            audit.refused(DecisionSource::Cache, &error);
        }
        let challenge = self.shared.verifier.challenge();
        let mut response = render(error, challenge, is_grpc(req.version(), req.headers()));
        let which = self.shared.verifier.rate_limit_headers();
        crate::rate_limit::headers::insert(response.headers_mut(), which, usage, true);
        ResponseFuture::refused(response)
    }

    /// Hands a request without credentials to the inner service, marked anonymous.
    fn pass_anonymous<ReqB>(
        &mut self,
        mut req: Request<ReqB>,
        optional: bool,
        audit: Option<Box<Pending>>,
    ) -> ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        if let Some(audit) = audit {
            audit.anonymous();
        }
        strip_authorization(req.headers_mut(), self.shared.keep_authorization_header);
        req.extensions_mut().insert(Anonymous {
            challenge: Arc::clone(self.shared.verifier.challenge()),
            optional,
        });
        ResponseFuture::inner(self.inner.call(req), None)
    }
}
