//! Shared harness: an Axum app behind `WachtAuthLayer`, served on 127.0.0.1:0, talking to a
//! `FakeGateway` on loopback.
#![allow(dead_code)]

pub mod h2;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway, ScopeDefinition, TokenGrant, generate_token};
use tower_wacht::{Principal, RequirePermissionsLayer, WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer};

pub const API_KEY: &str = "sk_test_backend_key_9f8e7d6c5b4a";
pub const RESOURCE: &str = "https://api.example.com/mcp";
pub const ORG_URN: &str = "urn:wacht:organization:427001234567890561";

pub struct TestApp {
    pub addr: SocketAddr,
    pub gateway: FakeGateway,
    pub auth: WachtAuthLayer,
    pub http: reqwest::Client,
}

/// The quickstart-shaped router: /public (anonymous allowed), /whoami, /tools/invoke (all of
/// `mcp:invoke`), /reports (any of `reports:read`, `org:projects:read`).
pub fn router(auth: WachtAuthLayer) -> Router {
    Router::new()
        .route(
            "/tools/invoke",
            post(|p: Principal| async move { format!("invoked by {}", p.client_id()) }),
        )
        .route_layer(RequirePermissionsLayer::all(["mcp:invoke"]))
        .route(
            "/reports",
            get(|| async { "reports" })
                .route_layer(RequirePermissionsLayer::any(["reports:read", "org:projects:read"])),
        )
        .route("/whoami", get(|p: Principal| async move { Json(p) }))
        .route(
            "/public",
            get(|p: Option<Principal>| async move {
                match p {
                    Some(p) => format!("hello {}", p.client_id()),
                    None => "hello anonymous".to_owned(),
                }
            }),
        )
        .layer(auth)
}

pub async fn start_gateway() -> FakeGateway {
    let gateway = FakeGateway::start().await.expect("fake gateway starts");
    gateway.set_scope_definitions(vec![
        ScopeDefinition::organization("projects:read", "org:projects:read"),
        ScopeDefinition::organization("projects:write", "org:projects:write"),
    ]);
    gateway
}

/// Starts a gateway and an app whose config is `configure(builder with gateway url + key)`.
pub async fn start(configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder) -> TestApp {
    let gateway = start_gateway().await;
    start_with_gateway(gateway, configure).await
}

pub async fn start_with_gateway(
    gateway: FakeGateway,
    configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder,
) -> TestApp {
    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .request_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(300));
    let config = configure(builder).build().expect("valid config");
    let auth = WachtAuthLayer::new(config).expect("layer builds");
    let addr = serve(router(auth.clone())).await;
    TestApp {
        addr,
        gateway,
        auth,
        http: reqwest::Client::new(),
    }
}

pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    addr
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Registers a fresh token for an org-scoped grant with the given scopes.
    pub fn token(&self, scopes: &[&str]) -> String {
        self.token_with(|g| g.scopes(scopes.iter().copied()))
    }

    pub fn token_with(&self, grant: impl FnOnce(TokenGrant) -> TokenGrant) -> String {
        let token = generate_token();
        let base = TokenGrant::new("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
            .granted_resource(ORG_URN)
            .oauth_resource(RESOURCE)
            .expires_in(Duration::from_secs(3600));
        self.gateway.register(&token, grant(base));
        token
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send().await.expect("request completes")
    }

    pub async fn get_with_header(&self, path: &str, authorization: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("authorization", authorization)
            .send()
            .await
            .expect("request completes")
    }
}

pub fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii challenge").to_owned())
        .unwrap_or_default()
}

/// Sends raw HTTP/1.1 bytes and returns the whole response as text (for requests reqwest
/// will not produce, such as repeated headers).
pub async fn raw_request(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Asserts a problem+json body whose `status` matches the response and that never echoes `secret`.
pub async fn assert_problem(resp: reqwest::Response, status: u16, secret: Option<&str>) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let text = resp.text().await.expect("body");
    if let Some(secret) = secret {
        assert!(!text.contains(secret), "problem body echoes the token: {text}");
    }
    let json: serde_json::Value = serde_json::from_str(&text).expect("problem body is JSON");
    assert_eq!(json["status"], status);
    json
}

/// Waits until at least `needed` of the current Unix-aligned `window` are left (the rate-limit
/// meters' windows are aligned so), so that a test's requests fall in one window.
pub async fn fresh_window(window: std::time::Duration, needed: std::time::Duration) {
    let window_ms = window.as_millis() as u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let left = window_ms - now % window_ms;
    if std::time::Duration::from_millis(left) < needed {
        tokio::time::sleep(std::time::Duration::from_millis(left + 20)).await;
    }
}
