//! The Tower contract: `poll_ready` propagates the inner service's readiness and errors, and
//! `call` (on a cache hit and on a miss) uses the instance that was made ready.

use crate::common;

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Layer, Service, ServiceExt};
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, TokenGrant, generate_token};
use tower_wacht::{WachtAuthConfig, WachtAuthLayer};

/// Answers 200 only when called after its own `poll_ready`; a clone starts not ready.
struct ReadyTracking {
    ready: bool,
    fail: bool,
}

impl Clone for ReadyTracking {
    fn clone(&self) -> Self {
        ReadyTracking {
            ready: false,
            fail: self.fail,
        }
    }
}

impl Service<Request<Empty<Bytes>>> for ReadyTracking {
    type Response = Response<Full<Bytes>>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.fail {
            return Poll::Ready(Err("inner not ready"));
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Empty<Bytes>>) -> Self::Future {
        let status = if std::mem::take(&mut self.ready) { 200 } else { 500 };
        let mut resp = Response::new(Full::new(Bytes::from_static(b"inner")));
        *resp.status_mut() = status.try_into().unwrap();
        std::future::ready(Ok(resp))
    }
}

fn request(token: &str) -> Request<Empty<Bytes>> {
    Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn poll_ready_errors_propagate() {
    let layer = WachtAuthLayer::new(
        WachtAuthConfig::builder()
            .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut svc = layer.layer(ReadyTracking {
        ready: false,
        fail: true,
    });
    let err = svc.ready().await.err();
    assert_eq!(err, Some("inner not ready"));
}

#[tokio::test]
async fn call_uses_the_ready_instance_on_miss_and_hit() {
    let gateway = common::start_gateway().await;
    let token = generate_token();
    gateway.register(&token, TokenGrant::new("oc_ready"));
    let config = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .build()
        .unwrap();
    let mut svc = WachtAuthLayer::new(config).unwrap().layer(ReadyTracking {
        ready: false,
        fail: false,
    });

    for round in ["miss", "hit"] {
        let resp = svc.ready().await.unwrap().call(request(&token)).await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "{round}: the readied inner service must be the one called"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"inner");
    }
    assert_eq!(gateway.calls(), 1);
}

#[tokio::test]
async fn rejections_never_call_the_inner_service() {
    struct Never;
    impl Service<Request<Empty<Bytes>>> for Never {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: Request<Empty<Bytes>>) -> Self::Future {
            panic!("inner service called for a rejected request")
        }
    }
    impl Clone for Never {
        fn clone(&self) -> Self {
            Never
        }
    }
    let gateway = common::start_gateway().await;
    let config = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .build()
        .unwrap();
    let mut svc = WachtAuthLayer::new(config).unwrap().layer(Never);
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(request(&generate_token()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.body().is_rejection());
    let resp = svc.ready().await.unwrap().call(request("bad token")).await.unwrap();
    assert_eq!(resp.status(), 401);
}
