//! Items 1-5: ways a request reached a handler without a principal, a foreign tenant's token
//! was accepted, the token was carried to another host, or a revoked token came back.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::Method;
use http_body_util::Full;
use tokio::sync::{Notify, watch};
use tonic::Code;
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError, HttpGateway};
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, Fault, TokenGrant, generate_token};
use tower_wacht::{
    ConfigError, Permissions, Principal, RequireMethodPermissionsLayer, RequirePermissionsLayer, WachtAuthConfig,
    WachtAuthConfigBuilder, WachtAuthLayer,
};

use crate::common::{self, API_KEY, RESOURCE, start, start_gateway};
use crate::grpc_server::pb::HelloRequest;
use crate::grpc_server::pb::greeter_client::GreeterClient;
use crate::harness::{Listener, RecordingGreeter, Runs, grpc_frame, raw_h2, serve_grpc};

const SAY_HELLO: &str = "/greeter.v1.Greeter/SayHello";

fn config(
    gateway_url: &str,
    configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder,
) -> WachtAuthConfig {
    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway_url)
        .api_key(API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .realm("attacked")
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500));
    configure(builder).build().expect("valid config")
}

/// A CORS preflight as a browser would send it, with a gRPC body riding along.
fn grpc_preflight(addr: std::net::SocketAddr, origin: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{addr}{SAY_HELLO}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("access-control-request-method", "POST");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.body(Full::new(grpc_frame("Mallory"))).expect("request")
}

// 1. CORS preflight pass-through ------------------------------------------------------------

#[tokio::test]
async fn a_cors_preflight_with_a_grpc_body_never_runs_a_grpc_handler() {
    let gateway = start_gateway().await;
    for opted_in in [false, true] {
        // The default, then the opt-in: neither passes a gRPC request.
        let auth = WachtAuthLayer::new(config(&gateway.url(), |b| {
            if opted_in { b.pass_cors_preflight(true) } else { b }
        }))
        .unwrap();
        let greeter = RecordingGreeter::default();
        let addr = serve_grpc(auth, crate::grpc_server::method_guard(), greeter.clone()).await;
        let raw = raw_h2(addr, grpc_preflight(addr, Some("https://evil.example"))).await;
        assert_eq!(greeter.0.total(), 0, "opted in: {opted_in}: the handler ran: {raw:?}");
        assert_eq!(raw.grpc_status(), Some("16"), "opted in: {opted_in}: {raw:?}");
    }
    assert_eq!(gateway.calls(), 0);
}

/// Attack on the opt-in: a gRPC call dressed as a preflight that leaves out the gRPC content
/// type, to a Tonic service that relies on the layer alone (Tonic routes by path and reads the
/// body whatever the content type says). Browsers send a preflight without a body,
/// `Content-Type` or `TE`: anything else is not a preflight.
#[tokio::test]
async fn an_opted_in_preflight_pass_through_never_carries_a_grpc_call_without_its_content_type() {
    use futures_util::stream;
    use http_body_util::{Either, StreamBody};
    use hyper::body::Frame;
    let gateway = start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway.url(), |b| b.pass_cors_preflight(true))).unwrap();
    let greeter = RecordingGreeter::default();
    let addr = crate::harness::serve_grpc_without_guard(auth, greeter.clone()).await;
    type Unsized = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>>;
    for (what, te, sized) in [
        ("te: trailers, body with its length", true, true),
        ("body with its length only", false, true),
        ("te: trailers, body without a length", true, false),
        ("body without a length only", false, false),
    ] {
        let frame = grpc_frame("Mallory");
        let body: Either<Full<Bytes>, Unsized> = if sized {
            Either::Left(Full::new(frame))
        } else {
            Either::Right(StreamBody::new(stream::iter(vec![Ok(Frame::data(frame))])))
        };
        let mut request = http::Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{addr}{SAY_HELLO}"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST");
        if te {
            request = request.header("te", "trailers");
        }
        let raw = raw_h2(addr, request.body(body).expect("request")).await;
        assert_eq!(greeter.0.total(), 0, "{what}: the handler ran: {raw:?}");
        assert_eq!(raw.status, 401, "{what}: {raw:?}");
    }
    assert_eq!(gateway.calls(), 0);
}

#[tokio::test]
async fn a_cors_preflight_reaches_no_axum_any_fallback_or_route_service_handler_by_default() {
    let gateway = start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway.url(), |b| b)).unwrap();
    let runs = Runs::default();
    let (r1, r2, r3) = (runs.clone(), runs.clone(), runs.clone());
    let app = Router::new()
        .route(
            "/any",
            any(move |p: Option<Principal>| async move {
                r1.record(p.as_ref());
                "ran"
            }),
        )
        .route_service(
            "/service",
            tower::service_fn(move |req: axum::extract::Request| {
                r2.record(req.extensions().get::<Principal>());
                async {
                    Ok::<_, std::convert::Infallible>(axum::response::Response::new(axum::body::Body::from("ran")))
                }
            }),
        )
        .fallback(move |p: Option<Principal>| async move {
            r3.record(p.as_ref());
            "ran"
        })
        .layer(auth);
    let addr = common::serve(app).await;
    let http = reqwest::Client::new();
    for path in ["/any", "/service", "/no-such-route"] {
        let resp = http
            .request(Method::OPTIONS, format!("http://{addr}{path}"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "DELETE")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert!(common::challenge(&resp).starts_with("Bearer "), "{path}");
    }
    assert_eq!(runs.total(), 0, "a handler ran for a preflight without a token");
}

#[tokio::test]
async fn an_opted_in_preflight_pass_through_needs_an_origin_and_carries_no_principal() {
    let gateway = start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway.url(), |b| b.pass_cors_preflight(true))).unwrap();
    let runs = Runs::default();
    let r = runs.clone();
    let app = Router::new()
        .route("/admin", any(|| async { "admin" }))
        .route_layer(RequirePermissionsLayer::all(["admin:write"]))
        .route(
            "/open",
            any(move |p: Option<Principal>| async move {
                r.record(p.as_ref());
                "ran"
            }),
        )
        .layer(auth);
    let addr = common::serve(app).await;
    let http = reqwest::Client::new();
    let preflight = |path: &str, origin: Option<&str>| {
        let mut req = http
            .request(Method::OPTIONS, format!("http://{addr}{path}"))
            .header("access-control-request-method", "POST");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    // Without `Origin` it is no browser preflight: a request without a token, refused.
    assert_eq!(preflight("/open", None).await.unwrap().status(), 401);
    assert_eq!(runs.total(), 0);
    // With `Origin` it passes, and the handler sees no principal.
    assert_eq!(
        preflight("/open", Some("https://app.example")).await.unwrap().status(),
        200
    );
    assert_eq!((runs.total(), runs.anonymous()), (1, 1));
    // A permission guard behind it still refuses a request without a principal, with the
    // layer's challenge.
    let guarded = preflight("/admin", Some("https://app.example")).await.unwrap();
    assert_eq!(guarded.status(), 401);
    assert!(
        common::challenge(&guarded).contains("realm=\"attacked\""),
        "{}",
        common::challenge(&guarded)
    );
}

#[tokio::test]
async fn guards_refuse_a_request_without_a_principal_unless_optional_mode_and_the_rule_allow_it() {
    let gateway = start_gateway().await;
    // Optional mode: requests without a token pass the layer without a principal.
    let auth = WachtAuthLayer::new(config(&gateway.url(), |b| b.optional(true))).unwrap();
    let greeter = RecordingGreeter::default();
    // SayHello is named by no rule ("any authenticated caller"): anonymous callers are refused.
    let addr = serve_grpc(auth.clone(), crate::grpc_server::method_guard(), greeter.clone()).await;
    let mut client = GreeterClient::connect(format!("http://{addr}")).await.unwrap();
    let status = client
        .say_hello(HelloRequest {
            name: "anonymous".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let challenge = status.metadata().get("www-authenticate").and_then(|v| v.to_str().ok());
    assert_eq!(challenge, Some("Bearer realm=\"attacked\""));
    assert_eq!(greeter.0.total(), 0);

    // A rule that explicitly allows anonymous callers lets them through in optional mode.
    let public = RequireMethodPermissionsLayer::new().public(SAY_HELLO);
    let addr = serve_grpc(auth.clone(), public.clone(), greeter.clone()).await;
    let mut client = GreeterClient::connect(format!("http://{addr}")).await.unwrap();
    client
        .say_hello(HelloRequest {
            name: "anonymous".into(),
        })
        .await
        .expect("public method in optional mode");
    assert_eq!((greeter.0.total(), greeter.0.anonymous()), (1, 1));

    // The same public rule without optional mode: the layer itself requires a token.
    let strict = WachtAuthLayer::new(config(&gateway.url(), |b| b)).unwrap();
    let addr = serve_grpc(strict, public, greeter.clone()).await;
    let mut client = GreeterClient::connect(format!("http://{addr}")).await.unwrap();
    let status = client.say_hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(greeter.0.total(), 1);

    // The route guard: 401 with the layer's challenge, in optional mode too.
    let app = Router::new()
        .route("/admin", get(|| async { "admin" }))
        .route_layer(RequirePermissionsLayer::any(["admin:read"]))
        .layer(auth);
    let addr = common::serve(app).await;
    let resp = reqwest::get(format!("http://{addr}/admin")).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(common::challenge(&resp), "Bearer realm=\"attacked\"");
    let _ = Permissions::all(["unused"]);
}

// 2. Tokens of any tenant ------------------------------------------------------------------

#[test]
fn a_configuration_that_pins_no_tenant_is_refused() {
    let err = WachtAuthConfig::builder().api_key(API_KEY).build().unwrap_err();
    assert!(matches!(err, ConfigError::TenantNotPinned), "{err:?}");
    for name in ["WACHT_DEPLOYMENT_ID", "WACHT_OAUTH_ISSUER", "accept_any_deployment"] {
        assert!(err.to_string().contains(name), "{err}");
    }
    // `main() -> Result<_, Box<dyn Error>>` prints `Debug`: it must say the same.
    assert!(format!("{err:?}").contains("WACHT_DEPLOYMENT_ID"), "{err:?}");
    let from_env = WachtAuthConfig::from_lookup(|name| (name == "WACHT_BACKEND_API_KEY").then(|| "sk_test".to_owned()))
        .unwrap_err();
    assert!(from_env.to_string().contains("WACHT_DEPLOYMENT_ID"), "{from_env}");
    assert!(from_env.to_string().contains("WACHT_OAUTH_ISSUER"), "{from_env}");
    // Either pin, or the explicit opt-out, is enough.
    assert!(WachtAuthConfig::builder().expected_deployment_id(1).build().is_ok());
    assert!(
        WachtAuthConfig::builder()
            .expected_issuer("https://auth.example.com")
            .build()
            .is_ok()
    );
    assert!(WachtAuthConfig::builder().accept_any_deployment().build().is_ok());
}

#[tokio::test]
async fn a_token_from_the_attackers_own_deployment_is_refused() {
    // The attacker's tenant: same scope names, same resource URL, another deployment and issuer.
    let app = start(|b| b.expected_audience(RESOURCE)).await;
    let token = app.token_with(|g| {
        g.deployment_id(7)
            .issuer("https://evil.example")
            .scopes(["mcp:invoke"])
            .oauth_resource(RESOURCE)
    });
    let resp = app
        .http
        .post(app.url("/tools/invoke"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(common::challenge(&resp).contains("error=\"invalid_token\""));
}

#[test]
fn the_examples_pointed_at_a_real_gateway_without_a_pin_exit_with_the_message() {
    // `cargo test` builds the examples next to the test binaries (`target/<profile>/examples`).
    let examples = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples")))
        .expect("the test binary's directory");
    for example in ["quickstart", "mcp_server", "grpc_server"] {
        let binary = examples.join(example);
        assert!(
            binary.exists(),
            "{} is missing: run the tests with `cargo test --all-features`, which builds the examples",
            binary.display()
        );
        let mut child = std::process::Command::new(&binary)
            .env_clear()
            .env("WACHT_GATEWAY_URL", "http://127.0.0.1:9")
            .env("WACHT_BACKEND_API_KEY", "sk_live_attack")
            .env("WACHT_RESOURCE_URL", "http://127.0.0.1:1/mcp")
            .env("BIND", "127.0.0.1:0")
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the example starts");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{example} kept running (serving) without a tenant pin");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!status.success(), "{example} exited successfully");
        for name in ["WACHT_DEPLOYMENT_ID", "WACHT_OAUTH_ISSUER"] {
            assert!(stderr.contains(name), "{example}: {stderr}");
        }
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("listening"),
            "{example} started serving"
        );
    }
}

// 3. Redirects ------------------------------------------------------------------------------

#[tokio::test]
async fn the_gateway_client_never_follows_a_redirect_with_the_token() {
    // Where a hijacked gateway URL sends the token: it must receive nothing.
    let thief = Listener::start(|_| http::Response::new(Full::new(Bytes::from_static(b"{}")))).await;
    for status in [301u16, 302, 303, 307, 308] {
        let location = format!("{}/v1/authz/check", thief.url());
        let redirector = Listener::start(move |_| {
            http::Response::builder()
                .status(status)
                .header("location", location.as_str())
                .body(Full::new(Bytes::new()))
                .expect("response")
        })
        .await;
        let auth = WachtAuthLayer::new(config(&redirector.url(), |b| b)).unwrap();
        let addr = common::serve(common::router(auth)).await;
        let token = generate_token();
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "a {status} from the gateway is a gateway fault");
        assert!(resp.headers().contains_key("retry-after"));
        assert_eq!(redirector.hits(), 1);
        assert_eq!(thief.hits(), 0, "the {status} redirect was followed");
    }
}

// 4. Invalidation undone by a request joining an in-flight check --------------------------

/// The real gateway client, whose answers are held back until the test releases them: the
/// answer reflects the gateway's state when it was asked, but arrives late.
struct Held {
    inner: HttpGateway,
    /// Calls from this number on (1-based) are held.
    hold_from: usize,
    calls: std::sync::atomic::AtomicUsize,
    answered: Arc<Notify>,
    release: watch::Receiver<bool>,
}

impl Gateway for Held {
    fn check<'a>(&'a self, request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let decision = self.inner.check(request).await;
            if n >= self.hold_from {
                self.answered.notify_one();
                let mut release = self.release.clone();
                let _ = release.wait_for(|released| *released).await;
            }
            decision
        })
    }
}

async fn held_app(
    hold_from: usize,
    configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder,
) -> (common::TestApp, Arc<Notify>, watch::Sender<bool>) {
    let gateway = start_gateway().await;
    let config = config(&gateway.url(), configure);
    let (release_tx, release) = watch::channel(false);
    let answered = Arc::new(Notify::new());
    let held = Held {
        inner: HttpGateway::new(&config).unwrap(),
        hold_from,
        calls: std::sync::atomic::AtomicUsize::new(0),
        answered: Arc::clone(&answered),
        release,
    };
    let auth = WachtAuthLayer::with_gateway(config, held).unwrap();
    let addr = common::serve(common::router(auth.clone())).await;
    let app = common::TestApp {
        addr,
        gateway,
        auth,
        http: reqwest::Client::new(),
    };
    (app, answered, release_tx)
}

#[tokio::test]
async fn invalidate_is_not_undone_by_a_request_that_joins_an_in_flight_check() {
    let (app, answered, release) = held_app(1, |b| {
        b.stale_if_error(Duration::from_secs(60))
            .negative_ttl(Duration::from_millis(200))
    })
    .await;
    let token = app.token(&["projects:read"]);
    let app = Arc::new(app);
    let first = {
        let (app, token) = (Arc::clone(&app), token.clone());
        tokio::spawn(async move { app.get("/whoami", Some(&token)).await.status() })
    };
    // The gateway has answered "allowed"; the answer is on its way.
    answered.notified().await;
    // Meanwhile the grant is revoked and the application invalidates the token.
    app.gateway.revoke(&token);
    app.auth.invalidate(&token).await;
    // A request after the invalidation finds the earlier check still in flight.
    let joiner = {
        let (app, token) = (Arc::clone(&app), token.clone());
        tokio::spawn(async move { app.get("/whoami", Some(&token)).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send_replace(true);
    let _ = first.await.unwrap();
    assert_eq!(
        joiner.await.unwrap(),
        401,
        "served the pre-revocation answer after invalidate"
    );
    // Nothing from before the invalidation is served from any cache, fresh or stale.
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
    app.gateway.set_fault(Some(Fault::Status(503)));
    tokio::time::sleep(Duration::from_millis(300)).await; // past the negative ttl
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 503);
}

#[tokio::test]
async fn invalidate_is_not_undone_by_a_background_refresh_in_flight() {
    let (app, answered, release) = held_app(2, |b| {
        b.ttl(Duration::from_secs(1)).refresh_ahead(Duration::from_millis(800))
    })
    .await;
    let token = app.token(&["projects:read"]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Inside the refresh window: served from the cache, and a background refresh starts.
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    answered.notified().await;
    app.gateway.revoke(&token);
    app.auth.invalidate(&token).await;
    release.send_replace(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
}

// 5. Stale grace after a rejection ----------------------------------------------------------

#[tokio::test]
async fn a_token_the_gateway_rejected_is_not_served_during_a_later_outage() {
    let ttl = Duration::from_millis(300);
    let negative_ttl = Duration::from_millis(200);
    let app = start(|b| {
        b.ttl(ttl)
            .negative_ttl(negative_ttl)
            .stale_if_error(Duration::from_secs(60))
            .expected_audience(RESOURCE)
    })
    .await;
    let revoked = app.token(&["projects:read"]);
    let moved = app.token(&["projects:read"]);
    let denied_client = "oc_deniedDuringTheIncident000000001";
    let denied = app.token_with(|_| TokenGrant::new(denied_client).oauth_resource(RESOURCE));
    for token in [&revoked, &moved, &denied] {
        assert_eq!(app.get("/whoami", Some(token)).await.status(), 200);
    }
    // Revoked at Wacht; re-issued for another audience (a pin now fails); client denied here.
    app.gateway.revoke(&revoked);
    app.gateway.register(
        &moved,
        TokenGrant::new("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl").oauth_resource("https://other.example.com/mcp"),
    );
    app.auth.verifier().deny_client(denied_client).await;
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    for token in [&revoked, &moved, &denied] {
        assert_eq!(app.get("/whoami", Some(token)).await.status(), 401);
    }
    app.auth.verifier().allow_client(denied_client).await;
    // The gateway goes down once the rejections have left the negative cache.
    tokio::time::sleep(negative_ttl + Duration::from_millis(50)).await;
    app.gateway.set_fault(Some(Fault::Status(503)));
    for token in [&revoked, &moved, &denied] {
        assert_eq!(
            app.get("/whoami", Some(token)).await.status(),
            503,
            "a rejected token came back from the outage grace"
        );
    }
}
