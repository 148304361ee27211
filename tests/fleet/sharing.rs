//! What sharing buys and what it must never leak: one gateway call per token fleet-wide,
//! invalidations on every replica, profiles and forgeries kept apart.

use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::join_all;
use tower_wacht::ChangeOutcome;
use tower_wacht::testing::Fault;

use crate::common::start_gateway;
use tower_wacht::WachtAuthLayer;

use crate::harness::{RedisServer, Replica, fleet_config, replica, replica_config, replicas, serve, status, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_used_on_three_replicas_costs_one_gateway_call() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(3, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetOneCall000000000000000001");
    for replica in &fleet {
        assert_eq!(status(&http, replica, &t).await, 200);
    }
    assert_eq!(gateway.calls(), 1, "one gateway call for the whole fleet");
    // A rejection is shared too: an unknown token asked on every replica, one call.
    gateway.reset_calls();
    let unknown = tower_wacht::testing::generate_token();
    for replica in &fleet {
        assert_eq!(status(&http, replica, &unknown).await, 401);
    }
    assert_eq!(gateway.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_three_replicas_costs_one_gateway_call() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(3, &gateway, &redis, "/").await;
    gateway.set_fault(Some(Fault::Latency(Duration::from_millis(300))));
    let t = token(&gateway, "oc_fleetStampede00000000000000001");
    let http = reqwest::Client::new();
    let requests = fleet
        .iter()
        .flat_map(|replica| (0..10).map(move |_| replica))
        .map(|replica| status(&http, replica, &t));
    let answers = join_all(requests).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    assert_eq!(
        gateway.calls(),
        1,
        "one replica asked; the others waited for its answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_and_deny_on_one_replica_reach_every_replica() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(3, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let client = "oc_fleetInvalidate000000000000001";
    let t = token(&gateway, client);
    for replica in &fleet {
        assert_eq!(status(&http, replica, &t).await, 200);
    }
    // Revoked at Wacht; the operator invalidates it on replica 0.
    gateway.revoke(&t);
    let started = Instant::now();
    assert_eq!(fleet[0].auth.invalidate(&t).await, ChangeOutcome::Durable);
    for replica in &fleet[1..] {
        let delay = until(|| async { status(&http, replica, &t).await == 401 }).await;
        println!("invalidate(token) reached a replica after {delay:?}");
    }
    println!(
        "invalidate(token): every replica refused within {:?}",
        started.elapsed()
    );

    // Deny a client on replica 1: refused everywhere, though the gateway allows it.
    let t2 = token(&gateway, client);
    for replica in &fleet {
        assert_eq!(status(&http, replica, &t2).await, 200);
    }
    assert_eq!(fleet[1].auth.deny_client(client).await, ChangeOutcome::Durable);
    for replica in &fleet {
        until(|| async { status(&http, replica, &t2).await == 401 }).await;
    }
    // A replica that starts later picks the deny list up from Redis.
    let late = replica(&gateway, fleet_config(&redis), "/").await;
    crate::harness::wait_connected(&late).await;
    assert_eq!(status(&http, &late, &t2).await, 401, "the deny list lives in Redis");
    // Allowed again on replica 2: accepted everywhere.
    assert_eq!(fleet[2].auth.allow_client(client).await, ChangeOutcome::Durable);
    for replica in fleet.iter().chain([&late]) {
        until(|| async { status(&http, replica, &t2).await == 200 }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_profiles_sharing_one_redis_never_share_an_entry() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    // Same secret, same Redis, different gateway resource: different check profiles.
    let a = replica(&gateway, fleet_config(&redis), "/a").await;
    let b = replica(&gateway, fleet_config(&redis), "/b").await;
    // A replica shares only once it follows the fleet's log.
    crate::harness::wait_connected(&a).await;
    crate::harness::wait_connected(&b).await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetProfiles00000000000000001");
    assert_eq!(status(&http, &a, &t).await, 200);
    assert_eq!(status(&http, &b, &t).await, 200);
    assert_eq!(gateway.calls(), 2, "profile b did not use profile a's entry");
    let answers = redis.keys("wacht:*:a:*");
    assert_eq!(answers.len(), 2, "{answers:?}");
    let prefixes: std::collections::HashSet<&str> = answers.iter().map(|k| &k[..k.find(":a:").unwrap_or(0)]).collect();
    assert_eq!(prefixes.len(), 2, "each profile has its own namespace: {answers:?}");
    // No key holds the token or its plain SHA-256.
    let sha = tower_wacht::testing::hash_token(&t);
    for key in redis.keys("*") {
        assert!(!key.contains(&t) && !key.contains(&sha), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_routes_share_answers_by_credential_and_other_fixed_routes_never_share() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let request_mode = || async {
        let config = replica_config(&gateway, fleet_config(&redis), "/")
            .to_builder()
            .report_request_route()
            .build()
            .expect("valid config");
        let replica = serve(WachtAuthLayer::new(config).expect("layer builds")).await;
        crate::harness::wait_connected(&replica).await;
        replica
    };
    let (a, b) = (request_mode().await, request_mode().await);
    // The former default, pinned: `GET /` on every miss; and another fixed route.
    let fixed = replica(&gateway, fleet_config(&redis), "/").await;
    let other_fixed = replica(&gateway, fleet_config(&redis), "/other").await;
    crate::harness::wait_connected(&fixed).await;
    crate::harness::wait_connected(&other_fixed).await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetRoutes0000000000000000001");
    let get = |replica: &Replica, path: &str| {
        http.get(format!("http://{}{path}", replica.addr))
            .bearer_auth(&t)
            .send()
    };
    assert_eq!(get(&a, "/whoami").await.unwrap().status(), 200);
    // Another route on another replica: the answer is the credential's, shared.
    assert_eq!(get(&b, "/public").await.unwrap().status(), 200);
    let sent: Vec<_> = gateway.requests().into_iter().map(|r| (r.method, r.resource)).collect();
    assert_eq!(
        sent,
        [("GET".to_owned(), "/whoami".to_owned())],
        "one call, the first route"
    );
    // A replica of the former default (`GET /`) has the request mode's profile (so a fleet
    // upgraded from it keeps its denial records): it shares the answer.
    assert_eq!(status(&http, &fixed, &t).await, 200);
    assert_eq!(
        gateway.calls(),
        1,
        "the former default shares the request mode's answer"
    );
    // Another fixed route is another profile.
    assert_eq!(status(&http, &other_fixed, &t).await, 200);
    assert_eq!(gateway.calls(), 2, "another fixed route did not use the shared answer");
    assert_eq!(gateway.requests()[1].resource, "/other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_or_moved_entries_are_ignored() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(2, &gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let good = token(&gateway, "oc_fleetGood000000000000000000001");
    assert_eq!(status(&http, &fleet[0], &good).await, 200);
    let good_key = redis.keys("wacht:*:a:*").pop().expect("the shared answer");
    let good_value = get(&redis, &good_key);

    // An attacker with write access to Redis but not the secret.
    // 1. Moves the good answer under another token's key (a token the gateway rejects).
    let victim = tower_wacht::testing::generate_token();
    assert_eq!(status(&http, &fleet[0], &victim).await, 401);
    let victim_key = {
        let rejected = redis
            .keys("wacht:*:n:*")
            .pop()
            .expect("the shared rejection (the only one)");
        rejected.replacen(":n:", ":a:", 1)
    };
    redis.command_raw(&[b"DEL".to_vec(), victim_key.replacen(":a:", ":n:", 1).into_bytes()]);
    set(&redis, &victim_key, &good_value);
    // A fresh replica has nothing cached locally: it reads the shared tier.
    let fresh = replica(&gateway, fleet_config(&redis), "/").await;
    crate::harness::wait_connected(&fresh).await;
    let calls = gateway.calls();
    assert_eq!(status(&http, &fresh, &victim).await, 401, "a moved answer was used");
    assert_eq!(gateway.calls(), calls + 1, "the gateway was asked instead");

    // 2. Tampers with the good answer (one bit) and 3. writes a made-up one.
    let mut tampered = good_value.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    set(&redis, &good_key, &tampered);
    let other = tower_wacht::testing::generate_token();
    let before = redis.keys("wacht:*:n:*");
    assert_eq!(status(&http, &fleet[0], &other).await, 401);
    let other_key = redis
        .keys("wacht:*:n:*")
        .into_iter()
        .find(|k| !before.contains(k))
        .expect("the new rejection")
        .replacen(":n:", ":a:", 1);
    redis.command_raw(&[b"DEL".to_vec(), other_key.replacen(":a:", ":n:", 1).into_bytes()]);
    set(&redis, &other_key, &[7u8; 300]);
    let fresh = replica(&gateway, fleet_config(&redis), "/").await;
    crate::harness::wait_connected(&fresh).await;
    let calls = gateway.calls();
    assert_eq!(
        status(&http, &fresh, &good).await,
        200,
        "the real answer comes from the gateway"
    );
    assert_eq!(gateway.calls(), calls + 1, "the tampered answer was not used");
    assert_eq!(status(&http, &fresh, &other).await, 401);
    assert_eq!(gateway.calls(), calls + 2, "the made-up answer was not used");
}

/// An attacker with write access to Redis extends a shared answer's expiry (`PEXPIRE`) to
/// keep a revoked token alive past the ttl: the deadline sealed with the answer wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_kept_in_redis_past_its_ttl_is_not_served() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let config = crate::harness::replica_config(&gateway, fleet_config(&redis), "/")
        .to_builder()
        .ttl(Duration::from_secs(1))
        .build()
        .expect("valid config");
    let layer = || tower_wacht::WachtAuthLayer::new(config.clone()).expect("layer builds");
    let first = crate::harness::serve(layer()).await;
    crate::harness::wait_connected(&first).await;
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetKeptAlive0000000000000001");
    assert_eq!(status(&http, &first, &t).await, 200);
    let key = redis.keys("wacht:*:a:*").pop().expect("the shared answer");
    assert_eq!(redis.command(&["PEXPIRE", &key, "600000"]).as_deref(), Some(":1"));
    gateway.revoke(&t);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A replica with nothing cached reads the shared tier: the answer's ttl has ended.
    let later = crate::harness::serve(layer()).await;
    crate::harness::wait_connected(&later).await;
    assert_eq!(
        status(&http, &later, &t).await,
        401,
        "a revoked token was kept alive in Redis"
    );
}

fn get(redis: &RedisServer, key: &str) -> Vec<u8> {
    // RESP bulk reply: $<len>\r\n<bytes>\r\n, read from the raw socket.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port)).expect("connect");
    let request = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    stream.write_all(request.as_bytes()).expect("write");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let header_end = reply.windows(2).position(|w| w == b"\r\n").expect("a bulk reply");
    let len: usize = std::str::from_utf8(&reply[1..header_end])
        .expect("ascii")
        .parse()
        .expect("length");
    reply[header_end + 2..header_end + 2 + len].to_vec()
}

fn set(redis: &RedisServer, key: &str, value: &[u8]) {
    let reply = redis.command_raw(&[
        b"SET".to_vec(),
        key.as_bytes().to_vec(),
        value.to_vec(),
        b"PX".to_vec(),
        b"60000".to_vec(),
    ]);
    assert!(reply.is_some_and(|r| r.starts_with("+OK")), "SET");
}

/// Polls `done` until it holds (at most 10 s); how long it took.
pub async fn until<F, Fut>(done: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not happen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_on_each_replica_and_a_session_denial_reaches_them_all() {
    use tower_wacht::WachtAuthLayer;
    use tower_wacht::jwt::JwtConfig;
    use tower_wacht::testing::{AccessTokenClaims, JwksIssuer};

    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let issuer = JwksIssuer::start().await.unwrap();
    let start_replica = || async {
        let config = tower_wacht::WachtAuthConfig::builder()
            .gateway_url(gateway.url())
            .api_key(crate::common::API_KEY)
            .expected_issuer(issuer.url())
            .jwt(JwtConfig::new())
            .ttl(Duration::from_secs(60))
            .fleet(fleet_config(&redis))
            .build()
            .unwrap();
        let auth = WachtAuthLayer::new(config).unwrap();
        let addr = crate::common::serve(crate::common::router(auth.clone())).await;
        let replica = crate::harness::Replica { addr, auth };
        crate::harness::wait_connected(&replica).await;
        replica
    };
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(start_replica().await);
    }
    let http = reqwest::Client::new();
    let claims = AccessTokenClaims::new("oc_fleetJwt0000000000000000000001");
    let jwt = issuer.mint(&claims);
    for replica in &fleet {
        assert_eq!(status(&http, replica, &jwt).await, 200);
    }
    assert_eq!(gateway.calls(), 0, "a JWT never reaches the gateway");
    assert!(
        redis.keys("wacht:*:a:*").is_empty(),
        "JWT verdicts are verified locally, never shared"
    );
    // An incident: cut the session off on replica 0; every replica refuses it.
    let session = claims.sid().unwrap().to_owned();
    assert_eq!(
        fleet[0].auth.verifier().deny_session(&session).await,
        ChangeOutcome::Durable
    );
    for replica in &fleet {
        until(|| async { status(&http, replica, &jwt).await == 401 }).await;
    }
    // Another session is untouched; then its token id is denied on replica 1.
    let other_claims = AccessTokenClaims::new("oc_fleetJwt0000000000000000000001");
    let other = issuer.mint(&other_claims);
    for replica in &fleet {
        assert_eq!(status(&http, replica, &other).await, 200);
    }
    assert_eq!(
        fleet[1].auth.verifier().deny_token_id(other_claims.jti()).await,
        ChangeOutcome::Durable
    );
    for replica in &fleet {
        until(|| async { status(&http, replica, &other).await == 401 }).await;
    }
    // A replica that starts after both denials (it heard neither event) reads them from
    // Redis when it subscribes: the stolen tokens are refused there too.
    let late = start_replica().await;
    assert_eq!(
        status(&http, &late, &jwt).await,
        401,
        "session denial known to a late replica"
    );
    assert_eq!(
        status(&http, &late, &other).await,
        401,
        "token-id denial known to a late replica"
    );
    let fresh = issuer.mint(&AccessTokenClaims::new("oc_fleetJwt0000000000000000000001"));
    assert_eq!(status(&http, &late, &fresh).await, 200);
    // What Redis holds is ids and when their denial ends, never a token.
    let mut stored = redis.keys("wacht:*:sessions");
    stored.extend(redis.keys("wacht:*:token-ids"));
    assert_eq!(stored.len(), 2, "{stored:?}");
    for key in &stored {
        let members = redis.command_raw(&[
            b"ZRANGE".to_vec(),
            key.as_bytes().to_vec(),
            b"0".to_vec(),
            b"-1".to_vec(),
        ]);
        let members = members.unwrap_or_default();
        assert!(members.contains(':'), "{members}");
        assert!(!members.contains(&jwt) && !members.contains(&other), "{members}");
    }
    // Kept as long as a replica keeps it: a session denial for 30 days, not the 24 h an
    // access token lives (Wacht mints new ones for the session as long as it lasts).
    let sessions = redis.keys("wacht:*:sessions").pop().expect("the session denials");
    let reply = crate::resp::call(
        redis.port,
        &[b"ZRANGE", sessions.as_bytes(), b"0", b"-1", b"WITHSCORES"],
    )
    .expect("zrange");
    let until_ms: u64 = reply
        .items()
        .get(1)
        .and_then(crate::resp::Resp::text)
        .and_then(|s| s.parse().ok())
        .expect("a score");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let days = (u128::from(until_ms) - now_ms) as f64 / 86_400_000.0;
    assert!(
        (29.9..=30.0).contains(&days),
        "a session denial kept {days} days in Redis"
    );
}

/// The real gateway client, each call held until the test lets it through: call `n` asks
/// the gateway only once `released >= n`, so the gateway's state then decides its answer.
#[derive(Clone)]
struct InTurn {
    inner: std::sync::Arc<tower_wacht::gateway::HttpGateway>,
    arrived: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    released: tokio::sync::watch::Receiver<usize>,
}

impl tower_wacht::gateway::Gateway for InTurn {
    fn check<'a>(
        &'a self,
        request: tower_wacht::gateway::CheckRequest<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<tower_wacht::gateway::Decision, tower_wacht::gateway::GatewayError>>
    {
        Box::pin(async move {
            let n = self.arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut released = self.released.clone();
            let _ = released.wait_for(|r| *r >= n).await;
            self.inner.check(request).await
        })
    }
}

/// Two replicas miss one token at once; the second gives up waiting for the first's lease
/// and asks the gateway itself. The first is answered before the token is revoked, the second
/// after: the fleet must keep the newer verdict (the rejection), not the older approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_rejection_replaces_an_older_shared_approval() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let (release, released) = tokio::sync::watch::channel(0usize);
    let arrived = Arc::new(AtomicUsize::new(0));
    let config = crate::harness::replica_config(
        &gateway,
        fleet_config(&redis).lease_wait(Duration::from_millis(100)),
        "/",
    );
    let in_turn = InTurn {
        inner: Arc::new(tower_wacht::gateway::HttpGateway::new(&config).expect("client")),
        arrived: Arc::clone(&arrived),
        released,
    };
    let build = |gateway_client: Option<InTurn>| {
        let auth = match gateway_client {
            Some(client) => tower_wacht::WachtAuthLayer::with_gateway(config.clone(), client),
            None => tower_wacht::WachtAuthLayer::new(config.clone()),
        };
        crate::harness::serve(auth.expect("layer builds"))
    };
    let first = build(Some(in_turn.clone())).await;
    let second = build(Some(in_turn)).await;
    let third = build(None).await;
    for replica in [&first, &second, &third] {
        crate::harness::wait_connected(replica).await;
    }
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetNewerVerdict00000000000001");

    let (h1, h2) = (http.clone(), http.clone());
    let (t1, t2) = (t.clone(), t.clone());
    let (a1, a2) = (first.addr, second.addr);
    let whoami = |http: reqwest::Client, addr: std::net::SocketAddr, token: String| async move {
        let resp = http
            .get(format!("http://{addr}/whoami"))
            .bearer_auth(token)
            .send()
            .await;
        resp.expect("request completes").status().as_u16()
    };
    let on_first = tokio::spawn(whoami(h1, a1, t1));
    // The first has taken the lease when its gateway call has arrived.
    until(|| async { arrived.load(Ordering::SeqCst) >= 1 }).await;
    let on_second = tokio::spawn(whoami(h2, a2, t2));
    until(|| async { arrived.load(Ordering::SeqCst) >= 2 }).await;
    // The lease holder's call: answered while the token is still valid.
    release.send_replace(1);
    assert_eq!(on_first.await.unwrap(), 200);
    gateway.revoke(&t);
    release.send_replace(2);
    assert_eq!(on_second.await.unwrap(), 401);
    // A third replica asks the shared tier: the newer verdict, not the approval.
    assert_eq!(status(&http, &third, &t).await, 401);
}

/// Attack on the replica that was told to forget: right after `invalidate_all()` returns
/// (its Redis write still on the way), the same replica verifies the revoked token. On this
/// single-threaded runtime the background write runs only once the test yields, so the
/// verification reads Redis first: it must not take the approval the write is about to void.
#[tokio::test]
async fn the_replica_that_invalidates_does_not_take_the_voided_answer_back_from_redis() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let fleet = replicas(1, &gateway, &redis, "/").await;
    let verifier = fleet[0].auth.verifier();
    let t = token(&gateway, "oc_fleetSameReplicaVoid0000000001");
    assert!(verifier.verify(&t).await.is_ok());
    gateway.revoke(&t);
    // Polled once: in force here, its write to Redis spawned and not yet run.
    assert!(verifier.invalidate_all().now_or_never().is_none());
    let after = verifier.verify(&t).await;
    assert!(after.is_err(), "the revoked token came back from Redis: {after:?}");
    // And once the write is done, from every tier.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(verifier.verify(&t).await.is_err());
}

/// The allow lists bind a grant read back from Redis too. Replica A serves every client and
/// writes the gateway's answer for a stranger's token into the shared tier; replica B serves
/// one client only and reads that answer instead of asking the gateway: it must still refuse
/// it. B's refusal is its own (kept in its local negative cache, never written to Redis), so A
/// keeps serving the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_from_the_shared_tier_is_refused_by_a_replica_whose_allow_lists_exclude_it() {
    use tower_wacht::WachtAuthLayer;

    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let open = replica(&gateway, fleet_config(&redis), "/").await;
    let config = crate::harness::replica_config(&gateway, fleet_config(&redis), "/")
        .to_builder()
        .allowed_clients(["oc_fleetAllowed00000000000000001"])
        .build()
        .expect("valid config");
    let narrow = crate::harness::serve(WachtAuthLayer::new(config).expect("layer builds")).await;
    crate::harness::wait_connected(&open).await;
    crate::harness::wait_connected(&narrow).await;
    let http = reqwest::Client::new();

    let stranger = token(&gateway, "oc_fleetStranger0000000000000001");
    assert_eq!(status(&http, &open, &stranger).await, 200);
    assert_eq!(gateway.calls(), 1);
    let resp = http
        .get(format!("http://{}/whoami", narrow.addr))
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("request completes");
    assert_eq!(resp.status(), 401, "a shared grant of a client not allowed here");
    let challenge = crate::common::challenge(&resp);
    assert!(
        challenge.contains(r#"error="invalid_token""#) && challenge.contains("client this server does not serve"),
        "{challenge}"
    );
    assert_eq!(gateway.calls(), 1, "the narrow replica judged the shared answer");
    assert_eq!(status(&http, &narrow, &stranger).await, 401, "remembered");
    assert_eq!(status(&http, &open, &stranger).await, 200, "the refusal is not shared");

    // An allowed client's shared grant is served by both.
    let allowed = token(&gateway, "oc_fleetAllowed00000000000000001");
    assert_eq!(status(&http, &open, &allowed).await, 200);
    assert_eq!(status(&http, &narrow, &allowed).await, 200);
    assert_eq!(gateway.calls(), 2, "one gateway call per token for the whole fleet");
}

/// An API key is shared like a token: one gateway call for the whole fleet, its identity
/// (key id, app, tenant, metadata) read back intact from Redis; replicas that take other
/// prefixes never share with these (the prefixes are part of the check profile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_shared_across_the_fleet_with_its_identity() {
    use serde_json::json;
    use tower_wacht::WachtAuthLayer;
    use tower_wacht::testing::{ApiKeyGrant, generate_api_key};

    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let with_keys = |prefixes: &'static [&'static str]| {
        crate::harness::replica_config(&gateway, fleet_config(&redis), "/")
            .to_builder()
            .api_key_prefixes(prefixes.iter().copied())
            .build()
            .expect("valid config")
    };
    let a = crate::harness::serve(WachtAuthLayer::new(with_keys(&["sk_live"])).expect("layer")).await;
    let b = crate::harness::serve(WachtAuthLayer::new(with_keys(&["sk_live"])).expect("layer")).await;
    let other = crate::harness::serve(WachtAuthLayer::new(with_keys(&["sk_test"])).expect("layer")).await;
    for r in [&a, &b, &other] {
        crate::harness::wait_connected(r).await;
    }
    let key = generate_api_key("sk_live");
    gateway.register_api_key(
        &key,
        ApiKeyGrant::new("billing")
            .key_id(8080)
            .workspace(55, 66)
            .permissions(["reports:read"])
            .metadata("team", json!("finance")),
    );
    let http = reqwest::Client::new();
    let whoami = |addr: std::net::SocketAddr| {
        let http = http.clone();
        let key = key.clone();
        async move {
            let resp = http
                .get(format!("http://{addr}/whoami"))
                .bearer_auth(key)
                .send()
                .await
                .expect("request completes");
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.ok())
        }
    };
    let (status_a, body_a) = whoami(a.addr).await;
    assert_eq!(status_a, 200);
    let (status_b, body_b) = whoami(b.addr).await;
    assert_eq!(status_b, 200);
    assert_eq!(gateway.calls(), 1, "B read A's answer from Redis");
    let (mut body_a, mut body_b) = (body_a.expect("json"), body_b.expect("json"));
    // Redis keeps times in milliseconds.
    for body in [&mut body_a, &mut body_b] {
        body.as_object_mut().expect("object").remove("expires_at");
    }
    assert_eq!(body_b, body_a, "the same principal on both replicas");
    assert_eq!(body_b["credential_kind"], "api_key");
    assert_eq!(body_b["api_key"]["key_id"], "8080");
    assert_eq!(body_b["api_key"]["workspace_membership_id"], "66");
    assert_eq!(body_b["api_key"]["metadata"]["team"], "finance");
    assert_eq!(body_b["granted_resource"], "urn:wacht:workspace:55");
    // A replica that does not take `sk_live` keys asks as a token and is refused; it never
    // reads the key's shared answer.
    let (status_other, _) = whoami(other.addr).await;
    assert_eq!(status_other, 401);
    assert_eq!(gateway.calls(), 2);
    assert_eq!(gateway.requests()[1].principal_type, "oauth_access_token");
}
