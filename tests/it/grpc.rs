//! gRPC end to end: the example's Tonic server (`examples/grpc_server.rs`) behind
//! `WachtAuthLayer` on `tonic::transport::Server`, a Tonic client, and a `FakeGateway`, all on
//! loopback. Every refusal must reach the client as the right gRPC status, and on the wire as
//! a well-formed trailers-only gRPC response (HTTP 200, `content-type: application/grpc`,
//! `grpc-status` in the headers), because gRPC clients invent a status from plain HTTP errors
//! and would hide a malformed answer.

use crate::common;
use crate::common::h2::Raw;

use crate::grpc_server;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use prost::Message as _;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway, Fault, TokenGrant, generate_token};
use tower_wacht::{
    Permissions, RequireMethodPermissionsLayer, WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer,
};

use grpc_server::pb::greeter_client::GreeterClient;
use grpc_server::pb::greeter_server::GreeterServer;
use grpc_server::pb::{HelloReply, HelloRequest, WhisperRequest};
use grpc_server::{GreeterService, SECRET_PERMISSION, SHOUT_PATH, SHOUT_PERMISSION};

const CLIENT_ID: &str = "oc_gRPCendToEndTestClient000000001";
const SAY_HELLO: &str = "/greeter.v1.Greeter/SayHello";
const REALM: &str = "greeter";
/// Upper bound for any single exchange, so a broken server fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(10);

/// The example's server on 127.0.0.1:0, its gateway, and a connected Tonic client.
struct GrpcApp {
    addr: SocketAddr,
    gateway: FakeGateway,
    client: GreeterClient<Channel>,
}

fn config(
    gateway: &FakeGateway,
    configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder,
) -> WachtAuthConfig {
    let builder = grpc_server::with_client_ip(WachtAuthConfig::builder())
        .gateway_url(gateway.url())
        .api_key(common::API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .realm(REALM)
        .request_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(300));
    configure(builder).build().expect("valid config")
}

/// Starts a gateway and the example's server (`grpc_server::serve`).
async fn start(configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder) -> GrpcApp {
    let gateway = common::start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway, configure)).expect("layer builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(grpc_server::serve(listener, auth, std::future::pending()));
    GrpcApp {
        addr,
        gateway,
        client: connect(addr).await,
    }
}

/// Serves the greeter with exactly `Server::builder().layer(auth)[.layer(guard)].add_service(..)`:
/// no adapter, nothing else in front.
async fn serve_bare(auth: WachtAuthLayer, guard: Option<RequireMethodPermissionsLayer>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let greeter = GreeterServer::new(GreeterService);
    match guard {
        None => {
            let router = Server::builder().layer(auth).add_service(greeter);
            tokio::spawn(router.serve_with_incoming(incoming));
        }
        Some(guard) => {
            let router = Server::builder().layer(auth).layer(guard).add_service(greeter);
            tokio::spawn(router.serve_with_incoming(incoming));
        }
    }
    addr
}

async fn connect(addr: SocketAddr) -> GreeterClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect()
        .await
        .expect("the Tonic client connects");
    GreeterClient::new(channel)
}

impl GrpcApp {
    /// Registers a fresh token for an org-scoped grant with the given scopes.
    fn token(&self, scopes: &[&str]) -> String {
        register(&self.gateway, scopes)
    }
}

fn register(gateway: &FakeGateway, scopes: &[&str]) -> String {
    let token = generate_token();
    gateway.register(
        &token,
        TokenGrant::new(CLIENT_ID)
            .scopes(scopes.iter().copied())
            .granted_resource(common::ORG_URN)
            .expires_in(Duration::from_secs(3600)),
    );
    token
}

/// A `HelloRequest` carrying `authorization: <authorization>` metadata, if any.
fn hello(authorization: Option<&str>) -> tonic::Request<HelloRequest> {
    let mut request = tonic::Request::new(HelloRequest { name: "Ada".into() });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii metadata"));
    }
    request
}

/// A `WhisperRequest` to Ada carrying `authorization: <authorization>` metadata, if any.
fn whisper(authorization: Option<&str>, secret: bool) -> tonic::Request<WhisperRequest> {
    let mut request = tonic::Request::new(WhisperRequest {
        name: "Ada".into(),
        secret,
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii metadata"));
    }
    request
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Unwraps the refusal and checks its code.
fn refused(result: Result<tonic::Response<HelloReply>, Status>, code: Code) -> Status {
    match result {
        Ok(reply) => panic!("expected {code:?}, got OK {:?}", reply.get_ref()),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status
        }
    }
}

fn metadata(status: &Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2, to see what the client libraries would paper over.

impl Raw {
    /// A well-formed gRPC Trailers-Only refusal with this code.
    #[track_caller]
    fn assert_trailers_only(&self, code: Code) {
        assert_eq!(self.status, StatusCode::OK, "gRPC refusals are HTTP 200: {self:?}");
        assert_eq!(self.header("content-type"), Some("application/grpc"), "{self:?}");
        assert_eq!(
            self.header("grpc-status"),
            Some((code as i32).to_string().as_str()),
            "{self:?}"
        );
        let message = self.header("grpc-message").expect("a grpc-message");
        assert!(!message.is_empty());
        assert!(
            message.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "grpc-message is percent-encoded printable ASCII: {message:?}"
        );
        assert!(
            self.ended_with_headers,
            "Trailers-Only: END_STREAM on the HEADERS frame: {self:?}"
        );
        assert!(self.body.is_empty() && self.trailers.is_none(), "{self:?}");
    }
}

/// One gRPC-framed `HelloRequest`.
fn grpc_frame(name: &str) -> Bytes {
    let message = HelloRequest { name: name.into() }.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small message").to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

/// Sends one request over a fresh HTTP/2 (prior knowledge) connection and reads everything back.
async fn raw_h2(addr: SocketAddr, request: http::Request<Full<Bytes>>) -> Raw {
    tokio::time::timeout(DEADLINE, common::h2::exchange(addr, request))
        .await
        .expect("raw exchange in time")
}

/// A gRPC call as any gRPC client sends it: POST, `content-type`, `te: trailers`, one frame.
fn grpc_request(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    authorization: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.body(Full::new(grpc_frame("Ada"))).expect("request")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn valid_token_reaches_the_handler_with_its_principal() {
    let mut app = start(|b| b).await;
    let token = app.token(&["projects:read"]);
    let reply = app
        .client
        .say_hello(hello(Some(&bearer(&token))))
        .await
        .expect("OK")
        .into_inner();
    assert_eq!(
        reply.client_id, CLIENT_ID,
        "the handler read the Principal from the extensions"
    );
    assert_eq!(reply.message, format!("Hello, Ada! You are {CLIENT_ID}."));
    assert_eq!(reply.permissions, ["org:projects:read", "projects:read"]);

    // The gateway saw the caller's address (the example's `client_ip` hook reads Tonic's
    // TcpConnectInfo).
    let requests = app.gateway.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].client_ip.as_deref(), Some("127.0.0.1"));

    // Cached: the next call does not reach the gateway.
    app.client.say_hello(hello(Some(&bearer(&token)))).await.expect("OK");
    assert_eq!(app.gateway.calls(), 1);

    // The raw successful response is an ordinary gRPC response: status in the trailers.
    let raw = raw_h2(
        app.addr,
        grpc_request(app.addr, SAY_HELLO, "application/grpc", Some(&bearer(&token))),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK);
    assert!(raw.header("grpc-status").is_none(), "{raw:?}");
    assert!(!raw.body.is_empty());
    let trailers = raw.trailers.expect("trailers");
    assert_eq!(trailers.get("grpc-status").and_then(|v| v.to_str().ok()), Some("0"));
}

#[tokio::test]
async fn the_layer_works_on_a_bare_tonic_server_with_no_adapter() {
    let gateway = common::start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway, |b| b)).expect("layer builds");
    let mut client = connect(serve_bare(auth, None).await).await;
    let token = register(&gateway, &[]);
    let reply = client.say_hello(hello(Some(&bearer(&token)))).await.expect("OK");
    assert_eq!(reply.get_ref().client_id, CLIENT_ID);
    // No guard on this server: the unguarded Shout only needs a valid token.
    assert!(client.shout(hello(Some(&bearer(&token)))).await.is_ok());
    refused(client.say_hello(hello(None)).await, Code::Unauthenticated);
}

#[tokio::test]
async fn a_call_reports_post_and_its_method_path_to_the_gateway() {
    // The example's server: Tonic routes the call, no template anywhere.
    let mut app = start(|b| b).await;
    let token = app.token(&[]);
    app.client.say_hello(hello(Some(&bearer(&token)))).await.expect("OK");
    let requests = app.gateway.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].resource.as_str()),
        ("POST", SAY_HELLO)
    );

    // Tonic's routes as an Axum router with the layer inside it: the route matched there is
    // the service's template (`/greeter.v1.Greeter/{*rest}`), yet the method path is reported.
    let gateway = common::start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway, |b| b)).expect("layer builds");
    let router = tonic::service::Routes::new(GreeterServer::new(GreeterService))
        .into_axum_router()
        .layer(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        Server::builder()
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming(incoming),
    );
    let mut client = connect(addr).await;
    let token = register(&gateway, &[]);
    client.say_hello(hello(Some(&bearer(&token)))).await.expect("OK");
    let requests = gateway.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].resource.as_str()),
        ("POST", SAY_HELLO)
    );
}

#[tokio::test]
async fn missing_and_invalid_tokens_are_unauthenticated() {
    let mut app = start(|b| b).await;

    let status = refused(app.client.say_hello(hello(None)).await, Code::Unauthenticated);
    assert_eq!(status.message(), "no bearer token was presented");
    assert_eq!(
        metadata(&status, "www-authenticate").as_deref(),
        Some("Bearer realm=\"greeter\""),
        "the Bearer challenge is echoed as metadata"
    );
    refused(
        app.client.say_hello(hello(Some("Basic dXNlcjpwYXNz"))).await,
        Code::Unauthenticated,
    );
    let status = refused(
        app.client.say_hello(hello(Some("Bearer not a token"))).await,
        Code::Unauthenticated,
    );
    assert!(status.message().starts_with("invalid token"), "{status:?}");
    assert_eq!(app.gateway.calls(), 0, "malformed credentials never reach the gateway");

    let unknown = generate_token();
    let status = refused(
        app.client.say_hello(hello(Some(&bearer(&unknown)))).await,
        Code::Unauthenticated,
    );
    assert!(
        !status.message().contains(&unknown),
        "the message never echoes the token"
    );
    assert!(
        metadata(&status, "www-authenticate").is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "{status:?}"
    );
    assert_eq!(app.gateway.calls(), 1);

    let revoked = app.token(&[]);
    app.gateway.revoke(&revoked);
    refused(
        app.client.shout(hello(Some(&bearer(&revoked)))).await,
        Code::Unauthenticated,
    );

    // Repeated Authorization headers are a malformed request: INVALID_ARGUMENT.
    let token = app.token(&[]);
    let mut request = hello(Some(&bearer(&token)));
    request
        .metadata_mut()
        .append("authorization", bearer(&token).parse().expect("ascii"));
    refused(app.client.say_hello(request).await, Code::InvalidArgument);
}

#[tokio::test]
async fn missing_method_permission_is_permission_denied() {
    // One reported route: rate-limit metering learns the rules of no second method (which
    // would ask the gateway once), so every call counted here is a token's first check.
    let mut app = start(|b| b.report_fixed(http::Method::POST, "/")).await;
    let without = app.token(&["projects:read"]);
    let with = app.token(&[SHOUT_PERMISSION]);

    let status = refused(
        app.client.shout(hello(Some(&bearer(&without)))).await,
        Code::PermissionDenied,
    );
    assert_eq!(
        status.message(),
        format!("insufficient scope: requires {SHOUT_PERMISSION}")
    );
    assert!(
        metadata(&status, "www-authenticate")
            .is_some_and(|c| c.contains("error=\"insufficient_scope\"") && c.contains(SHOUT_PERMISSION)),
        "{status:?}"
    );
    // The same token may call the unmapped method (documented default: allowed).
    assert!(app.client.say_hello(hello(Some(&bearer(&without)))).await.is_ok());

    let reply = app
        .client
        .shout(hello(Some(&bearer(&with))))
        .await
        .expect("OK with the permission")
        .into_inner();
    assert_eq!(
        reply.message,
        format!("HELLO, ADA! YOU ARE {}.", CLIENT_ID.to_ascii_uppercase())
    );
    assert_eq!(reply.client_id, CLIENT_ID);
    // Guards are answered from the cached principal: one gateway call per token.
    assert_eq!(app.gateway.calls(), 2);
}

/// Handler-initiated step-up: `Whisper` alone knows that a secret whisper needs
/// `greeter:secret` (no method guard can see the request), asks for it
/// (`InsufficientScope::step_up`) and returns its own `PERMISSION_DENIED`; the layer answers
/// instead, with its challenge in `www-authenticate`, on a first (verified) call and a cached
/// one alike. A token with the challenged scopes then succeeds.
#[tokio::test]
async fn a_method_that_asks_for_more_scope_gets_permission_denied_with_the_layers_challenge() {
    let mut app = start(|b| b.handler_step_up(true)).await;
    let without = app.token(&["projects:read"]);
    let expected = "Bearer scope=\"greeter:secret projects:read\", error=\"insufficient_scope\", \
                    error_description=\"The access token lacks a permission this operation requires.\", \
                    realm=\"greeter\"";
    for call in ["the first call (verified with the gateway)", "a second call (cached)"] {
        let status = refused(
            app.client.whisper(whisper(Some(&bearer(&without)), true)).await,
            Code::PermissionDenied,
        );
        assert_eq!(
            status.message(),
            "insufficient scope: requires greeter:secret",
            "{call}"
        );
        assert_eq!(
            metadata(&status, "www-authenticate").as_deref(),
            Some(expected),
            "{call}"
        );
    }
    // A whisper that is no secret needs nothing more.
    let plain = app.client.whisper(whisper(Some(&bearer(&without)), false)).await;
    assert_eq!(plain.expect("a plain whisper").into_inner().client_id, CLIENT_ID);

    // On the wire: a well-formed trailers-only refusal carrying the challenge.
    let message = WhisperRequest {
        name: "Ada".into(),
        secret: true,
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/greeter.v1.Greeter/Whisper", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", bearer(&without))
        .body(Full::new(Bytes::from(frame)))
        .expect("request");
    let raw = raw_h2(app.addr, request).await;
    raw.assert_trailers_only(Code::PermissionDenied);
    assert_eq!(raw.header("www-authenticate"), Some(expected), "{raw:?}");
    assert_eq!(raw.header("cache-control"), Some("no-store"), "{raw:?}");

    // The client asks for what the challenge names; the new token is served.
    let scope = expected
        .split("scope=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a scope parameter");
    let scopes: Vec<&str> = scope.split(' ').collect();
    assert_eq!(scopes, [SECRET_PERMISSION, "projects:read"]);
    let upgraded = app.token(&scopes);
    let reply = app
        .client
        .whisper(whisper(Some(&bearer(&upgraded)), true))
        .await
        .expect("OK after step-up")
        .into_inner();
    assert_eq!(reply.message, format!("psst, Ada. You are {CLIENT_ID}."));
}

#[tokio::test]
async fn a_scope_hierarchy_applies_to_method_permissions() {
    let admin = "greeter:admin";
    let mut app =
        start(|b| b.scope_hierarchy(tower_wacht::scopes::ScopeHierarchy::new().implies(admin, [SHOUT_PERMISSION])))
            .await;
    let token = app.token(&[admin]);
    assert!(
        app.client.shout(hello(Some(&bearer(&token)))).await.is_ok(),
        "implied by {admin}"
    );
    let other = app.token(&["projects:read"]);
    refused(
        app.client.shout(hello(Some(&bearer(&other)))).await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn method_rules_service_rules_and_deny_unmapped_end_to_end() {
    let gateway = common::start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway, |b| b)).expect("layer builds");

    // A service-wide rule, overridden for one method.
    let guard = RequireMethodPermissionsLayer::new()
        .route(
            "/greeter.v1.Greeter/*",
            Permissions::any(["greeter:read", "greeter:admin"]),
        )
        .route(SHOUT_PATH, Permissions::all([SHOUT_PERMISSION]));
    let mut client = connect(serve_bare(auth.clone(), Some(guard)).await).await;
    let reader = register(&gateway, &["greeter:read"]);
    let shouter = register(&gateway, &[SHOUT_PERMISSION]);
    let nobody = register(&gateway, &[]);
    assert!(client.say_hello(hello(Some(&bearer(&reader)))).await.is_ok());
    refused(
        client.say_hello(hello(Some(&bearer(&nobody)))).await,
        Code::PermissionDenied,
    );
    refused(
        client.say_hello(hello(Some(&bearer(&shouter)))).await,
        Code::PermissionDenied,
    );
    refused(
        client.shout(hello(Some(&bearer(&reader)))).await,
        Code::PermissionDenied,
    );
    assert!(client.shout(hello(Some(&bearer(&shouter)))).await.is_ok());

    // deny_unmapped: SayHello has no rule, so nobody may call it, whatever they hold.
    let guard = RequireMethodPermissionsLayer::new()
        .route(SHOUT_PATH, Permissions::all([SHOUT_PERMISSION]))
        .deny_unmapped();
    let mut client = connect(serve_bare(auth, Some(guard)).await).await;
    let status = refused(
        client.say_hello(hello(Some(&bearer(&shouter)))).await,
        Code::PermissionDenied,
    );
    assert_eq!(
        status.message(),
        "insufficient scope: no permission grants access to this operation"
    );
    assert!(client.shout(hello(Some(&bearer(&shouter)))).await.is_ok());
    // Authentication still comes first.
    refused(client.say_hello(hello(None)).await, Code::Unauthenticated);
}

#[tokio::test]
async fn gateway_down_is_unavailable_with_a_retry_hint() {
    let mut app = start(|b| b.unavailable_retry_after(Duration::from_secs(7))).await;
    let token = app.token(&[]);
    for fault in [
        Fault::Status(503),
        Fault::Status(500),
        Fault::DropConnection,
        Fault::Hang,
    ] {
        app.gateway.set_fault(Some(fault.clone()));
        let status = refused(
            app.client.say_hello(hello(Some(&bearer(&token)))).await,
            Code::Unavailable,
        );
        assert_eq!(
            metadata(&status, "grpc-retry-pushback-ms").as_deref(),
            Some("7000"),
            "{fault:?}"
        );
        assert!(
            metadata(&status, "www-authenticate").is_none(),
            "{fault:?}: UNAVAILABLE must not look like a bad token"
        );
    }
    // Nothing was cached: once the gateway answers, the token works.
    app.gateway.set_fault(None);
    assert!(app.client.say_hello(hello(Some(&bearer(&token)))).await.is_ok());
}

#[tokio::test]
async fn unreachable_gateway_is_unavailable() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let mut app = start(|b| b.gateway_url(format!("http://127.0.0.1:{port}"))).await;
    refused(
        app.client.say_hello(hello(Some(&bearer(&generate_token())))).await,
        Code::Unavailable,
    );
}

#[tokio::test]
async fn gateway_rate_limit_is_resource_exhausted_with_a_retry_hint() {
    let mut app = start(|b| b).await;
    let token = app.token(&[]);
    app.gateway
        .set_fault(Some(Fault::RateLimited { retry_after_ms: 1_500 }));
    let status = refused(
        app.client.say_hello(hello(Some(&bearer(&token)))).await,
        Code::ResourceExhausted,
    );
    assert_eq!(metadata(&status, "grpc-retry-pushback-ms").as_deref(), Some("1500"));
    assert_eq!(metadata(&status, "retry-after").as_deref(), Some("2"));

    // The gateway's own rate-limit rule gives the same answer.
    app.gateway.set_fault(None);
    app.gateway.set_rate_limit(0, Duration::from_secs(30));
    refused(
        app.client.shout(hello(Some(&bearer(&token)))).await,
        Code::ResourceExhausted,
    );
    // Not cached: once the gateway allows, the token works.
    app.gateway.set_rate_limit(1000, Duration::from_secs(60));
    assert!(app.client.say_hello(hello(Some(&bearer(&token)))).await.is_ok());
}

#[tokio::test]
async fn every_refusal_is_a_well_formed_trailers_only_grpc_response() {
    let app = start(|b| b).await;
    let addr = app.addr;
    let without = app.token(&[]);
    let token = app.token(&[SHOUT_PERMISSION]);
    // (what, gateway fault, method path, authorization header, expected code)
    let cases = [
        ("no token", None, SAY_HELLO, None, Code::Unauthenticated),
        (
            "malformed token",
            None,
            SAY_HELLO,
            Some("Bearer a b".to_owned()),
            Code::Unauthenticated,
        ),
        (
            "unknown token",
            None,
            SAY_HELLO,
            Some(bearer(&generate_token())),
            Code::Unauthenticated,
        ),
        (
            "missing permission",
            None,
            SHOUT_PATH,
            Some(bearer(&without)),
            Code::PermissionDenied,
        ),
        (
            "gateway down",
            Some(Fault::Status(503)),
            SAY_HELLO,
            Some(bearer(&token)),
            Code::Unavailable,
        ),
        (
            "gateway rate limit",
            Some(Fault::RateLimited { retry_after_ms: 2_000 }),
            SAY_HELLO,
            Some(bearer(&token)),
            Code::ResourceExhausted,
        ),
    ];
    for (what, fault, path, authorization, code) in cases {
        app.gateway.set_fault(fault);
        let raw = raw_h2(
            addr,
            grpc_request(addr, path, "application/grpc", authorization.as_deref()),
        )
        .await;
        println!("{what}: {raw:?}");
        raw.assert_trailers_only(code);
        // The retry hint: the configured default (5 s) when the gateway is down, the
        // gateway's own delay when it rate-limits, none otherwise.
        let pushback = match code {
            Code::Unavailable => Some("5000"),
            Code::ResourceExhausted => Some("2000"),
            _ => None,
        };
        assert_eq!(raw.header("grpc-retry-pushback-ms"), pushback, "{what}: {raw:?}");
    }
    app.gateway.set_fault(None);

    // Any application/grpc* content type is gRPC, in any case.
    for content_type in ["application/grpc+proto", "Application/GRPC", "APPLICATION/GRPC+PROTO"] {
        let raw = raw_h2(addr, grpc_request(addr, SAY_HELLO, content_type, None)).await;
        raw.assert_trailers_only(Code::Unauthenticated);
    }

    // What a gRPC client shows its user, verbatim on the wire.
    let raw = raw_h2(
        addr,
        grpc_request(addr, SHOUT_PATH, "application/grpc", Some(&bearer(&without))),
    )
    .await;
    assert_eq!(
        raw.header("grpc-message"),
        Some("insufficient scope: requires greeter:shout")
    );
}

#[tokio::test]
async fn plain_http_through_the_same_layer_keeps_the_http_behaviour() {
    let app = start(|b| b).await;
    let addr = app.addr;
    for (method, content_type) in [
        (Method::POST, Some("application/json")),
        (Method::GET, None),
        (Method::POST, Some("text/plain; charset=utf-8")),
    ] {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}{SAY_HELLO}"));
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let raw = raw_h2(
            addr,
            request.body(Full::new(Bytes::from_static(b"{}"))).expect("request"),
        )
        .await;
        assert_eq!(
            raw.status,
            StatusCode::UNAUTHORIZED,
            "{method} {content_type:?}: {raw:?}"
        );
        assert_eq!(raw.header("www-authenticate"), Some("Bearer realm=\"greeter\""));
        assert_eq!(raw.header("content-type"), Some("application/problem+json"));
        assert!(raw.header("grpc-status").is_none(), "{raw:?}");
        let problem: serde_json::Value = serde_json::from_slice(&raw.body).expect("problem+json body");
        assert_eq!(problem["status"], 401);
    }
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn concurrent_calls_with_one_new_token_make_one_gateway_call() {
    // A generous gateway timeout: the injected latency must never turn into UNAVAILABLE.
    let app = start(|b| b.request_timeout(Duration::from_secs(5))).await;
    // Slow gateway answers, so the calls overlap the first verification.
    app.gateway.set_fault(Some(Fault::Latency(Duration::from_millis(200))));
    let token = app.token(&[SHOUT_PERMISSION]);
    let mut tasks = Vec::new();
    // Four connections (one Tonic channel each), 25 multiplexed calls on each.
    for _ in 0..4 {
        let channel_client = connect(app.addr).await;
        for i in 0..25 {
            let mut client = channel_client.clone();
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let request = hello(Some(&bearer(&token)));
                if i % 2 == 0 {
                    client.say_hello(request).await
                } else {
                    client.shout(request).await
                }
                .map(|r| r.into_inner().client_id)
            }));
        }
    }
    assert_eq!(tasks.len(), 100);
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("OK"), CLIENT_ID);
    }
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn every_printed_demo_call_answers_as_documented() {
    // The short-lived token expires 2 s after the start here (2 minutes in the example).
    let (gateway, config, calls) = grpc_server::demo_with(Duration::from_secs(2))
        .await
        .expect("demo starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(grpc_server::serve(
        listener,
        WachtAuthLayer::new(config).expect("layer builds"),
        std::future::pending(),
    ));
    let mut client = connect(addr).await;
    assert_eq!(calls.len(), 9);
    assert!(calls.iter().any(|c| c.method == "Shout" && c.expect == Code::Ok));
    assert!(
        calls
            .iter()
            .any(|c| c.method == "Shout" && c.expect == Code::PermissionDenied)
    );
    for call in &calls {
        let command = call.grpcurl(&addr.to_string());
        assert!(
            command.starts_with("grpcurl -plaintext -import-path proto -proto greeter/v1/greeter.proto ")
                && command.ends_with(&format!(" {addr} greeter.v1.Greeter/{}", call.method)),
            "{command}"
        );
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("proto")
                .join(grpc_server::PROTO_FILE)
                .is_file()
        );
        let authorization = call.token.as_deref().map(bearer);
        if let Some(a) = &authorization {
            assert!(command.contains(&format!("-H 'authorization: {a}'")), "{command}");
        }
        assert!(command.contains(&format!(" -d '{}' ", call.data)), "{command}");
        if call.method == "Ticks" {
            let request: grpc_server::pb::TicksRequest = match call.data {
                "{}" => grpc_server::pb::TicksRequest { count: 0 },
                r#"{"count":3}"# => grpc_server::pb::TicksRequest { count: 3 },
                other => panic!("unexpected Ticks request {other}"),
            };
            let mut request = tonic::Request::new(request);
            if let Some(a) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", a.parse().expect("ascii"));
            }
            let outcome = tokio::time::timeout(Duration::from_secs(30), async {
                let mut stream = client.ticks(request).await?.into_inner();
                let mut ticks = 0;
                while stream.message().await?.is_some() {
                    ticks += 1;
                }
                Ok::<_, Status>(ticks)
            })
            .await
            .expect("the Ticks stream ends");
            match outcome {
                Ok(ticks) => {
                    assert_eq!(call.expect, Code::Ok, "{}: {command}", call.what);
                    assert_eq!(ticks, 3, "{}", call.what);
                }
                Err(status) => assert_eq!(status.code(), call.expect, "{}: {command}: {status:?}", call.what),
            }
            continue;
        }
        let request = hello(authorization.as_deref());
        let result = match call.method {
            "SayHello" => client.say_hello(request).await,
            "Shout" => client.shout(request).await,
            "Whisper" => {
                assert_eq!(call.data, r#"{"name":"Ada","secret":true}"#);
                client.whisper(whisper(authorization.as_deref(), true)).await
            }
            other => panic!("unknown method {other}"),
        };
        match result {
            Ok(reply) => {
                assert_eq!(call.expect, Code::Ok, "{}: {command}", call.what);
                let expected = if call.method != "SayHello" {
                    grpc_server::DEMO_SHOUTER
                } else {
                    grpc_server::DEMO_GREETER
                };
                assert_eq!(reply.get_ref().client_id, expected, "{}", call.what);
            }
            Err(status) => {
                assert_eq!(status.code(), call.expect, "{}: {command}: {status:?}", call.what);
                if call.method == "Whisper" {
                    // The method asked for the permission: the layer's challenge names it.
                    let challenge = metadata(&status, "www-authenticate").unwrap_or_default();
                    assert!(
                        challenge.contains("scope=\"greeter:secret"),
                        "{}: {status:?}",
                        call.what
                    );
                }
            }
        }
    }
    assert_eq!(
        gateway.calls(),
        6,
        "three demo tokens and one unknown token, each checked once, and once more per method whose rate-limit rules the token's app was not yet seen on"
    );
}
