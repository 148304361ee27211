//! Streams end with the token: an SSE stream (Axum) and a gRPC server stream (the example's
//! `Ticks`, a real Tonic client), opened with a valid token over loopback HTTP/1.1 and HTTP/2,
//! end at the token's expiry and soon after `invalidate`, `deny_client` or `invalidate_all`,
//! while the streams of callers those do not cover keep flowing. An SSE stream just ends (a
//! clean end of the chunked body); a gRPC stream ends with `UNAUTHENTICATED` in its trailers.
//!
//! No assertion is on how fast: each wait has a generous upper bound, so a stream that never
//! ends fails the test instead of hanging it.

use crate::common;

use crate::grpc_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt as _};
use http::Method;
use http_body_util::Full;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway, TokenGrant, generate_token};
use tower_wacht::{Principal, WachtAuthConfig, WachtAuthLayer};

use grpc_server::pb::greeter_client::GreeterClient;
use grpc_server::pb::{Tick, TicksRequest};

/// How often a stream asks whether its caller still stands, in these tests.
const RECHECK: Duration = Duration::from_millis(300);
/// Upper bound for anything to happen: a stream that has not ended by then never will.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a token registered as short-lived lives.
const SHORT: Duration = Duration::from_secs(2);
const CLIENT_A: &str = "oc_streamsTestClientA0000000000001";
const CLIENT_B: &str = "oc_streamsTestClientB0000000000002";

fn config(gateway: &FakeGateway) -> WachtAuthConfig {
    WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(common::API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .stream_recheck(RECHECK)
        .build()
        .expect("valid config")
}

/// A fresh token of `client`, living `lifetime`.
fn token(gateway: &FakeGateway, client: &str, lifetime: Duration) -> String {
    let token = generate_token();
    gateway.register(
        &token,
        TokenGrant::new(client)
            .granted_resource(common::ORG_URN)
            .expires_in(lifetime),
    );
    token
}

// ---------------------------------------------------------------------------------------------
// SSE over HTTP/1.1

/// An event every 100 ms, forever: only the layer ends it.
async fn events(principal: Principal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let client = principal.client_id().to_string();
    let ticks = futures_util::stream::unfold(0u64, move |n| {
        let client = client.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok(Event::default().event("tick").data(format!("{n} {client}"))), n + 1))
        }
    });
    Sse::new(ticks)
}

/// One event, then silence: only a timer can end it.
async fn quiet(principal: Principal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = Event::default().event("tick").data(principal.client_id());
    Sse::new(futures_util::stream::iter([Ok(first)]).chain(futures_util::stream::pending()))
}

struct SseApp {
    addr: SocketAddr,
    gateway: FakeGateway,
    auth: WachtAuthLayer,
}

async fn sse_app() -> SseApp {
    let gateway = common::start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway)).expect("layer builds");
    let router = Router::new().route("/events", get(events)).route("/quiet", get(quiet));
    let addr = common::serve(router.layer(auth.clone())).await;
    SseApp { addr, gateway, auth }
}

/// An open SSE response.
struct SseStream(reqwest::Response);

impl SseApp {
    /// Opens `/events` with `token` and reads its first event.
    async fn open(&self, token: &str) -> SseStream {
        self.open_path("/events", token).await
    }

    /// Opens `path` with `token` and reads its first event.
    async fn open_path(&self, path: &str, token: &str) -> SseStream {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(token)
            .send()
            .await
            .expect("the stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut stream = SseStream(response);
        stream.event().await;
        stream
    }
}

impl SseStream {
    /// The next chunk: `Some` while the stream flows, `None` once it ended cleanly. An abort
    /// (not a clean end of the chunked body) fails the test.
    async fn chunk(&mut self) -> Option<bytes::Bytes> {
        tokio::time::timeout(DEADLINE, self.0.chunk())
            .await
            .expect("the stream neither flows nor ends")
            .expect("the stream ends cleanly, not with a broken connection")
    }

    /// Reads until the next event; panics if the stream ended.
    async fn event(&mut self) {
        let chunk = self.chunk().await.expect("an event, not the end of the stream");
        assert!(String::from_utf8_lossy(&chunk).contains("event: tick"), "{chunk:?}");
    }

    /// Reads until the stream ends cleanly; returns how many events came before.
    async fn until_end(&mut self) -> usize {
        let mut events = 0;
        let ended = tokio::time::timeout(DEADLINE, async {
            while let Some(chunk) = self.chunk().await {
                events += String::from_utf8_lossy(&chunk).matches("event: tick").count();
            }
        })
        .await;
        assert!(ended.is_ok(), "the stream was not ended (it sent {events} events)");
        events
    }

    /// Still flowing for longer than a stream takes to be ended: several recheck periods.
    async fn keeps_flowing(&mut self) {
        let until = tokio::time::Instant::now() + RECHECK * 3;
        while tokio::time::Instant::now() < until {
            self.event().await;
        }
    }
}

#[tokio::test]
async fn an_sse_stream_ends_at_its_tokens_expiry() {
    let app = sse_app().await;
    let mut short = app.open(&token(&app.gateway, CLIENT_A, SHORT)).await;
    let mut long = app
        .open(&token(&app.gateway, CLIENT_A, Duration::from_secs(3600)))
        .await;
    short.until_end().await;
    long.keeps_flowing().await;
}

#[tokio::test]
async fn an_sse_stream_ends_after_invalidate() {
    let app = sse_app().await;
    let token_a = token(&app.gateway, CLIENT_A, Duration::from_secs(3600));
    let mut revoked = app.open(&token_a).await;
    // Another token of the same client is not covered.
    let mut other = app
        .open(&token(&app.gateway, CLIENT_A, Duration::from_secs(3600)))
        .await;
    app.auth.invalidate(&token_a).await;
    revoked.until_end().await;
    other.keeps_flowing().await;
}

#[tokio::test]
async fn an_sse_stream_ends_after_deny_client() {
    let app = sse_app().await;
    let mut denied = app
        .open(&token(&app.gateway, CLIENT_A, Duration::from_secs(3600)))
        .await;
    let mut other = app
        .open(&token(&app.gateway, CLIENT_B, Duration::from_secs(3600)))
        .await;
    app.auth.deny_client(CLIENT_A).await;
    denied.until_end().await;
    other.keeps_flowing().await;
}

#[tokio::test]
async fn an_sse_stream_ends_after_invalidate_user() {
    let app = sse_app().await;
    let of_user = |user: i64| {
        let token = generate_token();
        app.gateway.register(
            &token,
            TokenGrant::new(CLIENT_A)
                .granted_resource(common::ORG_URN)
                .owner_user_id(user)
                .expires_in(Duration::from_secs(3600)),
        );
        token
    };
    let mut invalidated = app.open(&of_user(42)).await;
    let mut other = app.open(&of_user(43)).await;
    app.auth.invalidate_user(tower_wacht::principal::UserId(42)).await;
    invalidated.until_end().await;
    other.keeps_flowing().await;
}

#[tokio::test]
async fn a_silent_sse_stream_ends_too() {
    let app = sse_app().await;
    let mut expiring = app.open_path("/quiet", &token(&app.gateway, CLIENT_A, SHORT)).await;
    let mut denied = app
        .open_path("/quiet", &token(&app.gateway, CLIENT_B, Duration::from_secs(3600)))
        .await;
    app.auth.deny_client(CLIENT_B).await;
    assert_eq!(denied.until_end().await, 0);
    assert_eq!(expiring.until_end().await, 0);
}

#[tokio::test]
async fn every_sse_stream_ends_after_invalidate_all() {
    let app = sse_app().await;
    let mut a = app
        .open(&token(&app.gateway, CLIENT_A, Duration::from_secs(3600)))
        .await;
    let mut b = app
        .open(&token(&app.gateway, CLIENT_B, Duration::from_secs(3600)))
        .await;
    app.auth.invalidate_all().await;
    a.until_end().await;
    b.until_end().await;
}

// ---------------------------------------------------------------------------------------------
// gRPC server streams over HTTP/2: the example's `Ticks` (one tick a second), a Tonic client

struct GrpcApp {
    addr: SocketAddr,
    gateway: FakeGateway,
    auth: WachtAuthLayer,
    client: GreeterClient<Channel>,
}

async fn grpc_app() -> GrpcApp {
    let gateway = common::start_gateway().await;
    let auth = WachtAuthLayer::new(config(&gateway)).expect("layer builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(grpc_server::serve(listener, auth.clone(), std::future::pending()));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(DEADLINE)
        .connect()
        .await
        .expect("the Tonic client connects");
    GrpcApp {
        addr,
        gateway,
        auth,
        client: GreeterClient::new(channel),
    }
}

/// A `TicksRequest` for `count` ticks (0: no limit) with `token`.
fn ticks_request(token: &str, count: u32) -> tonic::Request<TicksRequest> {
    let mut request = tonic::Request::new(TicksRequest { count });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

impl GrpcApp {
    /// Opens an unlimited `Ticks` stream with `token` and reads its first tick.
    async fn open(&self, token: &str) -> Streaming<Tick> {
        let mut stream = self
            .client
            .clone()
            .ticks(ticks_request(token, 0))
            .await
            .expect("the stream opens")
            .into_inner();
        next_tick(&mut stream).await;
        stream
    }
}

async fn next_tick(stream: &mut Streaming<Tick>) -> Tick {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a tick in time")
        .expect("a tick, not a status")
        .expect("a tick, not the end")
}

/// Reads until the stream ends; asserts it ended with UNAUTHENTICATED, the reason and the
/// challenge in its trailers.
async fn ends_unauthenticated(stream: &mut Streaming<Tick>, reason: &str) {
    let status = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(_tick)) => continue,
                Ok(None) => panic!("the stream ended with OK, not UNAUTHENTICATED"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream was not ended");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(reason), "{status:?}");
    let challenge = status.metadata().get("www-authenticate").expect("a challenge");
    assert!(challenge.to_str().expect("ascii").contains("error=\"invalid_token\""));
}

/// Still flowing for several recheck periods (two ticks, a second apart).
async fn keeps_ticking(stream: &mut Streaming<Tick>) {
    next_tick(stream).await;
    next_tick(stream).await;
}

#[tokio::test]
async fn a_grpc_server_stream_ends_with_unauthenticated_at_its_tokens_expiry() {
    let app = grpc_app().await;
    let mut short = app.open(&token(&app.gateway, CLIENT_A, SHORT)).await;
    let mut long = app
        .open(&token(&app.gateway, CLIENT_A, Duration::from_secs(3600)))
        .await;
    ends_unauthenticated(&mut short, "has expired").await;
    keeps_ticking(&mut long).await;
}

#[tokio::test]
async fn a_grpc_server_stream_ends_with_unauthenticated_after_invalidate() {
    let app = grpc_app().await;
    let token_a = token(&app.gateway, CLIENT_A, Duration::from_secs(3600));
    let mut revoked = app.open(&token_a).await;
    let mut other = app
        .open(&token(&app.gateway, CLIENT_A, Duration::from_secs(3600)))
        .await;
    app.auth.invalidate(&token_a).await;
    ends_unauthenticated(&mut revoked, "invalid, expired or revoked").await;
    keeps_ticking(&mut other).await;
}

#[tokio::test]
async fn a_grpc_server_stream_ends_with_unauthenticated_after_deny_client() {
    let app = grpc_app().await;
    let mut denied = app
        .open(&token(&app.gateway, CLIENT_A, Duration::from_secs(3600)))
        .await;
    let mut other = app
        .open(&token(&app.gateway, CLIENT_B, Duration::from_secs(3600)))
        .await;
    app.auth.deny_client(CLIENT_A).await;
    ends_unauthenticated(&mut denied, "not allowed").await;
    keeps_ticking(&mut other).await;
}

#[tokio::test]
async fn a_grpc_stream_that_ends_by_itself_keeps_its_ok_trailers() {
    let app = grpc_app().await;
    let token = token(&app.gateway, CLIENT_A, Duration::from_secs(3600));
    let mut stream = app
        .client
        .clone()
        .ticks(ticks_request(&token, 2))
        .await
        .expect("the stream opens")
        .into_inner();
    assert_eq!(next_tick(&mut stream).await.seq, 1);
    assert_eq!(next_tick(&mut stream).await.seq, 2);
    let end = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("the end in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn on_the_wire_the_cut_grpc_stream_carries_its_status_in_trailers() {
    let app = grpc_app().await;
    let token = token(&app.gateway, CLIENT_A, SHORT);
    let message = {
        use prost::Message as _;
        TicksRequest { count: 0 }.encode_to_vec()
    };
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/greeter.v1.Greeter/Ticks", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(bytes::Bytes::from(frame)))
        .expect("request");
    let raw = tokio::time::timeout(DEADLINE, common::h2::exchange(app.addr, request))
        .await
        .expect("the stream was not ended");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("grpc-status"), None, "not a trailers-only refusal: {raw:?}");
    assert!(!raw.body.is_empty(), "ticks came first");
    let trailers = raw.trailers.as_ref().expect("trailers");
    assert_eq!(trailers["grpc-status"], "16", "{raw:?}");
    assert_eq!(trailers["grpc-message"], "invalid token: The access token has expired.");
}
