//! Revocation under the faults a fleet meets in production, each as an attack or a fault on
//! real `redis-server` processes, with real HTTP requests to every replica: Redis refusing
//! writes, losing its state (flushed, restarted empty, restored from an older snapshot),
//! partitioned from one replica, hung; changes replayed on the channel and in the log;
//! denials and allows racing from two replicas; the outbox full.

use std::time::Duration;

use futures_util::future::join_all;
use tower_wacht::ChangeOutcome;
use tower_wacht::change::{QueueReason, RefusalReason};
use tower_wacht::fleet::OutOfSync;

use crate::common::start_gateway;
use crate::harness::{RedisServer, Replica, fleet_config, replica, replicas, status, token};
use crate::proxy::Proxy;
use crate::resp::{Capture, Resp, call};
use crate::sharing::until;

fn config(redis: &RedisServer, on: &[&str]) {
    assert_eq!(
        redis.command(&[&["CONFIG", "SET"], on].concat()).as_deref(),
        Some("+OK"),
        "{on:?}"
    );
}

/// Redis takes reads and `PUBLISH` but refuses every write: `min-replicas-to-write` with no
/// replica attached (what a primary does when its replicas are gone).
pub fn refuse_writes_without_replicas(redis: &RedisServer, on: bool) {
    config(redis, &["min-replicas-to-write", if on { "1" } else { "0" }]);
}

/// Redis is full under the default `noeviction` policy: every write is refused (OOM).
fn refuse_writes_when_full(redis: &RedisServer, on: bool) {
    config(redis, &["maxmemory", if on { "1" } else { "0" }]);
}

/// Redis refuses writes while its channel stays up. A client denied and a token invalidated
/// on replica A must be refused at once on A, on B (which hears A's announcement, not a log
/// entry), and on a replica started meanwhile; the operator is told "queued", not "done";
/// every replica is degraded until the change is written; once Redis takes writes, the
/// changes are in Redis for replicas started later. An allow of a denial Redis has not taken
/// is refused.
async fn refused_writes(refuse: fn(&RedisServer, bool)) {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let http = reqwest::Client::new();
    let client = "oc_fleetRefusedWrites00000000001";
    let denied = token(&gateway, client);
    let revoked = token(&gateway, "oc_fleetRefusedRevoked0000000001");
    for replica in &fleet {
        assert_eq!(status(&http, replica, &denied).await, 200);
        assert_eq!(status(&http, replica, &revoked).await, 200);
    }

    refuse(&redis, true);
    assert_eq!(
        a.auth.deny_client(client).await,
        ChangeOutcome::Queued(QueueReason::RedisRefusedWrite)
    );
    assert_eq!(status(&http, a, &denied).await, 401, "in force on A at once");
    let delay = until(|| async { status(&http, b, &denied).await == 401 }).await;
    println!("a denial Redis refused reached the other replica after {delay:?}");
    until(|| async { b.auth.verifier().fleet_status().is_some_and(|s| s.degraded) }).await;

    gateway.revoke(&revoked);
    assert!(matches!(a.auth.invalidate(&revoked).await, ChangeOutcome::Queued(_)));
    assert_eq!(
        status(&http, a, &revoked).await,
        401,
        "the voided answer was read back from Redis"
    );
    until(|| async { status(&http, b, &revoked).await == 401 }).await;
    assert_eq!(
        a.auth.allow_client(client).await,
        ChangeOutcome::Refused(RefusalReason::PendingDenial),
        "an allow of a denial Redis has not taken"
    );
    // A replica started while Redis still refuses hears the change announced again.
    let started_meanwhile = replica(&gateway, fleet_config(&redis), "/").await;
    until(|| async { status(&http, &started_meanwhile, &denied).await == 401 }).await;

    refuse(&redis, false);
    until(|| async { a.auth.verifier().fleet_status().is_some_and(|s| s.pending_changes == 0) }).await;
    until(|| async {
        fleet
            .iter()
            .all(|r| r.auth.verifier().fleet_status().is_some_and(|s| !s.degraded))
    })
    .await;
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(status(&http, later, &denied).await, 401, "the denial is in Redis");
    assert_eq!(status(&http, later, &revoked).await, 401, "the void is in Redis");
    assert_eq!(a.auth.allow_client(client).await, ChangeOutcome::Durable);
    for replica in fleet.iter().chain([&started_meanwhile, later]) {
        until(|| async { status(&http, replica, &denied).await == 200 }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_reaches_every_replica_while_redis_refuses_writes_for_lack_of_replicas() {
    refused_writes(refuse_writes_without_replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_reaches_every_replica_while_redis_is_full() {
    refused_writes(refuse_writes_when_full).await;
}

/// Redis loses its state while replicas run (`lose`): a client denied, a session denied and
/// a token invalidated before must stay refused on the running replicas and on a replica
/// started afterwards (the running ones re-assert what they know).
async fn lost_state(lose: fn(&mut RedisServer)) {
    let mut redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let client = "oc_fleetLostState000000000000001";
    let denied = token(&gateway, client);
    let revoked = token(&gateway, "oc_fleetLostStateRevoked00000001");
    for replica in &fleet {
        assert_eq!(status(&http, replica, &revoked).await, 200);
    }
    assert_eq!(fleet[0].auth.deny_client(client).await, ChangeOutcome::Durable);
    gateway.revoke(&revoked);
    assert_eq!(fleet[1].auth.invalidate(&revoked).await, ChangeOutcome::Durable);

    lose(&mut redis);
    let later = replica(&gateway, fleet_config(&redis), "/").await;
    let delay = until(|| async { status(&http, &later, &denied).await == 401 }).await;
    println!("a replica started after Redis lost its state refuses the denied client after {delay:?}");
    for replica in fleet.iter().chain([&later]) {
        assert_eq!(status(&http, replica, &denied).await, 401);
        assert_eq!(status(&http, replica, &revoked).await, 401);
    }
    // The re-asserted denial is a record in Redis again: a replica started last reads it.
    until(|| async {
        fleet[0]
            .auth
            .verifier()
            .fleet_status()
            .is_some_and(|s| s.pending_changes == 0)
    })
    .await;
    let last = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(status(&http, last, &denied).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_outlives_flushall() {
    lost_state(|redis| assert_eq!(redis.command(&["FLUSHALL"]).as_deref(), Some("+OK"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_outlives_an_empty_restart() {
    lost_state(RedisServer::restart).await;
}

/// Redis is restored from a snapshot taken before a token was invalidated and a client was
/// denied (a restart from an RDB file, a failover to a lagging replica). A replica started
/// then, before any replica that knew the lost changes is back (they are partitioned), must
/// not serve the snapshot's shared answer for the token; once they are back, the denial
/// comes back everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_an_older_snapshot_resurrects_no_invalidated_answer_or_lifted_denial() {
    let mut redis = RedisServer::start_persistent();
    let gateway = start_gateway().await;
    let proxies = [Proxy::start(redis.port).await, Proxy::start(redis.port).await];
    let mut fleet = Vec::new();
    for proxy in &proxies {
        fleet.push(replica(&gateway, through(proxy), "/").await);
    }
    for r in &fleet {
        crate::harness::wait_connected(r).await;
    }
    let http = reqwest::Client::new();
    let revoked = token(&gateway, "oc_fleetSnapshotRevoked000000001");
    let client = "oc_fleetSnapshotDenied0000000001";
    let denied = token(&gateway, client);
    assert_eq!(status(&http, &fleet[0], &revoked).await, 200);
    assert_eq!(redis.keys("wacht:*:a:*").len(), 1, "the shared answer");
    assert_eq!(redis.command(&["SAVE"]).as_deref(), Some("+OK"));

    gateway.revoke(&revoked);
    assert_eq!(fleet[0].auth.invalidate(&revoked).await, ChangeOutcome::Durable);
    assert_eq!(fleet[1].auth.deny_client(client).await, ChangeOutcome::Durable);
    for proxy in &proxies {
        proxy.cut();
    }
    redis.restart();
    assert_eq!(
        redis.keys("wacht:*:a:*").len(),
        1,
        "the snapshot brought the answer back"
    );

    // A fresh replica, alone with the restored Redis: nothing cached, it asks the shared
    // tier first, and nobody has told it what the snapshot lacks.
    let fresh = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(
        status(&http, fresh, &revoked).await,
        401,
        "the invalidated answer came back"
    );

    for proxy in &proxies {
        proxy.restore();
    }
    for replica in fleet.iter().chain([fresh]) {
        until(|| async { status(&http, replica, &denied).await == 401 }).await;
        assert_eq!(status(&http, replica, &revoked).await, 401);
    }
}

/// Test fleet settings on the Redis behind `proxy`.
pub fn through(proxy: &Proxy) -> tower_wacht::fleet::FleetConfig {
    tower_wacht::fleet::FleetConfig::new(proxy.url(), crate::harness::SECRET)
        .timeout(Duration::from_millis(200))
        .heartbeat(Duration::from_millis(200))
        .disconnected_ttl(Duration::from_secs(1))
        .max_reconnect_backoff(Duration::from_millis(300))
}

/// A replica cut off from Redis (a partition, connections hanging) while another denies a
/// client: with `OutOfSync::FailClosed` it answers 503 once the bound has passed, never the
/// denied client's 200, and refuses the client once the partition heals. Its own allow,
/// queued behind the partition, does not lift the newer denial when it is finally written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_fails_closed_and_its_queued_allow_lifts_no_newer_denial() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let proxy = Proxy::start(redis.port).await;
    let direct = &replicas(1, &gateway, &redis, "/").await[0];
    let cut_off = replica(&gateway, through(&proxy).out_of_sync(OutOfSync::FailClosed), "/").await;
    crate::harness::wait_connected(&cut_off).await;
    let http = reqwest::Client::new();
    let client = "oc_fleetPartitioned0000000000001";
    let t = token(&gateway, client);
    assert_eq!(direct.auth.deny_client(client).await, ChangeOutcome::Durable);
    until(|| async { status(&http, &cut_off, &t).await == 401 }).await;

    proxy.cut();
    // Queued behind the partition: lifts the denial it knows (the first).
    assert!(matches!(
        cut_off.auth.allow_client(client).await,
        ChangeOutcome::Queued(QueueReason::RedisUnavailable)
    ));
    // Denied again on the other side (a newer denial), while the partition lasts.
    assert_eq!(direct.auth.deny_client(client).await, ChangeOutcome::Durable);
    let other = token(&gateway, "oc_fleetPartitionedOther00000001");
    let delay = until(|| async { status(&http, &cut_off, &other).await == 503 }).await;
    println!("the partitioned replica failed closed after {delay:?}");
    assert!(cut_off.auth.verifier().fleet_status().is_some_and(|s| s.out_of_sync));

    proxy.restore();
    until(|| async { status(&http, &cut_off, &other).await == 200 }).await;
    until(|| async {
        cut_off
            .auth
            .verifier()
            .fleet_status()
            .is_some_and(|s| s.pending_changes == 0)
    })
    .await;
    // The queued allow was refused when written: the newer denial holds everywhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(&http, &cut_off, &t).await,
        401,
        "the queued allow lifted a newer denial here"
    );
    assert_eq!(
        status(&http, direct, &t).await,
        401,
        "the queued allow lifted a newer denial there"
    );
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(
        status(&http, later, &t).await,
        401,
        "the queued allow lifted a newer denial in Redis"
    );
}

/// With the default `OutOfSync::ServeThroughGateway`, a replica without the fleet keeps
/// serving through the gateway, and the outage grace (`stale_if_error`) never serves an
/// answer past `disconnected_ttl` while the fleet is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fleet_stale_if_error_stops_at_the_disconnected_bound() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let proxy = Proxy::start(redis.port).await;
    let fleet = tower_wacht::fleet::FleetConfig::new(proxy.url(), crate::harness::SECRET)
        .timeout(Duration::from_millis(200))
        .heartbeat(Duration::from_millis(200))
        .disconnected_ttl(Duration::from_millis(500));
    let config = crate::harness::replica_config(&gateway, fleet, "/")
        .to_builder()
        .stale_if_error(Duration::from_secs(30))
        .build()
        .expect("valid config");
    let r = crate::harness::serve(tower_wacht::WachtAuthLayer::new(config).expect("layer")).await;
    crate::harness::wait_connected(&r).await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetStaleBound0000000000001");
    proxy.cut();
    until(|| async { !r.auth.verifier().fleet_connected() }).await;
    // Verified while without the fleet: cached for at most disconnected_ttl.
    assert_eq!(status(&http, &r, &t).await, 200);
    gateway.set_fault(Some(tower_wacht::testing::Fault::Status(500)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status(&http, &r, &t).await,
        503,
        "the outage grace served an answer past the disconnected bound"
    );
    proxy.restore();
}

/// Replays, by someone who can publish on the channel and write to the log: a genuine allow
/// entry re-added to the log after a newer denial, every captured notice published again,
/// and a captured announcement of a denial (made while Redis refused writes) published after
/// the client was allowed. No replica changes its mind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_log_entries_and_notices_change_nothing() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let capture = Capture::start(redis.port, "wacht:*");
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let client = "oc_fleetReplayed000000000000001";
    let t = token(&gateway, client);

    // Denied while Redis refuses writes: announced on the channel (captured).
    refuse_writes_without_replicas(&redis, true);
    assert!(matches!(
        fleet[0].auth.deny_client(client).await,
        ChangeOutcome::Queued(_)
    ));
    refuse_writes_without_replicas(&redis, false);
    until(|| async {
        fleet[0]
            .auth
            .verifier()
            .fleet_status()
            .is_some_and(|s| s.pending_changes == 0)
    })
    .await;
    let announced = capture.messages();
    assert_eq!(fleet[1].auth.allow_client(client).await, ChangeOutcome::Durable);
    for replica in &fleet {
        until(|| async { status(&http, replica, &t).await == 200 }).await;
    }
    // Replay 1: the announcement of the denial, after the allow.
    for (channel, payload) in &announced {
        call(redis.port, &[b"PUBLISH", channel.as_bytes(), payload]).expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    for replica in &fleet {
        assert_eq!(
            status(&http, replica, &t).await,
            200,
            "a replayed denial notice re-denied the client"
        );
    }

    // Replay 2: the allow entry re-added to the log after a newer denial, and every notice.
    assert_eq!(fleet[0].auth.deny_client(client).await, ChangeOutcome::Durable);
    let log = redis.keys("wacht:*:log:").pop().expect("the change log");
    let entries = call(redis.port, &[b"XRANGE", log.as_bytes(), b"-", b"+"]).expect("xrange");
    let mut replayed = 0;
    for entry in entries.items() {
        let fields = entry.items().get(1).map(Resp::items).unwrap_or_default();
        if let Some(sealed) = fields.get(1).and_then(Resp::bytes) {
            let reply = call(redis.port, &[b"XADD", log.as_bytes(), b"*", b"e", sealed]).expect("xadd");
            assert!(matches!(reply, Resp::Bulk(Some(_))), "{reply:?}");
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "deny, allow, deny were in the log");
    for (channel, payload) in capture.messages() {
        call(redis.port, &[b"PUBLISH", channel.as_bytes(), &payload]).expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    for replica in &fleet {
        assert_eq!(
            status(&http, replica, &t).await,
            401,
            "a replayed allow lifted a newer denial"
        );
    }
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    assert_eq!(status(&http, later, &t).await, 401);
}

/// Two replicas deny and allow one client at the same time, in random interleavings: in the
/// end every replica, Redis (a replica started afterwards) and both operators agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_denials_and_allows_end_in_one_state_everywhere() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let client = "oc_fleetRace00000000000000000001";
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let ops: Vec<(usize, bool)> = (0..4).map(|_| ((random() % 2) as usize, random() % 2 == 0)).collect();
        let outcomes = join_all(ops.iter().map(|&(on, deny)| {
            let auth = &fleet[on].auth;
            async move {
                if deny {
                    auth.deny_client(client).await
                } else {
                    auth.allow_client(client).await
                }
            }
        }))
        .await;
        for outcome in &outcomes {
            assert!(
                matches!(
                    outcome,
                    ChangeOutcome::Durable
                        | ChangeOutcome::Unchanged
                        | ChangeOutcome::Refused(RefusalReason::NewerDenial | RefusalReason::PendingDenial)
                ),
                "round {round}: {outcome:?}"
            );
        }
        until(|| async {
            fleet
                .iter()
                .all(|r| r.auth.verifier().fleet_status().is_some_and(|s| s.pending_changes == 0))
        })
        .await;
        let position = |r: &Replica| r.auth.verifier().fleet_status().map(|s| s.log_position);
        until(|| async { position(&fleet[0]) == position(&fleet[1]) }).await;
        // A fresh token: one refused in an earlier round stays refused for `negative_ttl`.
        let t = token(&gateway, client);
        let verdicts = join_all(fleet.iter().map(|r| status(&http, r, &t))).await;
        assert_eq!(verdicts[0], verdicts[1], "round {round}: {ops:?} → {outcomes:?}");
        assert_eq!(
            fleet[0].auth.verifier().denied_clients(),
            fleet[1].auth.verifier().denied_clients(),
            "round {round}"
        );
        if round % 4 == 3 {
            let later = &replicas(1, &gateway, &redis, "/").await[0];
            let got = status(&http, later, &t).await;
            assert_eq!(got, verdicts[0], "round {round}: Redis disagrees");
        }
    }
}

/// More changes than the outbox holds while Redis refuses writes: the one past the bound is
/// refused (and says so), the earlier ones are kept and written once Redis takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_the_next_denial_and_says_so() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let a = &replicas(1, &gateway, &redis, "/").await[0];
    let http = reqwest::Client::new();
    refuse_writes_without_replicas(&redis, true);
    let clients: Vec<String> = (0..10_000).map(|i| format!("oc_fleetFull{i:0>20}")).collect();
    let outcomes = join_all(clients.iter().map(|c| a.auth.deny_client(c))).await;
    assert!(outcomes.iter().all(|o| matches!(o, ChangeOutcome::Queued(_))));
    let one_too_many = "oc_fleetFullOneTooMany0000000001";
    assert_eq!(
        a.auth.deny_client(one_too_many).await,
        ChangeOutcome::Refused(RefusalReason::OutboxFull)
    );
    // Still in force here.
    let t = token(&gateway, one_too_many);
    assert_eq!(status(&http, a, &t).await, 401);
    refuse_writes_without_replicas(&redis, false);
    until(|| async { a.auth.verifier().fleet_status().is_some_and(|s| s.pending_changes == 0) }).await;
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    let kept = token(&gateway, &clients[9_999]);
    assert_eq!(status(&http, later, &kept).await, 401, "a queued denial was lost");
}

/// Deny, snapshot, allow, then Redis restored from the snapshot (which still holds the
/// denial): the running replicas re-assert the allow they know, so a replica started after
/// the restore serves the client too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_an_older_snapshot_brings_back_no_lifted_denial() {
    let mut redis = RedisServer::start_persistent();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let client = "oc_fleetLiftedBeforeRestore0001";
    assert_eq!(fleet[0].auth.deny_client(client).await, ChangeOutcome::Durable);
    assert_eq!(redis.command(&["SAVE"]).as_deref(), Some("+OK"));
    assert_eq!(fleet[1].auth.allow_client(client).await, ChangeOutcome::Durable);
    for r in &fleet {
        let t = token(&gateway, client);
        until(|| async { status(&http, r, &t).await == 200 }).await;
    }
    let positions: Vec<_> = fleet
        .iter()
        .map(|r| r.auth.verifier().fleet_status().map(|s| s.log_position))
        .collect();
    redis.restart();
    // The running replicas notice (a new incarnation) and re-assert what Redis lost.
    until(|| async {
        fleet.iter().zip(&positions).all(|(r, before)| {
            let now = r.auth.verifier().fleet_status();
            now.as_ref().is_some_and(|s| s.connected && s.pending_changes == 0)
                && now.map(|s| s.log_position) != *before
        })
    })
    .await;
    let t = token(&gateway, client);
    for r in &fleet {
        assert_eq!(status(&http, r, &t).await, 200);
    }
    let later = &replicas(1, &gateway, &redis, "/").await[0];
    until(|| async { status(&http, later, &t).await == 200 }).await;
}

/// A stream opened on a replica just before it loses the fleet, with `FailClosed`: once the
/// replica refuses new requests (the bound has passed), the stream ends too (a denial made
/// elsewhere meanwhile may cover it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_closed_ends_open_streams_too() {
    use axum::Router;
    use axum::response::sse::{Event, Sse};
    use axum::routing::get;
    use futures_util::StreamExt as _;

    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let proxy = Proxy::start(redis.port).await;
    let config = crate::harness::replica_config(&gateway, through(&proxy).out_of_sync(OutOfSync::FailClosed), "/")
        .to_builder()
        .stream_recheck(Duration::from_millis(300))
        .build()
        .expect("valid config");
    let auth = tower_wacht::WachtAuthLayer::new(config).expect("layer");
    let events = |principal: tower_wacht::Principal| async move {
        let client = principal.client_id().to_string();
        Sse::new(futures_util::stream::unfold(0u64, move |n| {
            let client = client.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((
                    Ok::<_, std::convert::Infallible>(Event::default().data(format!("{n} {client}"))),
                    n + 1,
                ))
            }
        }))
    };
    let addr = crate::common::serve(Router::new().route("/events", get(events)).layer(auth.clone())).await;
    until(|| async { auth.verifier().fleet_connected() }).await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetFailClosedStream000001");
    proxy.cut();
    until(|| async { !auth.verifier().fleet_connected() }).await;
    let response = http
        .get(format!("http://{addr}/events"))
        .bearer_auth(&t)
        .send()
        .await
        .expect("opens");
    assert_eq!(response.status(), 200, "opened before the fail-closed bound");
    let mut body = response.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream kept flowing while the replica refuses every request"
    );
    assert!(auth.verifier().fleet_status().is_some_and(|s| s.out_of_sync));
    proxy.restore();
}

/// Redis hangs; one replica invalidates a token meanwhile (queued: Redis takes nothing) and
/// stays cut off when Redis is back, while the other comes back first. That one may not
/// serve the answer Redis still shares and the queued invalidation voids: it has not heard
/// from a replica that was alive when it lost the fleet, so it skips the shared tier (and
/// asks the gateway) until that replica is heard or its reconnection bound has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_first_serves_no_shared_answer_a_queued_invalidation_voids() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let proxy = Proxy::start(redis.port).await;
    let away = replica(&gateway, through(&proxy), "/").await;
    crate::harness::wait_connected(&away).await;
    let back = &replicas(1, &gateway, &redis, "/").await[0];
    let http = reqwest::Client::new();
    let revoked = token(&gateway, "oc_fleetBackFirst000000000000001");
    // Verified once, shared through Redis, cached on both.
    assert_eq!(status(&http, &away, &revoked).await, 200);
    assert_eq!(status(&http, back, &revoked).await, 200);

    redis.pause();
    gateway.revoke(&revoked);
    assert!(matches!(
        away.auth.verifier().invalidate(&revoked).await,
        ChangeOutcome::Queued(_)
    ));
    until(|| async { !away.auth.verifier().fleet_connected() && !back.auth.verifier().fleet_connected() }).await;
    proxy.cut();
    redis.resume();
    until(|| async { back.auth.verifier().fleet_connected() }).await;
    assert!(
        !away.auth.verifier().fleet_connected(),
        "the invalidating replica is still away"
    );
    assert_eq!(
        status(&http, back, &revoked).await,
        401,
        "served the shared answer the queued invalidation voids"
    );

    proxy.restore();
    crate::harness::wait_connected(&away).await;
    until(|| async { status(&http, back, &revoked).await == 401 }).await;
    assert_eq!(status(&http, &away, &revoked).await, 401);
}
