//! What a miss tells the gateway the request accesses (`method`, `resource`), over real
//! loopback HTTP: an Axum app behind the layer, a `FakeGateway` recording every check as sent.
//! gRPC and MCP requests are in the `grpc` and `mcp_server` suites.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use http::Method;
use tower::Layer as _;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway, TokenGrant, generate_token};
use tower_wacht::{WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer};

/// The app's routes: `/projects/{id}` (GET and POST), the same under `/api` (a nested
/// router), and `/anything/{*rest}` for any method; no layer.
fn routes() -> Router {
    let projects = || Router::new().route("/projects/{id}", get(|| async { "read" }).post(|| async { "written" }));
    Router::new()
        .merge(projects())
        .nest("/api", projects())
        .route("/anything/{*rest}", any(|| async { "anything" }))
}

/// How the layer is applied to [`routes`].
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// `Router::layer`: every route and the fallback.
    Layer,
    /// `Router::route_layer`: matched routes only.
    RouteLayer,
    /// Around the whole router (`auth.layer(router)`): before any route is matched.
    Outside,
}

struct App {
    addr: SocketAddr,
    gateway: FakeGateway,
    http: reqwest::Client,
}

async fn start(placement: Placement, configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder) -> App {
    let gateway = common::start_gateway().await;
    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(common::API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .request_timeout(Duration::from_millis(500));
    let auth = WachtAuthLayer::new(configure(builder).build().expect("valid config")).expect("layer builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    match placement {
        Placement::Layer => {
            let app = routes().layer(auth);
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        Placement::RouteLayer => {
            let app = routes().route_layer(auth);
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        Placement::Outside => {
            // A fallback service gets no template of its own.
            let app = Router::new().fallback_service(auth.layer(routes()));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    App {
        addr,
        gateway,
        http: reqwest::Client::new(),
    }
}

impl App {
    /// A fresh token (so the request is a miss and reaches the gateway).
    fn token(&self) -> String {
        let token = generate_token();
        self.gateway.register(
            &token,
            TokenGrant::new("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
                .granted_resource(common::ORG_URN)
                .expires_in(Duration::from_secs(3600)),
        );
        token
    }

    /// Sends `method path` with a fresh token; returns the status and what the gateway was
    /// told (`METHOD resource`).
    async fn send(&self, method: Method, path: &str) -> (u16, String) {
        let token = self.token();
        let before = self.gateway.requests().len();
        let status = self
            .http
            .request(method, format!("http://{}{path}", self.addr))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request completes")
            .status()
            .as_u16();
        let requests = self.gateway.requests();
        assert_eq!(requests.len(), before + 1, "one gateway call for a fresh token");
        let last = requests.last().expect("a gateway call");
        (status, format!("{} {}", last.method, last.resource))
    }
}

#[tokio::test]
async fn axum_routes_report_their_method_and_template_never_the_id_or_query() {
    for placement in [Placement::Layer, Placement::RouteLayer] {
        let app = start(placement, |b| b).await;
        let send = |method, path| app.send(method, path);
        assert_eq!(
            send(Method::GET, "/projects/42?token=s3cret").await,
            (200, "GET /projects/{id}".to_owned()),
            "{placement:?}"
        );
        assert_eq!(
            send(Method::POST, "/projects/42").await,
            (200, "POST /projects/{id}".to_owned()),
            "{placement:?}"
        );
        assert_eq!(
            send(Method::GET, "/api/projects/7").await,
            (200, "GET /api/projects/{id}".to_owned()),
            "nested router, {placement:?}"
        );
        // The decision stays keyed by the credential: the same token on another route is a hit.
        let token = app.token();
        for (method, path) in [(Method::GET, "/projects/1"), (Method::POST, "/projects/2")] {
            let resp = app
                .http
                .request(method, format!("http://{}{path}", app.addr))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        let calls: Vec<_> = app.gateway.requests().into_iter().map(|r| r.resource).collect();
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert_eq!(calls[3], "/projects/{id}", "the route of the request that missed");
        assert!(
            calls.iter().all(|r| !r.contains('?') && !r.contains("s3cret")),
            "{calls:?}"
        );
    }
}

#[tokio::test]
async fn without_a_template_the_path_is_reported_without_its_query() {
    // Around the whole router no route has matched yet; under `Router::layer`, the fallback
    // has no template either.
    let outside = start(Placement::Outside, |b| b).await;
    assert_eq!(
        outside.send(Method::GET, "/projects/42?api_key=s3cret#frag").await,
        (200, "GET /projects/42".to_owned())
    );
    let layer = start(Placement::Layer, |b| b).await;
    assert_eq!(
        layer.send(Method::GET, "/nowhere/9?x=1").await,
        (404, "GET /nowhere/9".to_owned())
    );
}

#[tokio::test]
async fn an_over_long_path_is_cut_to_256_bytes() {
    let app = start(Placement::Outside, |b| b).await;
    let long = format!("/anything/{}", "a".repeat(2000));
    let (status, reported) = app.send(Method::GET, &format!("{long}?q=1")).await;
    assert_eq!(status, 200);
    let resource = reported.strip_prefix("GET ").expect("GET");
    assert_eq!(resource.len(), tower_wacht::route::MAX_RESOURCE_LEN);
    assert_eq!(resource.len(), 256, "the documented cap");
    assert!(long.starts_with(resource), "a prefix of the path: {resource}");
}

#[tokio::test]
async fn a_method_outside_the_gateways_list_is_reported_as_post_and_served() {
    let app = start(Placement::Layer, |b| b).await;
    for method in ["PURGE", "PROPFIND", "TRACE"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, reported) = app.send(method.clone(), "/anything/x").await;
        // Sent raw, the gateway would answer 400, and the layer 503.
        assert_eq!(status, 200, "{method}");
        assert_eq!(reported, "POST /anything/{*rest}", "{method}");
    }
    assert_eq!(tower_wacht::route::FALLBACK_METHOD, Method::POST);
}

#[tokio::test]
async fn the_fixed_mode_reports_its_values_whatever_the_request() {
    // Bounded like any reported route: the query is never sent.
    let app = start(Placement::Layer, |b| b.report_fixed(Method::PUT, "/fixed?key=s3cret")).await;
    assert_eq!(
        app.send(Method::GET, "/projects/42").await,
        (200, "PUT /fixed".to_owned())
    );
    assert_eq!(
        app.send(Method::POST, "/anything/else").await,
        (200, "PUT /fixed".to_owned())
    );
    // The former setters select the fixed mode, each keeping the other's default.
    let app = start(Placement::Layer, |b| b.method("post")).await;
    assert_eq!(app.send(Method::GET, "/projects/42").await, (200, "POST /".to_owned()));
    let app = start(Placement::Layer, |b| b.resource("/mcp")).await;
    assert_eq!(
        app.send(Method::POST, "/projects/42").await,
        (200, "GET /mcp".to_owned())
    );
    // And the request's route is one call away.
    let app = start(Placement::Layer, |b| b.resource("/mcp").report_request_route()).await;
    assert_eq!(
        app.send(Method::POST, "/projects/42").await,
        (200, "POST /projects/{id}".to_owned())
    );
}

#[tokio::test]
async fn a_mapping_reports_its_value_bounded_and_falls_back_to_the_request() {
    let app = start(Placement::Layer, |b| {
        b.report_route(|request| {
            let tenant = request.path().strip_prefix("/anything/")?;
            let method = if tenant == "custom" {
                Method::from_bytes(b"PURGE").unwrap()
            } else {
                Method::PATCH
            };
            Some((method, format!("tenants/{}?id={tenant}", tenant.len())))
        })
    })
    .await;
    assert_eq!(
        app.send(Method::GET, "/anything/acme").await,
        (200, "PATCH /tenants/4".to_owned()),
        "the mapping's value, its query cut, `/` in front"
    );
    assert_eq!(
        app.send(Method::GET, "/anything/custom").await,
        (200, "POST /tenants/6".to_owned()),
        "a method outside the gateway's list, even from a mapping"
    );
    assert_eq!(
        app.send(Method::POST, "/projects/9").await,
        (200, "POST /projects/{id}".to_owned()),
        "None: the request's own route"
    );
}
