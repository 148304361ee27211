//! `invalidate_user` and `invalidate_api_key` in fleet mode: made on one replica, every other
//! replica stops serving the answers they cover, the shared tier in Redis included, and no
//! answer stamped before the invalidation comes back: not to a replica started afterwards,
//! not one written back late.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, watch};
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError, HttpGateway};
use tower_wacht::principal::{ApiKeyId, UserId};
use tower_wacht::testing::{ApiKeyGrant, FakeGateway, TokenGrant, generate_api_key, generate_token};
use tower_wacht::{ChangeOutcome, WachtAuthConfig, WachtAuthLayer};

use crate::common::{self, start_gateway};
use crate::harness::{RedisServer, Replica, fleet_config, replica_config, serve, status, wait_connected};
use crate::sharing::until;

const USER: i64 = 432119876543210241;
const OTHER_USER: i64 = 432119876543210999;

/// The test replicas' configuration, taking `sk_live` API keys too.
fn config(gateway: &FakeGateway, redis: &RedisServer) -> WachtAuthConfig {
    replica_config(gateway, fleet_config(redis), "/")
        .to_builder()
        .api_key_prefixes(["sk_live"])
        .build()
        .expect("valid config")
}

async fn replica(config: &WachtAuthConfig) -> Replica {
    let replica = serve(WachtAuthLayer::new(config.clone()).expect("layer builds")).await;
    wait_connected(&replica).await;
    replica
}

fn token_of(gateway: &FakeGateway, user: i64) -> String {
    let token = generate_token();
    gateway.register(
        &token,
        TokenGrant::new("oc_fleetOwners00000000000000000001")
            .granted_resource(common::ORG_URN)
            .owner_user_id(user)
            .expires_in(Duration::from_secs(3600)),
    );
    token
}

fn key_of(gateway: &FakeGateway, key_id: i64, user: i64) -> String {
    let key = generate_api_key("sk_live");
    gateway.register_api_key(&key, ApiKeyGrant::new("billing").key_id(key_id).owner_user_id(user));
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_user_and_api_key_on_one_replica_reach_every_replica_and_the_shared_tier() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let config = config(&gateway, &redis);
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(replica(&config).await);
    }
    let http = reqwest::Client::new();
    // Cached on every replica: a token and a key of the user, and another user's token.
    let (token, key, other) = (
        token_of(&gateway, USER),
        key_of(&gateway, 7001, USER),
        token_of(&gateway, OTHER_USER),
    );
    // Used on replica 0 only: known to the others through the shared tier alone (the second
    // is asked again only by a replica started after the change).
    let (shared_only, shared_late) = (token_of(&gateway, USER), token_of(&gateway, USER));
    for replica in &fleet {
        for credential in [&token, &key, &other] {
            assert_eq!(status(&http, replica, credential).await, 200);
        }
    }
    assert_eq!(status(&http, &fleet[0], &shared_only).await, 200);
    assert_eq!(status(&http, &fleet[0], &shared_late).await, 200);
    assert_eq!(gateway.calls(), 5, "one gateway call per credential, fleet-wide");

    // The user's access is revoked at Wacht; replica 0 is told.
    for credential in [&token, &key, &shared_only, &shared_late] {
        gateway.revoke(credential);
    }
    assert_eq!(
        fleet[0].auth.invalidate_user(UserId(USER)).await,
        ChangeOutcome::Durable
    );
    for replica in &fleet {
        for credential in [&token, &key] {
            until(|| async { status(&http, replica, credential).await == 401 }).await;
        }
    }
    // Replicas 1 and 2 never held `shared_only` locally: Redis's answer is void for them too.
    for replica in &fleet[1..] {
        until(|| async { status(&http, replica, &shared_only).await == 401 }).await;
    }
    // Another user's answers stay cached everywhere.
    gateway.reset_calls();
    for replica in &fleet {
        assert_eq!(status(&http, replica, &other).await, 200);
    }
    assert_eq!(gateway.calls(), 0, "another user's token was not asked again");

    // A replica started after the change reads it from the log: the answer Redis still holds
    // for `shared_late` is void for it as well.
    let late = replica(&config).await;
    assert_eq!(status(&http, &late, &shared_late).await, 401);

    // invalidate_api_key on replica 2: that key only, on every replica.
    let (revoked_key, kept_key) = (key_of(&gateway, 7002, USER), key_of(&gateway, 7003, USER));
    for replica in &fleet {
        assert_eq!(status(&http, replica, &revoked_key).await, 200);
        assert_eq!(status(&http, replica, &kept_key).await, 200);
    }
    gateway.revoke(&revoked_key);
    assert_eq!(
        fleet[2].auth.invalidate_api_key(ApiKeyId(7002)).await,
        ChangeOutcome::Durable
    );
    for replica in fleet.iter().chain([&late]) {
        until(|| async { status(&http, replica, &revoked_key).await == 401 }).await;
    }
    gateway.reset_calls();
    for replica in &fleet {
        assert_eq!(status(&http, replica, &kept_key).await, 200);
    }
    assert_eq!(gateway.calls(), 0, "the other key stayed cached");
}

/// The real gateway client, whose answers (from call `hold_from` on) are held back after the
/// gateway gave them, until the test releases them.
struct Held {
    inner: HttpGateway,
    calls: std::sync::atomic::AtomicUsize,
    hold_from: usize,
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
                let _ = self.release.clone().wait_for(|released| *released).await;
            }
            decision
        })
    }
}

/// Replica A asks the gateway for a user's token and gets "allowed"; before that answer is
/// stored (locally and in Redis), the user's access is revoked and replica B invalidates the
/// user. The late answer, stamped before the invalidation, is not served: A voids it locally
/// (B's change, read from the log) and does not take it back from Redis, where it has just
/// written it, but asks the gateway again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_written_back_after_invalidate_user_is_served_by_no_replica() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let config = config(&gateway, &redis);
    let (release, released) = watch::channel(false);
    let answered = Arc::new(Notify::new());
    let held = Held {
        inner: HttpGateway::new(&config).expect("client"),
        calls: Default::default(),
        hold_from: 1,
        answered: Arc::clone(&answered),
        release: released,
    };
    let a = serve(WachtAuthLayer::with_gateway(config.clone(), held).expect("layer builds")).await;
    wait_connected(&a).await;
    let b = replica(&config).await;
    let http = reqwest::Client::new();
    let token = token_of(&gateway, USER);

    let on_a = {
        let (http, token, addr) = (http.clone(), token.clone(), a.addr);
        tokio::spawn(async move {
            let resp = http
                .get(format!("http://{addr}/whoami"))
                .bearer_auth(token)
                .send()
                .await;
            resp.expect("request completes").status().as_u16()
        })
    };
    answered.notified().await;
    gateway.revoke(&token);
    assert_eq!(b.auth.invalidate_user(UserId(USER)).await, ChangeOutcome::Durable);
    // A applies B's change before its own answer lands (the log is read within a heartbeat).
    until(|| async {
        a.auth.verifier().fleet_status().map(|s| s.log_position)
            == b.auth.verifier().fleet_status().map(|s| s.log_position)
    })
    .await;
    release.send_replace(true);
    assert_eq!(on_a.await.expect("joined"), 401, "A served its pre-invalidation answer");
    assert_eq!(status(&http, &a, &token).await, 401);
    assert_eq!(status(&http, &b, &token).await, 401);
}
