//! Axum integration (feature `axum`): [`Principal`] and `Option<Principal>` as extractors.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_wacht::Principal;
//!
//! async fn whoami(principal: Principal) -> String {
//!     format!("{} acting on {:?}", principal.client_id(), principal.granted_resource())
//! }
//!
//! async fn public(principal: Option<Principal>) -> String {
//!     match principal {
//!         Some(p) => format!("hello {}", p.client_id()),
//!         None => "hello anonymous".to_owned(),
//!     }
//! }
//!
//! let app: Router = Router::new().route("/whoami", get(whoami)).route("/public", get(public));
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams, RenderedAuthError, challenge_of, is_grpc, render};
use crate::stepup::InsufficientScope;

/// Rejection of the [`Principal`] extractor: the request has no verified principal. Renders
/// 401 with the layer's `WWW-Authenticate` challenge (or gRPC UNAUTHENTICATED).
#[derive(Debug)]
pub struct PrincipalRejection {
    challenge: Arc<ChallengeParams>,
    grpc: bool,
}

impl IntoResponse for PrincipalRejection {
    fn into_response(self) -> Response {
        render(AuthError::MissingCredentials, &self.challenge, self.grpc).map(axum::body::Body::new)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(p.clone()),
            None => Err(PrincipalRejection {
                challenge: challenge_of(&parts.extensions),
                grpc: is_grpc(parts.version, &parts.headers),
            }),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

impl IntoResponse for AuthError {
    /// Renders the error as plain HTTP. Behind [`WachtAuthLayer`](crate::WachtAuthLayer) the
    /// layer gives the response its own challenge (realm, scopes, `resource_metadata`); without
    /// one, default challenge parameters are used.
    fn into_response(self) -> Response {
        let mut response = render(self.clone(), &ChallengeParams::default(), false).map(axum::body::Body::new);
        response.extensions_mut().insert(RenderedAuthError(self));
        response
    }
}

impl IntoResponse for InsufficientScope {
    /// `403` `insufficient_scope` naming the demanded scopes, carrying the demand: behind
    /// [`WachtAuthLayer`](crate::WachtAuthLayer) the layer answers it with its own challenge
    /// (`resource_metadata`, realm, the scopes the token already has); without one, default
    /// challenge parameters are used.
    fn into_response(self) -> Response {
        let mut response = render(self.clone().into(), &ChallengeParams::default(), false).map(axum::body::Body::new);
        response.extensions_mut().insert(self);
        response
    }
}
