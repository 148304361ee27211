//! A stream opened on one replica (SSE, a gRPC server stream) ends when another replica
//! invalidates its token or denies its client: the fleet's changes reach open streams as they
//! reach the cache.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt as _};
use tower_wacht::{ChangeOutcome, Principal, WachtAuthLayer};

use crate::common::start_gateway;
use crate::harness::{RedisServer, fleet_config, replica_config, token, wait_connected};

/// Upper bound for a stream to end: one that has not by then never will.
const DEADLINE: Duration = Duration::from_secs(30);

/// An event every 100 ms, forever: only the layer ends it.
async fn events(principal: Principal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let client = principal.client_id().to_string();
    Sse::new(futures_util::stream::unfold(0u64, move |n| {
        let client = client.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok(Event::default().data(format!("{n} {client}"))), n + 1))
        }
    }))
}

/// A replica serving `/events`, checking its streams every 300 ms.
async fn streaming_replica(
    gateway: &tower_wacht::testing::FakeGateway,
    redis: &RedisServer,
) -> (std::net::SocketAddr, WachtAuthLayer) {
    let config = replica_config(gateway, fleet_config(redis), "/")
        .to_builder()
        .stream_recheck(Duration::from_millis(300))
        .build()
        .expect("valid config");
    let auth = WachtAuthLayer::new(config).expect("layer builds");
    let addr = crate::common::serve(Router::new().route("/events", get(events)).layer(auth.clone())).await;
    (addr, auth)
}

/// Reads the stream until its body ends; `false` if it is still open at the deadline.
async fn ends(response: reqwest::Response) -> bool {
    let mut body = response.bytes_stream();
    tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_replica_ends_after_a_change_made_on_another() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let (a, a_auth) = streaming_replica(&gateway, &redis).await;
    let b = crate::harness::replica(&gateway, fleet_config(&redis), "/").await;
    wait_connected(&b).await;
    let started = std::time::Instant::now();
    while !a_auth.verifier().fleet_connected() {
        assert!(started.elapsed() < Duration::from_secs(10), "the fleet did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http = reqwest::Client::new();
    let open = |token: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://{a}/events"))
                .bearer_auth(token)
                .send()
                .await
                .expect("the stream opens");
            assert_eq!(response.status(), 200);
            response
        }
    };

    let denied_client = "oc_fleetStreamDenied00000000001";
    let denied = open(token(&gateway, denied_client)).await;
    let invalidated_token = token(&gateway, "oc_fleetStreamInvalidated000001");
    let invalidated = open(invalidated_token.clone()).await;
    let bystander = open(token(&gateway, "oc_fleetStreamBystander00000001")).await;

    assert_eq!(b.auth.deny_client(denied_client).await, ChangeOutcome::Durable);
    assert!(
        ends(denied).await,
        "a stream of a client denied on another replica kept flowing"
    );
    assert_eq!(b.auth.invalidate(&invalidated_token).await, ChangeOutcome::Durable);
    assert!(
        ends(invalidated).await,
        "a stream of a token invalidated on another replica kept flowing"
    );
    // A stream those changes do not cover keeps flowing.
    let mut bystander = bystander.bytes_stream();
    for _ in 0..3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), bystander.next()).await;
        assert!(
            matches!(chunk, Ok(Some(Ok(_)))),
            "an uncovered stream stopped: {chunk:?}"
        );
    }
}

/// A gRPC server stream (the example's `Ticks`, a real Tonic client) on one replica ends with
/// `UNAUTHENTICATED` when another replica denies its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_on_one_replica_ends_unauthenticated_after_a_denial_on_another() {
    use crate::grpc_server::pb::TicksRequest;
    use crate::grpc_server::pb::greeter_client::GreeterClient;

    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let config = replica_config(&gateway, fleet_config(&redis), "/")
        .to_builder()
        .stream_recheck(Duration::from_millis(300))
        .build()
        .expect("valid config");
    let auth = WachtAuthLayer::new(config).expect("layer builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(crate::grpc_server::serve(
        listener,
        auth.clone(),
        std::future::pending(),
    ));
    let other = crate::harness::replica(&gateway, fleet_config(&redis), "/").await;
    wait_connected(&other).await;
    let started = std::time::Instant::now();
    while !auth.verifier().fleet_connected() {
        assert!(started.elapsed() < Duration::from_secs(10), "the fleet did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("the Tonic client connects");
    let client = "oc_fleetGrpcStreamDenied0000001";
    let t = token(&gateway, client);
    let mut request = tonic::Request::new(TicksRequest { count: 0 });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {t}").parse().expect("ascii"));
    let mut stream = GreeterClient::new(channel)
        .ticks(request)
        .await
        .expect("the stream opens")
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a tick in time");
    assert!(matches!(first, Ok(Some(_))), "{first:?}");

    assert_eq!(other.auth.deny_client(client).await, ChangeOutcome::Durable);
    let status = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended with OK, not UNAUTHENTICATED"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream was not ended");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}
