//! How a fleet is set up and what it shares: one secret (a replica with another says so),
//! TLS to Redis, the ttls in the check profile, and the lease that lets a waiting replica go
//! as soon as the holder is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower_wacht::ChangeOutcome;
use tower_wacht::fleet::FleetConfig;

use crate::common::start_gateway;
use crate::harness::{
    RedisServer, SECRET, fleet_config, replica, replica_config, serve, status, token, wait_connected,
};
use crate::sharing::until;

/// A new user starts a second replica with another secret (the example's old instructions
/// generated one per shell): both land on the same Redis and share nothing. Each must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_different_secrets_say_that_they_share_nothing() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let first = replica(&gateway, fleet_config(&redis), "/").await;
    let same = replica(&gateway, fleet_config(&redis), "/").await;
    wait_connected(&first).await;
    wait_connected(&same).await;
    let foreign = |r: &crate::harness::Replica| r.auth.verifier().fleet_status().map(|s| s.foreign_secrets);
    assert_eq!(foreign(&same), Some(0), "same secret: nothing to say");

    let other = FleetConfig::new(redis.url(), "another fleet secret, also 32+ bytes long")
        .heartbeat(Duration::from_millis(200))
        .timeout(Duration::from_millis(200));
    let stranger = replica(&gateway, other, "/").await;
    wait_connected(&stranger).await;
    assert_eq!(foreign(&stranger), Some(1), "the newcomer sees the others at once");
    // The running ones see it at their next periodic check (every 30 heartbeats).
    until(|| async { foreign(&first) == Some(1) }).await;

    // And indeed they share nothing: a denial on the first is not known to the stranger.
    let http = reqwest::Client::new();
    let client = "oc_fleetOtherSecret0000000000001";
    let t = token(&gateway, client);
    assert_eq!(first.auth.deny_client(client).await, ChangeOutcome::Durable);
    until(|| async { status(&http, &same, &t).await == 401 }).await;
    assert_eq!(status(&http, &stranger, &t).await, 200);
}

/// `rediss://`: fleet mode over TLS to a Redis whose certificate chains to a private CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mode_works_over_tls_and_refuses_an_unverified_server() {
    let redis = RedisServer::start_tls();
    let gateway = start_gateway().await;
    let (_, ca) = redis.tls.clone().expect("TLS");
    let over_tls = || {
        FleetConfig::new(redis.tls_url(), SECRET)
            .root_certificate_pem(&ca)
            .timeout(Duration::from_millis(500))
            .heartbeat(Duration::from_millis(200))
    };
    let a = replica(&gateway, over_tls(), "/").await;
    let b = replica(&gateway, over_tls(), "/").await;
    wait_connected(&a).await;
    wait_connected(&b).await;
    let http = reqwest::Client::new();
    let client = "oc_fleetTls000000000000000000001";
    let t = token(&gateway, client);
    assert_eq!(status(&http, &a, &t).await, 200);
    assert_eq!(status(&http, &b, &t).await, 200);
    assert_eq!(gateway.calls(), 1, "the second replica used the shared answer");
    assert_eq!(a.auth.deny_client(client).await, ChangeOutcome::Durable);
    until(|| async { status(&http, &b, &t).await == 401 }).await;

    // Without the CA, the server's certificate does not verify: no fleet, fail safe.
    let unverified = FleetConfig::new(redis.tls_url(), SECRET).heartbeat(Duration::from_millis(200));
    let c = replica(&gateway, unverified, "/").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !c.auth.verifier().fleet_connected(),
        "connected to a server it could not verify"
    );
    assert_eq!(status(&http, &c, &t).await, 200, "served through the gateway");
}

/// Replicas whose ttls differ are different check profiles: a shared answer written for a
/// 60 s ttl must not be kept by a replica promised 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_different_ttls_share_no_answer() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let long = replica(&gateway, fleet_config(&redis), "/").await;
    let short_config = replica_config(&gateway, fleet_config(&redis), "/")
        .to_builder()
        .ttl(Duration::from_secs(1))
        .build()
        .expect("valid config");
    let short = serve(tower_wacht::WachtAuthLayer::new(short_config).expect("layer")).await;
    wait_connected(&long).await;
    wait_connected(&short).await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetTtlProfiles0000000000001");
    assert_eq!(status(&http, &long, &t).await, 200);
    assert_eq!(status(&http, &short, &t).await, 200);
    assert_eq!(
        gateway.calls(),
        2,
        "the short-ttl replica took the long-ttl replica's answer"
    );
}

/// The first call of a token is held, then fails (the gateway is down for it); every later
/// call goes through.
#[derive(Clone)]
struct FailsFirst {
    inner: Arc<tower_wacht::gateway::HttpGateway>,
    calls: Arc<AtomicUsize>,
    release: tokio::sync::watch::Receiver<bool>,
}

impl tower_wacht::gateway::Gateway for FailsFirst {
    fn check<'a>(
        &'a self,
        request: tower_wacht::gateway::CheckRequest<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<tower_wacht::gateway::Decision, tower_wacht::gateway::GatewayError>>
    {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut release = self.release.clone();
                let _ = release.wait_for(|r| *r).await;
                return Err(tower_wacht::gateway::GatewayError::Timeout);
            }
            self.inner.check(request).await
        })
    }
}

/// The lease holder gets an answer it cannot share (a gateway failure): the replica waiting
/// on its lease must ask the gateway itself as soon as the holder lets go, not after
/// `lease_wait` (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_waiter_goes_on_as_soon_as_the_holder_is_done() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let config = replica_config(&gateway, fleet_config(&redis).lease_wait(Duration::from_secs(30)), "/");
    let (release, released) = tokio::sync::watch::channel(false);
    let calls = Arc::new(AtomicUsize::new(0));
    let client = FailsFirst {
        inner: Arc::new(tower_wacht::gateway::HttpGateway::new(&config).expect("client")),
        calls: Arc::clone(&calls),
        release: released,
    };
    let holder = serve(tower_wacht::WachtAuthLayer::with_gateway(config.clone(), client.clone()).expect("layer")).await;
    let waiter = serve(tower_wacht::WachtAuthLayer::with_gateway(config, client).expect("layer")).await;
    wait_connected(&holder).await;
    wait_connected(&waiter).await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetLeaseWaiter0000000000001");
    let on_holder = tokio::spawn({
        let (http, t, addr) = (http.clone(), t.clone(), holder.addr);
        async move { whoami(&http, addr, &t).await }
    });
    until(|| async { calls.load(Ordering::SeqCst) == 1 }).await;
    let on_waiter = tokio::spawn({
        let (http, t, addr) = (http.clone(), t.clone(), waiter.addr);
        async move { whoami(&http, addr, &t).await }
    });
    // The waiter is polling the holder's lease now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send_replace(true);
    assert_eq!(on_holder.await.expect("holder"), 503);
    let waited = tokio::time::timeout(Duration::from_secs(10), on_waiter).await;
    assert_eq!(
        waited.expect("the waiter waited out lease_wait").expect("waiter"),
        200,
        "the waiter asked the gateway itself"
    );
}

async fn whoami(http: &reqwest::Client, addr: std::net::SocketAddr, token: &str) -> u16 {
    http.get(format!("http://{addr}/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request completes")
        .status()
        .as_u16()
}
