//! Live where it matters: `WachtAuthLayer::always_live` (every request asks the gateway) and
//! `WachtAuthLayer::max_cache_age` (a cached answer only while young), next to a plain layer
//! of the same verifier, over real loopback HTTP against a `FakeGateway`.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway, Fault, TokenGrant, generate_token};
use tower_wacht::{Principal, WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer};

struct App {
    addr: SocketAddr,
    gateway: FakeGateway,
    http: reqwest::Client,
}

/// `/cached` behind the plain layer, `/live` behind `always_live()`, `/young` behind
/// `max_cache_age(young)`, `/recent` behind `max_cache_age(60 s)`: one verifier.
async fn start(young: Duration, configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder) -> App {
    let gateway = common::start_gateway().await;
    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(common::API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .request_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(300));
    let auth = WachtAuthLayer::new(configure(builder).build().expect("valid config")).expect("layer builds");
    let who = || get(|p: Principal| async move { p.client_id().to_string() });
    let app = Router::new()
        .route("/cached", who())
        .layer(auth.clone())
        .merge(Router::new().route("/live", who()).layer(auth.always_live()))
        .merge(Router::new().route("/young", who()).layer(auth.max_cache_age(young)))
        .merge(
            Router::new()
                .route("/recent", who())
                .layer(auth.max_cache_age(Duration::from_secs(60))),
        );
    App {
        addr: common::serve(app).await,
        gateway,
        http: reqwest::Client::new(),
    }
}

impl App {
    fn token(&self) -> String {
        let token = generate_token();
        self.gateway.register(&token, grant());
        token
    }

    async fn status(&self, path: &str, token: &str) -> u16 {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("request completes")
            .status()
            .as_u16()
    }
}

fn grant() -> TokenGrant {
    TokenGrant::new("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
        .granted_resource(common::ORG_URN)
        .oauth_resource(common::RESOURCE)
        .expires_in(Duration::from_secs(3600))
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_live_route_asks_the_gateway_on_every_request_while_a_plain_one_is_served_from_cache() {
    let app = start(LONG, |b| b.ttl(LONG)).await;
    let token = app.token();
    assert_eq!(app.status("/cached", &token).await, 200);
    assert_eq!(app.gateway.calls(), 1);
    for n in 1..=5 {
        assert_eq!(app.status("/live", &token).await, 200);
        assert_eq!(app.gateway.calls(), 1 + n, "live request {n}");
    }
    // The plain route still answers from its cache (the live answers did not disturb it).
    for _ in 0..3 {
        assert_eq!(app.status("/cached", &token).await, 200);
    }
    assert_eq!(app.gateway.calls(), 6);
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_live_route_at_once() {
    let app = start(LONG, |b| b.ttl(LONG)).await;
    let token = app.token();
    assert_eq!(app.status("/cached", &token).await, 200);
    assert_eq!(app.status("/live", &token).await, 200);
    app.gateway.revoke(&token);

    // Nobody told this server: the cached route still serves it, the live one refuses it.
    assert_eq!(app.status("/cached", &token).await, 200);
    assert_eq!(app.status("/live", &token).await, 401);
    // The live route's 401 is the truth: the cached answer is voided, and the refusal
    // remembered, for every layer of the verifier.
    let calls = app.gateway.calls();
    assert_eq!(app.status("/cached", &token).await, 401);
    assert_eq!(app.gateway.calls(), calls, "refused from the negative cache");
}

#[tokio::test]
async fn a_live_route_never_refuses_from_the_negative_cache() {
    let app = start(LONG, |b| b.ttl(LONG).negative_ttl(LONG)).await;
    let token = generate_token();
    assert_eq!(app.status("/cached", &token).await, 401);
    // The gateway learns the token (a grant made just after): the cached route still
    // remembers its refusal; the live route asks.
    app.gateway.register(&token, grant());
    let calls = app.gateway.calls();
    assert_eq!(app.status("/cached", &token).await, 401);
    assert_eq!(app.gateway.calls(), calls);
    assert_eq!(app.status("/live", &token).await, 200);
    assert_eq!(app.gateway.calls(), calls + 1);
}

#[tokio::test]
async fn a_live_route_answers_503_in_an_outage_even_with_stale_if_error() {
    let app = start(LONG, |b| b.ttl(Duration::from_millis(100)).stale_if_error(LONG)).await;
    let token = app.token();
    assert_eq!(app.status("/cached", &token).await, 200);
    assert_eq!(app.status("/live", &token).await, 200);
    app.gateway.set_fault(Some(Fault::Status(503)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past the ttl, gateway down: the plain route serves it from the outage grace...
    assert_eq!(app.status("/cached", &token).await, 200);
    // ...the live route does not.
    let calls = app.gateway.calls();
    assert_eq!(app.status("/live", &token).await, 503);
    assert_eq!(app.gateway.calls(), calls + 1);
    // And within the ttl too: an unexpired cached answer is not served on the live route.
    app.gateway.set_fault(None);
    assert_eq!(app.status("/cached", &token).await, 200);
    app.gateway.set_fault(Some(Fault::Status(503)));
    assert_eq!(app.status("/live", &token).await, 503);
}

#[tokio::test]
async fn max_cache_age_verifies_again_an_answer_older_than_it() {
    let young = Duration::from_millis(150);
    // One reported route: rate-limit metering learns the rules of no second route (which
    // would ask the gateway once), so every call counted here is a verification.
    let app = start(young, |b| b.ttl(LONG).report_fixed(http::Method::GET, "/")).await;
    let token = app.token();
    assert_eq!(app.status("/cached", &token).await, 200);
    assert_eq!(app.gateway.calls(), 1);
    // A layer whose bound the answer is well within: served from the cache.
    assert_eq!(app.status("/recent", &token).await, 200);
    assert_eq!(app.gateway.calls(), 1);

    tokio::time::sleep(young * 2).await;
    // The plain route does not ask again (its ttl is a minute)...
    assert_eq!(app.status("/cached", &token).await, 200);
    assert_eq!(app.gateway.calls(), 1);
    // ...the young route does, once, and caches the fresh answer for everyone.
    assert_eq!(app.status("/young", &token).await, 200);
    assert_eq!(app.gateway.calls(), 2);
    assert_eq!(app.status("/cached", &token).await, 200);
    assert_eq!(app.status("/recent", &token).await, 200);
    assert_eq!(app.gateway.calls(), 2);

    // The re-verification is a real one: a token revoked meanwhile is refused.
    app.gateway.revoke(&token);
    tokio::time::sleep(young * 2).await;
    assert_eq!(app.status("/young", &token).await, 401);
    assert_eq!(app.gateway.calls(), 3);
}

/// An MCP endpoint where one tool is checked live and the rest are served from the cache.
#[tokio::test]
async fn one_mcp_tool_is_checked_live_on_an_endpoint_served_from_cache() {
    let gateway = common::start_gateway().await;
    let config = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(common::API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .ttl(LONG)
        .build()
        .expect("valid config");
    let auth = WachtAuthLayer::new(config).expect("layer builds");
    let app = Router::new()
        .route(
            "/mcp",
            axum::routing::post(|p: Principal| async move { p.client_id().to_string() }),
        )
        .layer(auth.always_live_for(["/mcp/tools/call/delete_project"]));
    let addr = common::serve(app).await;
    let http = reqwest::Client::new();
    let token = generate_token();
    gateway.register(&token, grant());
    let call = |tool: Option<&'static str>| {
        let mut req = http
            .post(format!("http://{addr}/mcp"))
            .bearer_auth(&token)
            .header("mcp-protocol-version", "2026-07-28")
            .header("content-type", "application/json");
        if let Some(tool) = tool {
            req = req.header("mcp-method", "tools/call").header("mcp-name", tool);
        }
        async move {
            req.body("{}")
                .send()
                .await
                .expect("request completes")
                .status()
                .as_u16()
        }
    };

    // Other tools: the first asks the gateway, then they are served from the cache.
    for _ in 0..3 {
        assert_eq!(call(Some("get_weather")).await, 200);
    }
    assert_eq!(gateway.calls(), 1);
    // The live tool: every call asks the gateway.
    for n in 1..=3 {
        assert_eq!(call(Some("delete_project")).await, 200);
        assert_eq!(gateway.calls(), 1 + n);
    }
    // Without the mirrored headers the request may be that tool: live too (fail closed).
    assert_eq!(call(None).await, 200);
    assert_eq!(gateway.calls(), 5);

    // Revoked at Wacht: the live tool refuses at once, and its 401 drops the cached answer
    // the other tools were served from.
    gateway.revoke(&token);
    assert_eq!(call(Some("delete_project")).await, 401);
    assert_eq!(call(Some("get_weather")).await, 401);
}
