//! Handler-initiated step-up over HTTP: Axum handlers behind `WachtAuthLayer` that learn
//! mid-call that their caller needs more scope. The layer answers 403 `insufficient_scope`
//! with its own challenge (the demanded scopes, then the granted ones, `resource_metadata`,
//! realm) instead of whatever the handler answered; a client that asks for the challenged
//! scopes is then served. Real HTTP over loopback against a `FakeGateway`.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::routing::get;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, TokenGrant, generate_token};
use tower_wacht::{
    InsufficientScope, Principal, ProtectedResourceMetadata, WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer,
};

use crate::common::{self, API_KEY, ORG_URN, RESOURCE};

const CLIENT_ID: &str = "oc_stepUpOverHttpTestClient0000001";
const ISSUER: &str = "https://auth.example.com";
const METADATA_URL: &str = "https://api.example.com/.well-known/oauth-protected-resource/mcp";
const DESCRIPTION: &str = "The access token lacks a permission this operation requires.";

/// `GET /projects/{id}`: public projects need `projects:read` (the route's baseline), private
/// ones (`private-…`) also `projects:private`, which only the handler can tell. It answers
/// with an `InsufficientScope` (Axum `IntoResponse`).
async fn project(principal: Principal, Path(id): Path<String>) -> Result<String, InsufficientScope> {
    if id.starts_with("private-") && !principal.has_permission("projects:private") {
        return Err(InsufficientScope::new(["projects:private"]));
    }
    Ok(format!("project {id}"))
}

/// `GET /ledger`: a handler that builds no refusal of its own (as an rmcp tool or a Tonic
/// method cannot give its response an extension): it records the demand in the request and
/// answers 200 with data it should not have handed out. The layer must answer 403 instead.
async fn ledger(request: Request) -> (StatusCode, String) {
    let taken = InsufficientScope::new(["ledger:read"]).step_up(request.extensions());
    let status = if taken { StatusCode::OK } else { StatusCode::CONFLICT };
    (status, "the secret ledger".to_owned())
}

struct App {
    addr: std::net::SocketAddr,
    gateway: tower_wacht::testing::FakeGateway,
    http: reqwest::Client,
}

async fn start(configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder) -> App {
    let gateway = common::start_gateway().await;
    let metadata = ProtectedResourceMetadata::builder(RESOURCE)
        .authorization_server(ISSUER)
        .build()
        .expect("metadata");
    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .resource_metadata(metadata)
        .realm("projects")
        .request_timeout(Duration::from_secs(2));
    let auth = WachtAuthLayer::new(configure(builder).build().expect("config")).expect("layer");
    let app = Router::new()
        .route("/projects/{id}", get(project))
        .route("/ledger", get(ledger))
        .layer(auth);
    App {
        addr: common::serve(app).await,
        gateway,
        http: reqwest::Client::new(),
    }
}

impl App {
    fn token(&self, scopes: &[&str]) -> String {
        let token = generate_token();
        let grant = TokenGrant::new(CLIENT_ID)
            .scopes(scopes.iter().copied())
            .granted_resource(ORG_URN)
            .oauth_resource(RESOURCE)
            .expires_in(Duration::from_secs(3600));
        self.gateway.register(&token, grant);
        token
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        let request = self.http.get(format!("http://{}{path}", self.addr)).bearer_auth(token);
        tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .expect("an answer in time")
            .expect("request completes")
    }
}

/// The `scope` parameter of a challenge, split.
fn challenged_scopes(challenge: &str) -> Vec<String> {
    let value = challenge
        .split("scope=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a scope parameter");
    value.split(' ').map(str::to_owned).collect()
}

#[tokio::test]
async fn an_axum_handler_returning_insufficient_scope_gets_the_layers_step_up_challenge() {
    let app = start(|b| b).await;
    let reader = app.token(&["projects:read"]);
    let public = app.get("/projects/apollo", &reader).await;
    assert_eq!(public.status(), 200);

    let expected = format!(
        "Bearer resource_metadata=\"{METADATA_URL}\", scope=\"projects:private projects:read\", \
         error=\"insufficient_scope\", error_description=\"{DESCRIPTION}\", realm=\"projects\""
    );
    // The first request for this token was verified with the gateway (a miss); this one and
    // the next are answered from the cache: the layer answers for the handler either way.
    for round in 0..2 {
        let resp = app.get("/projects/private-mercury", &reader).await;
        let challenge = common::challenge(&resp);
        assert_eq!(challenge, expected, "round {round}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let problem = common::assert_problem(resp, 403, Some(&reader)).await;
        assert_eq!(problem["error"], "insufficient_scope");
    }

    // Re-authorization: the client asks for exactly what the challenge names.
    let scopes = challenged_scopes(&expected);
    assert_eq!(scopes, ["projects:private", "projects:read"]);
    let upgraded = app.token(&scopes.iter().map(String::as_str).collect::<Vec<_>>());
    let resp = app.get("/projects/private-mercury", &upgraded).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "project private-mercury");
}

#[tokio::test]
async fn a_demand_recorded_in_the_request_replaces_the_handlers_answer() {
    let app = start(|b| b.handler_step_up(true)).await;
    let token = app.token(&["projects:read"]);
    let expected = format!(
        "Bearer resource_metadata=\"{METADATA_URL}\", scope=\"ledger:read projects:read\", \
         error=\"insufficient_scope\", error_description=\"{DESCRIPTION}\", realm=\"projects\""
    );
    // A miss (verified with the gateway), then a cache hit: both give handlers the slot.
    for round in 0..2 {
        let resp = app.get("/ledger", &token).await;
        assert_eq!(common::challenge(&resp), expected, "round {round}");
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains("the secret ledger"),
            "the handler's answer leaked: {text}"
        );
    }
    assert_eq!(app.gateway.calls(), 1);

    // Without `handler_step_up`, nothing takes the demand, and the handler knows it.
    let app = start(|b| b).await;
    let token = app.token(&["projects:read"]);
    let resp = app.get("/ledger", &token).await;
    assert_eq!(resp.status(), 409);
    assert!(resp.headers().get("www-authenticate").is_none());
}
