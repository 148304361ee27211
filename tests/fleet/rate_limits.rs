//! Wacht's rate limits kept across replicas: every replica counts what it serves from cache,
//! adds it to meters shared through Redis in batches (no Redis call per request), and refuses
//! past the rule's limit. The fleet serves at most the limit plus one batch per replica in a
//! window; with Redis paused, each replica meters alone (at most the limit each).

use std::time::Duration;

use tower_wacht::testing::{RateLimitRule, RateLimitUnit};

use crate::common::{fresh_window, start_gateway};
use crate::harness::{RedisServer, Replica, replicas, status, token};

/// Sends `n` requests round-robin over `fleet`; how many were served (200), and that every
/// other one was a 429 with `Retry-After`.
async fn spread(http: &reqwest::Client, fleet: &[Replica], token: &str, n: usize) -> usize {
    let mut served = 0;
    for i in 0..n {
        let replica = &fleet[i % fleet.len()];
        let resp = http
            .get(format!("http://{}/whoami", replica.addr))
            .bearer_auth(token)
            .send()
            .await
            .expect("request completes");
        match resp.status().as_u16() {
            200 => served += 1,
            429 => {
                let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_the_limit_plus_at_most_one_batch_each() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    // 60 a minute: a batch is 60 / 20 = 3 requests.
    gateway.set_rate_limit_rules(vec![RateLimitRule::new(60, RateLimitUnit::Minute, 1)]);
    let fleet = replicas(3, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    fresh_window(Duration::from_secs(60), Duration::from_secs(25)).await;
    let t = token(&gateway, "oc_fleetRateLimited00000000000001");

    let served = spread(&http, &fleet, &t, 150).await;
    println!("served {served} of 150 across 3 replicas (limit 60, batch 3)");
    assert!(
        served >= 60,
        "a replica refused before the fleet spent the budget: {served}"
    );
    assert!(served <= 60 + 3 * 3, "past the bound: {served}");
    // The gateway saw the first request only: everything else was counted by the replicas
    // (a replica that got the token from the shared tier learned the route's rules from the
    // fleet's rule book, not from the gateway).
    assert_eq!(gateway.calls(), 1);
    // Spent on every replica.
    for replica in &fleet {
        assert_eq!(status(&http, replica, &t).await, 429);
    }
    // Redis holds no credential and no id in clear for the meters.
    for key in redis.keys("*") {
        assert!(
            !key.contains(&t) && !key.contains("oc_fleet") && !key.contains("432119876543210241"),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_paused_each_replica_meters_alone_and_keeps_answering() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    gateway.set_rate_limit_rules(vec![RateLimitRule::new(40, RateLimitUnit::Minute, 1)]);
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    fresh_window(Duration::from_secs(60), Duration::from_secs(30)).await;
    let t = token(&gateway, "oc_fleetRateLimitedPaused00000001");
    // Both replicas know the token (and its route's rules) before Redis stops.
    for replica in &fleet {
        assert_eq!(status(&http, replica, &t).await, 200);
    }
    redis.pause();
    let served = spread(&http, &fleet, &t, 200).await;
    redis.resume();
    println!("served {served} of 200 on 2 replicas with Redis paused (limit 40)");
    // Alone, each replica keeps the limit for what it serves itself (the two requests before
    // the pause included), and the fleet's budget is spent before either refuses.
    assert!(served + 2 <= 2 * 40, "past the bound without Redis: {served}");
    assert!(served + 2 >= 40, "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_three_replicas_a_spent_budget_is_served_again_when_the_window_rolls() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    // 20 per 2 s: a batch is 1 request, so the fleet's count is exact to a request a replica.
    gateway.set_rate_limit_rules(vec![RateLimitRule::new(20, RateLimitUnit::Second, 2)]);
    let fleet = replicas(3, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    fresh_window(Duration::from_secs(2), Duration::from_millis(1500)).await;
    let t = token(&gateway, "oc_fleetRateLimitedRolling0000001");
    let served = spread(&http, &fleet, &t, 40).await;
    assert!((20..=23).contains(&served), "{served}");
    for replica in &fleet {
        assert_eq!(status(&http, replica, &t).await, 429);
    }
    // A window later (and the gateway's own sliding window empty too): every replica serves
    // again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    fresh_window(Duration::from_secs(2), Duration::from_millis(1900)).await;
    for (i, replica) in fleet.iter().enumerate() {
        let resp = http
            .get(format!("http://{}/whoami", replica.addr))
            .bearer_auth(&t)
            .send()
            .await
            .expect("request completes");
        assert_eq!(resp.status(), 200, "replica {i}: {:?}", resp.headers());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_that_waited_for_the_fleets_count_is_audited_as_the_caches() {
    use tower_wacht::audit::{AuditConfig, AuditOutcome, AuditSink, DecisionSource};

    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    // 39 a minute: a batch is one request, so concurrent hits wait for the fleet's count.
    gateway.set_rate_limit_rules(vec![RateLimitRule::new(39, RateLimitUnit::Minute, 1)]);
    let (sink, mut records) = AuditSink::channel(256);
    let config = tower_wacht::WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(crate::common::API_KEY)
        .expected_deployment_id(tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID)
        .resource("/")
        .ttl(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(3))
        .fleet(crate::harness::fleet_config(&redis))
        .audit(AuditConfig::new().sink(sink))
        .build()
        .expect("valid config");
    let auth = tower_wacht::WachtAuthLayer::new(config).expect("layer builds");
    let replica = crate::harness::serve(auth).await;
    crate::harness::wait_connected(&replica).await;
    let http = reqwest::Client::new();
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let t = token(&gateway, "oc_fleetRateLimitedAudit000000001");
    assert_eq!(status(&http, &replica, &t).await, 200);

    let statuses = futures_util::future::join_all((0..30).map(|_| status(&http, &replica, &t))).await;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    // Only the first request reached the gateway: no other record may say it did.
    assert_eq!(gateway.calls(), 1);
    let mut sources = Vec::new();
    while let Ok(record) = records.try_recv() {
        if record.outcome == AuditOutcome::RateLimited {
            assert_eq!(record.source, DecisionSource::Cache, "{record:?}");
        }
        sources.push(record.source);
    }
    assert_eq!(sources.len(), 31, "one record per request");
    let from_gateway = sources.iter().filter(|s| **s == DecisionSource::Gateway).count();
    assert_eq!(from_gateway, 1, "{sources:?}");
}
