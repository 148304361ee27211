//! Changes Redis has not taken travel as announcements on the channel: they must restrict at
//! once on every replica listening, not be lost behind other changes, and not be replayable
//! by someone who can publish. And the log must survive a head or a stream tampered with.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tower_wacht::ChangeOutcome;

use crate::chaos::refuse_writes_without_replicas as refuse;
use crate::common::start_gateway;
use crate::harness::{RedisServer, replicas, status, token};
use crate::resp::{Capture, Resp, call};
use crate::sharing::until;

/// B learns of A's invalidation from the announcement, before A's next heartbeat says
/// anything is pending: B must not take the voided answer back from Redis meanwhile (and keep
/// it for the ttl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_invalidation_is_not_undone_by_the_shared_tier() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetAnnouncedVoid00000000001");
    assert_eq!(status(&http, a, &t).await, 200, "A shares its answer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    refuse(&redis, true);
    gateway.revoke(&t);
    let started = Instant::now();
    let (outcome, ()) = tokio::join!(a.auth.invalidate(&t), async {
        // B asks all along, so that it misses right after it dropped the token.
        while started.elapsed() < Duration::from_millis(1500) {
            let _ = status(&http, b, &t).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    assert!(matches!(outcome, ChangeOutcome::Queued(_)), "{outcome:?}");
    for _ in 0..10 {
        assert_eq!(
            status(&http, b, &t).await,
            401,
            "B serves the invalidated, revoked token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sixty-four invalidations queued before a denial while Redis refuses writes: the denial is
/// announced all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_queued_behind_many_changes_is_announced() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    let client = "oc_fleetBehindMany0000000000001";
    let t = token(&gateway, client);
    assert_eq!(status(&http, b, &t).await, 200);
    refuse(&redis, true);
    let others: Vec<String> = (0..100).map(|i| format!("some-other-token-{i}")).collect();
    let outcomes = join_all(others.iter().map(|o| a.auth.invalidate(o))).await;
    assert!(outcomes.iter().all(|o| matches!(o, ChangeOutcome::Queued(_))));
    assert!(matches!(a.auth.deny_client(client).await, ChangeOutcome::Queued(_)));
    until(|| async { status(&http, b, &t).await == 401 }).await;
}

/// Someone who can publish on the channel replays a heartbeat in which A held nothing,
/// while A holds an unwritten invalidation: B must stay degraded (no shared answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_heartbeat_does_not_end_degraded_mode() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let capture = Capture::start(redis.port, "wacht:*");
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetReplayedBeat000000000001");
    assert_eq!(status(&http, a, &t).await, 200, "A shares its answer");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let calm = capture.messages();
    refuse(&redis, true);
    gateway.revoke(&t);
    assert!(matches!(a.auth.invalidate(&t).await, ChangeOutcome::Queued(_)));
    until(|| async { b.auth.verifier().fleet_status().is_some_and(|s| s.degraded) }).await;
    for _ in 0..30 {
        for (channel, payload) in &calm {
            call(redis.port, &[b"PUBLISH", channel.as_bytes(), payload]).expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(status(&http, b, &t).await, 401, "B served the invalidated token");
        assert!(b.auth.verifier().fleet_status().is_some_and(|s| s.degraded));
    }
}

/// A captured announcement of a denial, replayed after the client was allowed and after its
/// sender went silent, must not be taken over as a new denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_announcement_of_a_silent_replica_is_not_taken_over() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let capture = Capture::start(redis.port, "wacht:*");
    let proxy = crate::proxy::Proxy::start(redis.port).await;
    let a = crate::harness::replica(&gateway, crate::chaos::through(&proxy), "/").await;
    crate::harness::wait_connected(&a).await;
    let others = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let client = "oc_fleetReplayedSilent000000001";
    let t = token(&gateway, client);
    refuse(&redis, true);
    assert!(matches!(a.auth.deny_client(client).await, ChangeOutcome::Queued(_)));
    refuse(&redis, false);
    until(|| async { a.auth.verifier().fleet_status().is_some_and(|s| s.pending_changes == 0) }).await;
    let announced = capture.messages();
    assert_eq!(others[0].auth.allow_client(client).await, ChangeOutcome::Durable);
    for r in others.iter().chain([&a]) {
        until(|| async { status(&http, r, &t).await == 200 }).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (channel, payload) in &announced {
        call(redis.port, &[b"PUBLISH", channel.as_bytes(), payload]).expect("publish");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fresh = token(&gateway, client);
    for r in &others {
        assert_eq!(
            status(&http, r, &fresh).await,
            200,
            "a replayed announcement re-denied the client"
        );
    }
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(
        status(&http, later, &fresh).await,
        200,
        "a replayed announcement was written"
    );
}

/// Someone with write access sets the log's head to the largest number there is: replicas
/// must not overflow or stop writing; the log starts anew and changes keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_numbered_past_any_clock_is_recovered_from() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    assert_eq!(a.auth.invalidate("some token").await, ChangeOutcome::Durable);
    let head = redis.keys("wacht:*:head:").pop().expect("the head");
    assert_eq!(
        redis
            .command(&["HSET", &head, "seq", "18446744073709551615"])
            .as_deref(),
        Some(":0")
    );
    let client = "oc_fleetPoisonedHead00000000001";
    let t = token(&gateway, client);
    until(|| async { a.auth.deny_client(client).await == ChangeOutcome::Durable }).await;
    until(|| async { status(&http, b, &t).await == 401 }).await;
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(status(&http, later, &t).await, 401);
}

/// Someone with write access adds an entry with the largest stream id there is, so that the
/// stream takes no more entries: nothing half-written, the log starts anew, the denial lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_takes_no_more_entries_is_replaced() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    assert_eq!(a.auth.invalidate("some token").await, ChangeOutcome::Durable);
    let log = redis.keys("wacht:*:log:").pop().expect("the log");
    let reply = call(
        redis.port,
        &[
            b"XADD",
            log.as_bytes(),
            b"18446744073709551615-18446744073709551615",
            b"e",
            b"x",
        ],
    )
    .expect("xadd");
    assert!(matches!(reply, Resp::Bulk(Some(_))), "{reply:?}");
    let client = "oc_fleetExhaustedStream000000001";
    let t = token(&gateway, client);
    until(|| async { a.auth.deny_client(client).await == ChangeOutcome::Durable }).await;
    until(|| async { status(&http, b, &t).await == 401 }).await;
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(status(&http, later, &t).await, 401);
}

/// Someone with write access rewrites one field of the head (the incarnation in upper case,
/// not hex at all, or the link deleted): the head no longer has the one form replicas write,
/// so it is no head; it is replaced, and changes flow again.
async fn tampered_head(tamper: fn(&RedisServer, &str)) {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    assert_eq!(a.auth.invalidate("some token").await, ChangeOutcome::Durable);
    let head = redis.keys("wacht:*:head:").pop().expect("the head");
    tamper(&redis, &head);
    let client = "oc_fleetTamperedHead00000000001";
    let t = token(&gateway, client);
    until(|| async { a.auth.deny_client(client).await == ChangeOutcome::Durable }).await;
    until(|| async { status(&http, b, &t).await == 401 }).await;
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(status(&http, later, &t).await, 401);
}

fn head_field(redis: &RedisServer, head: &str, field: &str) -> String {
    let reply = call(redis.port, &[b"HGET", head.as_bytes(), field.as_bytes()]).expect("hget");
    reply.text().expect("the field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_with_its_incarnation_in_upper_case_is_replaced() {
    tampered_head(|redis, head| {
        let inc = head_field(redis, head, "inc").to_uppercase();
        assert_eq!(redis.command(&["HSET", head, "inc", &inc]).as_deref(), Some(":0"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_with_an_incarnation_that_is_not_hex_is_replaced() {
    tampered_head(|redis, head| {
        assert_eq!(
            redis
                .command(&["HSET", head, "inc", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"])
                .as_deref(),
            Some(":0")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_without_its_link_is_replaced() {
    tampered_head(|redis, head| {
        assert_eq!(redis.command(&["HDEL", head, "link"]).as_deref(), Some(":1"));
    })
    .await;
}

/// A denial refused for a full queue holds on its replica alone: it is not announced (no
/// replica could ever lift it from the log), and allowing it there lifts it there; a denial
/// made and lifted durably afterwards leaves no trace of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_refused_for_a_full_queue_holds_on_its_replica_alone() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    refuse(&redis, true);
    let clients: Vec<String> = (0..10_000).map(|i| format!("oc_fleetQueueFull{i:0>15}")).collect();
    let outcomes = join_all(clients.iter().map(|c| a.auth.deny_client(c))).await;
    assert!(outcomes.iter().all(|o| matches!(o, ChangeOutcome::Queued(_))));
    let (x, y) = ("oc_fleetRefusedX000000000000001", "oc_fleetRefusedY000000000000001");
    for client in [x, y] {
        assert_eq!(
            a.auth.deny_client(client).await,
            ChangeOutcome::Refused(tower_wacht::change::RefusalReason::OutboxFull)
        );
    }
    refuse(&redis, false);
    until(|| async { a.auth.verifier().fleet_status().is_some_and(|s| s.pending_changes == 0) }).await;
    let (tx, ty) = (token(&gateway, x), token(&gateway, y));
    assert_eq!(status(&http, a, &tx).await, 401, "in force on its replica");
    assert_eq!(status(&http, b, &tx).await, 200, "on its replica alone");
    assert_eq!(a.auth.allow_client(x).await, ChangeOutcome::Applied);
    assert_eq!(b.auth.allow_client(x).await, ChangeOutcome::Unchanged);
    let tx = token(&gateway, x);
    assert_eq!(status(&http, a, &tx).await, 200);
    // Y: denied again, durably, then allowed, durably: allowed everywhere, A included.
    assert_eq!(a.auth.deny_client(y).await, ChangeOutcome::Durable);
    assert_eq!(a.auth.allow_client(y).await, ChangeOutcome::Durable);
    let ty2 = token(&gateway, y);
    for r in &fleet {
        until(|| async { status(&http, r, &ty2).await == 200 }).await;
    }
    let _ = ty;
}

/// With nobody replaying anything, a burst of announcements (and heartbeats, sent by several
/// tasks at once) is taken whole: no genuine notice is mistaken for a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_notices_are_never_taken_for_replays() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    refuse(&redis, true);
    let others: Vec<String> = (0..300).map(|i| format!("some-other-token-{i}")).collect();
    join_all(others.iter().map(|o| a.auth.invalidate(o))).await;
    let clients: Vec<String> = (0..200).map(|i| format!("oc_fleetBurst{i:0>19}")).collect();
    join_all(clients.iter().map(|c| a.auth.deny_client(c))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in clients.iter().step_by(20) {
        let t = token(&gateway, c);
        assert_eq!(status(&http, b, &t).await, 401, "{c} served");
    }
    refuse(&redis, false);
    assert_eq!(b.auth.verifier().fleet_status().map(|s| s.ignored_notices), Some(0));
}

/// While Redis refuses writes, a replica that starts after a denial was first announced
/// learns it from the next heartbeat's announcements, however many invalidations are queued
/// beside it (they are summed up; every denial is announced again each heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_during_the_outage_learns_a_queued_denial_at_the_next_heartbeat() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let a = &replicas(1, &gateway, &redis, "/").await[0];
    let http = reqwest::Client::new();
    refuse(&redis, true);
    let client = "oc_fleetLateListener0000000001";
    assert!(matches!(a.auth.deny_client(client).await, ChangeOutcome::Queued(_)));
    let others: Vec<String> = (0..9_000).map(|i| format!("some-other-token-{i}")).collect();
    join_all(others.iter().map(|o| a.auth.invalidate(o))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let late = &replicas(1, &gateway, &redis, "/").await[0];
    let t = token(&gateway, client);
    until(|| async { status(&http, late, &t).await == 401 }).await;
    refuse(&redis, false);
}
