//! Redis killed, hung, flushed and restarted while replicas serve: not one wrong decision,
//! every request answered, and recovery without a restart of the replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::start_gateway;
use crate::harness::{RedisServer, Replica, replicas, status, token};
use crate::sharing::until;
use tower_wacht::ChangeOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_hung_flushed_and_restarted_changes_no_decision() {
    let mut redis = RedisServer::start();
    let gateway = start_gateway().await;
    // Thousands of requests a minute of one user: past Wacht's default rule (1000 a minute),
    // which this test is not about.
    gateway.set_rate_limit(u32::MAX, Duration::from_secs(60));
    let fleet = Arc::new(replicas(2, &gateway, &redis, "/").await);
    let valid: Arc<Vec<String>> = Arc::new(
        (0..8)
            .map(|i| token(&gateway, &format!("oc_fleetChaos{i:0>20}")))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Clients keep asking with valid and unknown tokens on both replicas throughout.
    let driver = {
        let (fleet, valid, stop, answered, wrong) = (
            Arc::clone(&fleet),
            Arc::clone(&valid),
            Arc::clone(&stop),
            Arc::clone(&answered),
            Arc::clone(&wrong),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let replica: &Replica = &fleet[i % 2];
                let (t, expected) = if i.is_multiple_of(3) {
                    (tower_wacht::testing::generate_token(), 401)
                } else {
                    (valid[i % valid.len()].clone(), 200)
                };
                let got = status(&http, replica, &t).await;
                answered.fetch_add(1, Ordering::Relaxed);
                if got != expected {
                    wrong.fetch_add(1, Ordering::Relaxed);
                    eprintln!("wrong decision: expected {expected}, got {got}");
                }
                i += 1;
            }
        })
    };
    let phase = |name: &str, at: Instant| println!("{name} at {:?}", at.elapsed());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    phase("kill", t0);
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    phase("restart", t0);
    redis.restart();
    let recovered = until(|| async { fleet.iter().all(|r| r.auth.verifier().fleet_connected()) }).await;
    println!("channels back {recovered:?} after the restart");

    phase("pause (SIGSTOP)", t0);
    redis.pause();
    until(|| async { fleet.iter().all(|r| !r.auth.verifier().fleet_connected()) }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase("resume", t0);
    redis.resume();
    let recovered = until(|| async { fleet.iter().all(|r| r.auth.verifier().fleet_connected()) }).await;
    println!("channels back {recovered:?} after resuming");

    phase("flush", t0);
    assert_eq!(redis.command(&["FLUSHALL"]).as_deref(), Some("+OK"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    driver.await.expect("driver");
    let (answered, wrong) = (answered.load(Ordering::Relaxed), wrong.load(Ordering::Relaxed));
    println!("{answered} requests answered during the run, {wrong} wrong");
    assert_eq!(wrong, 0, "wrong decisions while Redis failed");
    assert!(answered > 50, "the service kept answering: {answered}");
    // Recovery without a restart: within seconds, a new token costs one gateway call for
    // both replicas again.
    let http = reqwest::Client::new();
    let shared_again = until(|| async {
        gateway.reset_calls();
        let t = token(&gateway, "oc_fleetAfterChaos000000000000001");
        for replica in fleet.iter() {
            assert_eq!(status(&http, replica, &t).await, 200);
        }
        gateway.calls() == 1
    })
    .await;
    println!("shared tier working again {shared_again:?} after the flush phase");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_channel_keeps_answers_only_briefly() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetLostChannel00000000000001");
    for replica in &fleet {
        assert_eq!(status(&http, replica, &t).await, 200);
    }
    // The channel goes silent; invalidations could be missed from now on.
    redis.pause();
    until(|| async { !fleet[1].auth.verifier().fleet_connected() }).await;
    // Revoked at Wacht while the replica cannot hear about it: it refuses the token within
    // its disconnected bound (1 s here), not its ttl (60 s).
    gateway.revoke(&t);
    let started = Instant::now();
    until(|| async { status(&http, &fleet[1], &t).await == 401 }).await;
    let delay = started.elapsed();
    println!("revocation seen without the channel after {delay:?}");
    assert!(delay < Duration::from_secs(5), "{delay:?}");
    redis.resume();
}

/// Changes made while Redis hangs are not lost: an invalidation and a client denial made on
/// one replica during the outage reach Redis when it is back, so the other replica (which
/// re-reads Redis after its channel returns) and a replica started afterwards refuse them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_redis_hangs_reach_it_when_it_is_back() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let revoked = token(&gateway, "oc_fleetOutageRevoked000000000001");
    let denied_client = "oc_fleetOutageDenied0000000000001";
    let denied = token(&gateway, denied_client);
    for t in [&revoked, &denied] {
        for replica in &fleet {
            assert_eq!(status(&http, replica, t).await, 200);
        }
    }

    redis.pause();
    gateway.revoke(&revoked);
    // Made on the first replica while Redis hangs: its Redis writes fail.
    assert!(matches!(
        fleet[0].auth.verifier().invalidate(&revoked).await,
        ChangeOutcome::Queued(_)
    ));
    assert!(matches!(
        fleet[0].auth.verifier().deny_client(denied_client).await,
        ChangeOutcome::Queued(_)
    ));
    until(|| async { fleet.iter().all(|r| !r.auth.verifier().fleet_connected()) }).await;
    redis.resume();
    until(|| async { fleet.iter().all(|r| r.auth.verifier().fleet_connected()) }).await;

    // The second replica dropped its cache when its channel was lost and reads Redis again.
    assert_eq!(
        status(&http, &fleet[1], &revoked).await,
        401,
        "the invalidation was lost"
    );
    // The denial arrives as an event (or in the deny set, if its channel came back later).
    until(|| async { status(&http, &fleet[1], &denied).await == 401 }).await;
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(
        status(&http, later, &denied).await,
        401,
        "a later replica missed the denial"
    );
}
