//! `WachtWebhooks` in fleet mode: a delivery received by one replica ends access on every
//! replica (each waited for with a deadline, no timing asserted), and a delivery whose change
//! the fleet has not taken is answered 503, so that Wacht delivers it again.

use std::time::Duration;

use serde_json::json;
use tower_wacht::jwt::JwtConfig;
use tower_wacht::testing::{
    AccessTokenClaims, ApiKeyGrant, FakeGateway, JwksIssuer, TokenGrant, WebhookSigner, generate_api_key,
    generate_token,
};
use tower_wacht::{WachtAuthConfig, WachtAuthLayer, WachtWebhooks};

use crate::common::{self, start_gateway};
use crate::harness::{RedisServer, Replica, fleet_config, replica_config, serve, status, wait_connected};
use crate::sharing::until;

const USER: i64 = 432119876543210241;
const CLIENT: &str = "oc_fleetWebhooks000000000000000001";
const PATH: &str = "/webhooks/wacht";

/// Replicas taking opaque tokens of `issuer`, its JWTs and `sk_live` keys.
fn config(gateway: &FakeGateway, redis: &RedisServer, issuer: &JwksIssuer) -> WachtAuthConfig {
    replica_config(gateway, fleet_config(redis), "/")
        .to_builder()
        .api_key_prefixes(["sk_live"])
        .expected_issuer(issuer.url())
        .jwt(JwtConfig::new())
        .build()
        .expect("valid config")
}

struct Fleet {
    replicas: Vec<Replica>,
    gateway: FakeGateway,
    issuer: JwksIssuer,
    signer: WebhookSigner,
    /// Replica 0's webhook receiver.
    receiver: std::net::SocketAddr,
    http: reqwest::Client,
    _redis: RedisServer,
}

async fn fleet(redis: RedisServer) -> Fleet {
    let gateway = start_gateway().await;
    let issuer = JwksIssuer::start().await.expect("issuer starts");
    let config = config(&gateway, &redis, &issuer);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let replica = serve(WachtAuthLayer::new(config.clone()).expect("layer builds")).await;
        wait_connected(&replica).await;
        replicas.push(replica);
    }
    let signer = WebhookSigner::generate();
    let webhooks = WachtWebhooks::new(&replicas[0].auth, [signer.secret()]).expect("valid secret");
    let receiver = common::serve(webhooks.router(PATH)).await;
    Fleet {
        replicas,
        gateway,
        issuer,
        signer,
        receiver,
        http: reqwest::Client::new(),
        _redis: redis,
    }
}

impl Fleet {
    fn token(&self, grant: TokenGrant) -> String {
        let token = generate_token();
        self.gateway.register(
            &token,
            grant.issuer(self.issuer.url()).expires_in(Duration::from_secs(3600)),
        );
        token
    }

    async fn deliver(&self, id: &str, event: &str, data: serde_json::Value) -> u16 {
        let body = WebhookSigner::event(event, data);
        self.http
            .post(format!("http://{}{PATH}", self.receiver))
            .headers(self.signer.sign_now(id, body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("request completes")
            .status()
            .as_u16()
    }

    /// `credential` is served by every replica (cached on each).
    async fn served_everywhere(&self, credential: &str) {
        for replica in &self.replicas {
            assert_eq!(status(&self.http, replica, credential).await, 200);
        }
    }

    /// Every replica comes to refuse `credential`, within the deadline of `until`.
    async fn refused_everywhere(&self, credential: &str) {
        for replica in &self.replicas {
            until(|| async { status(&self.http, replica, credential).await == 401 }).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mapped_event_received_by_one_replica_ends_access_on_every_replica() {
    let fleet = fleet(RedisServer::start()).await;
    let user_token = fleet.token(
        TokenGrant::new(CLIENT)
            .granted_resource(common::ORG_URN)
            .owner_user_id(USER),
    );
    let claims = AccessTokenClaims::new(CLIENT);
    let jwt = fleet.issuer.mint(&claims);
    let key = generate_api_key("sk_live");
    fleet
        .gateway
        .register_api_key(&key, ApiKeyGrant::new("billing").key_id(7001));
    let member_key = generate_api_key("sk_live");
    fleet
        .gateway
        .register_api_key(&member_key, ApiKeyGrant::new("billing").key_id(7002).workspace(5, 9002));
    let tenant_token = fleet.token(
        TokenGrant::new(CLIENT)
            .granted_resource("urn:wacht:organization:427001234567899999")
            .owner_user_id(7),
    );
    for credential in [&user_token, &jwt, &key, &member_key, &tenant_token] {
        fleet.served_everywhere(credential).await;
    }

    let sid = claims.sid().expect("a session").to_owned();
    let cases: [(&str, serde_json::Value, &String); 5] = [
        ("user.deleted", json!({"entity_id": USER.to_string()}), &user_token),
        ("session.deleted", json!({"entity_id": sid}), &jwt),
        ("api_key.deleted", json!({"entity_id": "7001"}), &key),
        ("workspace.member.removed", json!({"entity_id": "9002"}), &member_key),
        (
            "organization.deleted",
            json!({"entity_id": "427001234567899999"}),
            &tenant_token,
        ),
    ];
    for (n, (event, data, credential)) in cases.into_iter().enumerate() {
        // Wacht's side of the event (a JWT cannot be revoked there before it expires).
        fleet.gateway.revoke(credential);
        assert_eq!(fleet.deliver(&format!("msg_{n}"), event, data).await, 200, "{event}");
        fleet.refused_everywhere(credential).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_fleet_has_not_taken_is_answered_503_and_acted_on_when_delivered_again() {
    let fleet = fleet(RedisServer::start()).await;
    let token = fleet.token(
        TokenGrant::new(CLIENT)
            .granted_resource(common::ORG_URN)
            .owner_user_id(USER),
    );
    fleet.served_everywhere(&token).await;
    fleet.gateway.revoke(&token);

    // Redis hangs: the change is in force on the receiving replica, not written to the log.
    let redis = &fleet._redis;
    redis.pause();
    let data = json!({"entity_id": USER.to_string()});
    assert_eq!(fleet.deliver("msg_1", "user.deleted", data.clone()).await, 503);
    redis.resume();
    // Wacht delivers it again (the same id): acted on again, and settled this time.
    until(|| async { fleet.deliver("msg_1", "user.deleted", data.clone()).await == 200 }).await;
    fleet.refused_everywhere(&token).await;
}
