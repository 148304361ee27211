//! Replicas as separate processes: two `examples/fleet.rs` instances on one Redis and one
//! gateway, driven over loopback, invalidated through the operator listener.

use std::process::{Child, Command};
use std::time::Duration;

use crate::common::start_gateway;
use crate::harness::{RedisServer, SECRET, free_port, token};
use crate::sharing::until;

struct Instance {
    child: Child,
    port: u16,
    admin: u16,
    /// Where its output (logs included) goes.
    log: std::path::PathBuf,
}

impl Instance {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn start(redis: &RedisServer, gateway_url: &str) -> Instance {
    start_with(redis, gateway_url, &[])
}

fn start_with(redis: &RedisServer, gateway_url: &str, extra_env: &[(&str, &str)]) -> Instance {
    // `cargo test` builds the examples next to the test binaries (`target/<profile>/examples`).
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("fleet")))
        .expect("the test binary's directory");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --all-features`, which builds the examples",
        binary.display()
    );
    let (port, admin) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("tower-wacht-fleet-example-{}-{port}.log", std::process::id()));
    let output = std::fs::File::create(&log).expect("a log file");
    let mut command = Command::new(binary);
    command
        .env("WACHT_GATEWAY_URL", gateway_url)
        .env("WACHT_BACKEND_API_KEY", crate::common::API_KEY)
        .env(
            "WACHT_DEPLOYMENT_ID",
            tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID.to_string(),
        )
        .env("WACHT_REDIS_URL", redis.url())
        .env("WACHT_FLEET_SECRET", SECRET)
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("ADMIN_BIND", format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn");
    // After the defaults: they override them.
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let child = command
        .stdout(output.try_clone().expect("a log file"))
        .stderr(output)
        .spawn()
        .expect("the fleet example starts");
    Instance {
        child,
        port,
        admin,
        log,
    }
}

async fn whoami(http: &reqwest::Client, instance: &Instance, token: &str) -> Option<u16> {
    let resp = http
        .get(format!("http://127.0.0.1:{}/whoami", instance.port))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replica_processes_share_one_gateway_call_and_invalidations() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let instances = [start(&redis, &gateway.url()), start(&redis, &gateway.url())];
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetProcesses0000000000000001");
    for instance in &instances {
        until(|| async { whoami(&http, instance, "oat_probe").await.is_some() }).await;
    }
    // Give both channels a moment to subscribe, then: one call for both processes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.reset_calls();
    for instance in &instances {
        assert_eq!(whoami(&http, instance, &t).await, Some(200));
    }
    assert_eq!(gateway.calls(), 1, "the second process used the first one's answer");
    // Each process exports its metrics on its operator listener, in Prometheus' text format.
    for instance in &instances {
        let resp = http
            .get(format!("http://127.0.0.1:{}/metrics", instance.admin))
            .send()
            .await
            .expect("operator listener answers");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4")
        );
        let text = resp.text().await.expect("a body");
        assert!(
            text.contains("# TYPE wacht_verifications_total counter")
                && text.contains("wacht_verifications_total{outcome=\"allowed\""),
            "{text}"
        );
        assert!(text.contains("wacht_fleet_channel_connected 1"), "{text}");
    }
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/metrics", instances[0].admin))
            .await
            .expect("operator listener answers")
            .text()
            .await
            .expect("a body")
            .contains("wacht_gateway_request_duration_seconds_bucket{le="),
        "the process that asked the gateway exports the latency histogram's buckets"
    );
    // Revoke, and invalidate through the first process's operator listener.
    gateway.revoke(&t);
    let resp = http
        .post(format!("http://127.0.0.1:{}/invalidate", instances[0].admin))
        .json(&serde_json::json!({ "token": t }))
        .send()
        .await
        .expect("operator listener answers");
    assert_eq!(resp.status(), 204);
    let delay = until(|| async { whoami(&http, &instances[1], &t).await == Some(401) }).await;
    println!("invalidation reached the other process after {delay:?}");
    // Deny a client through the second process: refused by the first.
    let t2 = token(&gateway, "oc_fleetProcessesDeny000000000001");
    assert_eq!(whoami(&http, &instances[0], &t2).await, Some(200));
    let resp = http
        .post(format!(
            "http://127.0.0.1:{}/clients/oc_fleetProcessesDeny000000000001/deny",
            instances[1].admin
        ))
        .send()
        .await
        .expect("operator listener answers");
    assert_eq!(resp.status(), 204);
    until(|| async { whoami(&http, &instances[0], &t2).await == Some(401) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_denials_through_the_operator_listener_reach_running_and_later_processes() {
    use tower_wacht::testing::{AccessTokenClaims, JwksIssuer};
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let issuer = JwksIssuer::start().await.unwrap();
    let issuer_url = issuer.url();
    let jwt_env = [("WACHT_JWT", "on"), ("WACHT_OAUTH_ISSUER", issuer_url.as_str())];
    let instances = [
        start_with(&redis, &gateway.url(), &jwt_env),
        start_with(&redis, &gateway.url(), &jwt_env),
    ];
    let http = reqwest::Client::new();
    for instance in &instances {
        until(|| async { whoami(&http, instance, "oat_probe").await.is_some() }).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let session_claims = AccessTokenClaims::new("oc_fleetProcessesJwt0000000000001");
    let stolen_session = issuer.mint(&session_claims);
    let token_claims = AccessTokenClaims::new("oc_fleetProcessesJwt0000000000001");
    let stolen_token = issuer.mint(&token_claims);
    for instance in &instances {
        assert_eq!(whoami(&http, instance, &stolen_session).await, Some(200));
        assert_eq!(whoami(&http, instance, &stolen_token).await, Some(200));
    }
    let deny = |path: String| {
        let http = http.clone();
        async move {
            http.post(path)
                .send()
                .await
                .expect("operator listener answers")
                .status()
        }
    };
    let sid = session_claims.sid().expect("a session id");
    let answer = deny(format!("http://127.0.0.1:{}/sessions/{sid}/deny", instances[0].admin)).await;
    assert_eq!(answer, 204);
    let answer = deny(format!(
        "http://127.0.0.1:{}/token-ids/{}/deny",
        instances[1].admin,
        token_claims.jti()
    ))
    .await;
    assert_eq!(answer, 204);
    for instance in &instances {
        until(|| async { whoami(&http, instance, &stolen_session).await == Some(401) }).await;
        until(|| async { whoami(&http, instance, &stolen_token).await == Some(401) }).await;
    }
    // A process started afterwards reads both denials from Redis.
    let late = start_with(&redis, &gateway.url(), &jwt_env);
    until(|| async { whoami(&http, &late, "oat_probe").await.is_some() }).await;
    let fresh = issuer.mint(&AccessTokenClaims::new("oc_fleetProcessesJwt0000000000001"));
    until(|| async { whoami(&http, &late, &fresh).await == Some(200) }).await;
    assert_eq!(whoami(&http, &late, &stolen_session).await, Some(401));
    assert_eq!(whoami(&http, &late, &stolen_token).await, Some(401));
}

/// A new user follows the example's old instructions: a secret generated inline for each
/// replica. The second replica lands on the same Redis with another secret and shares
/// nothing; both must say so in their logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_process_with_another_secret_logs_that_it_shares_nothing() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let first = start(&redis, &gateway.url());
    let http = reqwest::Client::new();
    until(|| async { whoami(&http, &first, "oat_probe").await.is_some() }).await;
    let second = start_with(
        &redis,
        &gateway.url(),
        &[("WACHT_FLEET_SECRET", "a second secret, generated in another shell")],
    );
    // Whichever connects second finds the other's fingerprint at once (the first one finds
    // the second's at its next periodic check).
    let said = || {
        [&first, &second]
            .iter()
            .any(|i| i.output().contains("use another WACHT_FLEET_SECRET"))
    };
    until(|| async { said() }).await;
}

/// The operator learns the truth: while Redis refuses writes, a denial is answered 202 with
/// the reason (in force, not yet written), an allow of it 409; once Redis takes writes
/// again, 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_listener_says_whether_a_change_was_written() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let instance = start(&redis, &gateway.url());
    let http = reqwest::Client::new();
    until(|| async { whoami(&http, &instance, "oat_probe").await.is_some() }).await;
    until(|| async {
        let status = http
            .get(format!("http://127.0.0.1:{}/fleet", instance.admin))
            .send()
            .await;
        status.is_ok_and(|r| r.status() == 200) && whoami(&http, &instance, "oat_probe").await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let post = |path: &str| {
        let (http, url) = (http.clone(), format!("http://127.0.0.1:{}{path}", instance.admin));
        async move {
            let resp = http.post(url).send().await.expect("operator listener answers");
            (resp.status().as_u16(), resp.text().await.unwrap_or_default())
        }
    };
    let refuse = |on: &str| {
        assert_eq!(
            redis
                .command(&["CONFIG", "SET", "min-replicas-to-write", on])
                .as_deref(),
            Some("+OK")
        );
    };
    refuse("1");
    let (status, body) = post("/clients/oc_fleetOperator00000000000001/deny").await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("Redis refuses writes"), "{body}");
    let (status, body) = post("/clients/oc_fleetOperator00000000000001/allow").await;
    assert_eq!(status, 409, "{body}");
    refuse("0");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(post("/clients/oc_fleetOperator00000000000001/allow").await.0, 204);
    assert_eq!(post("/clients/oc_fleetOperator00000000000002/deny").await.0, 204);
}

/// The example wired to Wacht's webhooks (`WACHT_WEBHOOK_SECRET`, two while rotating): a
/// `user.deleted` delivered to one process ends the user's access on the other; its operator
/// listener invalidates a user and an API key by id too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivered_to_one_process_ends_access_on_the_other() {
    use tower_wacht::testing::{TokenGrant, WebhookSigner, generate_token};
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let (old, signer) = (WebhookSigner::generate(), WebhookSigner::generate());
    let secrets = format!("{} {}", old.secret(), signer.secret());
    let env = [("WACHT_WEBHOOK_SECRET", secrets.as_str())];
    let instances = [
        start_with(&redis, &gateway.url(), &env),
        start_with(&redis, &gateway.url(), &env),
    ];
    let http = reqwest::Client::new();
    for instance in &instances {
        until(|| async { whoami(&http, instance, "oat_probe").await.is_some() }).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let of_user = |user: i64| {
        let token = generate_token();
        gateway.register(
            &token,
            TokenGrant::new("oc_fleetProcessesHooks00000000001")
                .granted_resource(crate::common::ORG_URN)
                .owner_user_id(user)
                .expires_in(Duration::from_secs(3600)),
        );
        token
    };
    let (deleted, invalidated) = (of_user(42), of_user(43));
    for instance in &instances {
        assert_eq!(whoami(&http, instance, &deleted).await, Some(200));
        assert_eq!(whoami(&http, instance, &invalidated).await, Some(200));
    }
    gateway.revoke(&deleted);
    gateway.revoke(&invalidated);
    let body = WebhookSigner::event("user.deleted", serde_json::json!({"entity_id": "42"}));
    let deliver = |signer: &WebhookSigner, id: &str| {
        http.post(format!("http://127.0.0.1:{}/webhooks/wacht", instances[0].port))
            .headers(signer.sign_now(id, body.as_bytes()))
            .body(body.clone())
            .send()
    };
    let resp = deliver(&WebhookSigner::generate(), "msg_forged")
        .await
        .expect("answers");
    assert_eq!(resp.status(), 401, "a delivery signed with another secret");
    let resp = deliver(&old, "msg_1").await.expect("answers");
    assert_eq!(resp.status(), 200);
    until(|| async { whoami(&http, &instances[1], &deleted).await == Some(401) }).await;
    // The operator listener, by id.
    let resp = http
        .post(format!("http://127.0.0.1:{}/users/43/invalidate", instances[1].admin))
        .send()
        .await
        .expect("operator listener answers");
    assert_eq!(resp.status(), 204);
    until(|| async { whoami(&http, &instances[0], &invalidated).await == Some(401) }).await;
    let resp = http
        .post(format!(
            "http://127.0.0.1:{}/api-keys/not-an-id/invalidate",
            instances[1].admin
        ))
        .send()
        .await
        .expect("operator listener answers");
    assert_eq!(resp.status(), 400);
}
