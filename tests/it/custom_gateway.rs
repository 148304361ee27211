//! Outcomes the fake gateway cannot produce for the layer's own requests, through a custom
//! `Gateway` implementation (the public seam), served over loopback HTTP.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use common::*;
use futures_util::future::BoxFuture;
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use tower_wacht::principal::{DeploymentId, Grant, StringSet};
use tower_wacht::{WachtAuthConfig, WachtAuthLayer};

#[derive(Clone)]
struct Scripted {
    calls: Arc<AtomicUsize>,
    answer: fn() -> Decision,
}

impl Gateway for Scripted {
    fn check<'a>(&'a self, _request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = (self.answer)();
        Box::pin(async move { Ok(answer) })
    }
}

fn grant(expires_at: SystemTime) -> Decision {
    let mut grant = Grant::new("oc_custom", expires_at);
    grant.scopes = StringSet::new(["mcp:invoke"]);
    grant.permissions = StringSet::new(["mcp:invoke"]);
    grant.deployment_id = Some(DeploymentId(1));
    grant.request_id = Some("req_1".into());
    Decision::Allowed(Box::new(grant))
}

async fn app(answer: fn() -> Decision) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let gateway = Scripted {
        calls: Arc::clone(&calls),
        answer,
    };
    let config = WachtAuthConfig::builder().expected_deployment_id(1).build().unwrap();
    let addr = serve(router(WachtAuthLayer::with_gateway(config, gateway).unwrap())).await;
    (addr, calls)
}

#[tokio::test]
async fn already_expired_grants_are_allowed_once_but_never_cached() {
    let (addr, calls) = app(|| grant(SystemTime::now() - Duration::from_secs(1))).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let resp = http
            .get(format!("http://{addr}/whoami"))
            .bearer_auth("oat_expired")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn gateway_permission_denial_is_403_insufficient_scope() {
    let (addr, calls) = app(|| Decision::PermissionDenied).await;
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/whoami"))
        .bearer_auth("oat_denied")
        .send()
        .await
        .unwrap();
    assert!(challenge(&resp).contains("error=\"insufficient_scope\""));
    assert_problem(resp, 403, Some("oat_denied")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn verifier_can_be_used_outside_http() {
    let (_, _) = app(|| grant(SystemTime::now() + Duration::from_secs(60))).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = WachtAuthLayer::with_gateway(
        WachtAuthConfig::builder().expected_deployment_id(1).build().unwrap(),
        Scripted {
            calls: Arc::clone(&calls),
            answer: || grant(SystemTime::now() + Duration::from_secs(60)),
        },
    )
    .unwrap();
    let p = layer.verifier().verify("oat_ws_token").await.unwrap();
    assert_eq!(p.client_id().as_str(), "oc_custom");
    layer.verifier().verify("oat_ws_token").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(layer.verifier().verify("not a token").await.is_err());
}
