//! `WachtWebhooks` over real HTTP: deliveries signed with `testing::WebhookSigner` (as Wacht
//! signs them) posted to the receiver's router, next to an app behind the layer whose cache
//! they act on, against the `FakeGateway`. Every forged, stale, replayed or malformed delivery
//! is refused (or acknowledged without acting) and changes nothing.

use std::net::SocketAddr;
use std::time::SystemTime;

use http::HeaderMap;
use serde_json::json;
use tower_wacht::jwt::JwtConfig;
use tower_wacht::testing::{AccessTokenClaims, ApiKeyGrant, JwksIssuer, WebhookSigner, generate_api_key};
use tower_wacht::{WachtAuthLayer, WachtWebhooks};

use crate::common::{TestApp, serve, start};

const USER: i64 = 432119876543210241;
const OTHER_USER: i64 = 432119876543210999;
const PATH: &str = "/webhooks/wacht";

/// An app taking opaque tokens, `sk_live` keys and JWTs, and its webhook receiver.
struct Hooks {
    app: TestApp,
    issuer: JwksIssuer,
    signer: WebhookSigner,
    receiver: SocketAddr,
    http: reqwest::Client,
}

impl std::ops::Deref for Hooks {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

async fn hooks() -> Hooks {
    let signer = WebhookSigner::generate();
    let secret = signer.secret().to_owned();
    hooks_with(
        move |auth| WachtWebhooks::new(auth, [secret]).expect("a valid secret"),
        signer,
    )
    .await
}

async fn hooks_with(receiver: impl FnOnce(&WachtAuthLayer) -> WachtWebhooks, signer: WebhookSigner) -> Hooks {
    let issuer = JwksIssuer::start().await.expect("issuer starts");
    let url = issuer.url();
    let app = start(move |b| {
        b.api_key_prefixes(["sk_live"])
            .expected_issuer(url)
            .jwt(JwtConfig::new())
    })
    .await;
    let receiver = serve(receiver(&app.auth).router(PATH)).await;
    Hooks {
        app,
        issuer,
        signer,
        receiver,
        http: reqwest::Client::new(),
    }
}

impl Hooks {
    fn token_of(&self, user: i64) -> String {
        self.app.token_with(|g| g.owner_user_id(user).issuer(self.issuer.url()))
    }

    fn key(&self, grant: ApiKeyGrant) -> String {
        let key = generate_api_key("sk_live");
        self.app.gateway.register_api_key(&key, grant);
        key
    }

    async fn status(&self, credential: &str) -> u16 {
        self.app.get("/whoami", Some(credential)).await.status().as_u16()
    }

    /// Posts `body` with `headers`; the answer's status.
    async fn post(&self, headers: HeaderMap, body: impl Into<reqwest::Body>) -> u16 {
        self.http
            .post(format!("http://{}{PATH}", self.receiver))
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("request completes")
            .status()
            .as_u16()
    }

    /// Posts `event` with `data`, signed now by this test's signer, as delivery `id`.
    async fn deliver(&self, id: &str, event: &str, data: serde_json::Value) -> u16 {
        let body = WebhookSigner::event(event, data);
        self.post(self.signer.sign_now(id, body.as_bytes()), body).await
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test]
async fn user_deleted_ends_that_users_access_at_once() {
    let hooks = hooks().await;
    let (token, other) = (hooks.token_of(USER), hooks.token_of(OTHER_USER));
    let key = hooks.key(ApiKeyGrant::new("billing").key_id(7001).owner_user_id(USER));
    for credential in [&token, &other, &key] {
        assert_eq!(hooks.status(credential).await, 200);
    }
    // Wacht deletes the user: its grants and keys are refused there from now on.
    hooks.gateway.revoke(&token);
    hooks.gateway.revoke(&key);
    hooks.gateway.reset_calls();
    assert_eq!(
        hooks
            .deliver(
                "msg_user_deleted",
                "user.deleted",
                json!({"entity_id": USER.to_string(), "entity_type": "user"})
            )
            .await,
        200
    );
    assert_eq!(hooks.status(&token).await, 401);
    assert_eq!(hooks.status(&key).await, 401);
    assert_eq!(hooks.status(&other).await, 200);
    assert_eq!(hooks.gateway.calls(), 2, "another user's token stayed cached");
}

#[tokio::test]
async fn password_and_second_factor_changes_have_the_users_credentials_checked_again() {
    let hooks = hooks().await;
    for (id, event, data) in [
        (
            "msg_password",
            "user.password.updated",
            json!({"entity_id": USER.to_string()}),
        ),
        // The user in `user_id` (the entity is the authenticator, by its name).
        (
            "msg_mfa",
            "user.mfa.disabled",
            json!({"entity_type": "user_authenticator", "id": "77", "user_id": USER.to_string(), "entity_id": USER.to_string()}),
        ),
    ] {
        let token = hooks.token_of(USER);
        assert_eq!(hooks.status(&token).await, 200);
        hooks.gateway.reset_calls();
        assert_eq!(hooks.deliver(id, event, data).await, 200, "{event}");
        assert_eq!(hooks.status(&token).await, 200);
        assert_eq!(hooks.gateway.calls(), 1, "{event}: the token was checked again");
    }
}

#[tokio::test]
async fn session_deleted_and_expired_refuse_the_sessions_jwts() {
    let hooks = hooks().await;
    for (n, event) in ["session.deleted", "session.expired"].into_iter().enumerate() {
        let claims = AccessTokenClaims::new("oc_webhookJwt000000000000000001").subject(USER);
        let jwt = hooks.issuer.mint(&claims);
        let other = hooks
            .issuer
            .mint(&AccessTokenClaims::new("oc_webhookJwt000000000000000001").subject(USER));
        assert_eq!(hooks.status(&jwt).await, 200);
        assert_eq!(hooks.status(&other).await, 200);
        let sid = claims.sid().expect("a session").to_owned();
        let id = format!("msg_session_{n}");
        assert_eq!(
            hooks
                .deliver(&id, event, json!({"entity_id": sid, "entity_type": "session"}))
                .await,
            200
        );
        assert_eq!(hooks.status(&jwt).await, 401, "{event}");
        assert_eq!(hooks.status(&other).await, 200, "{event}: another session");
    }
}

#[tokio::test]
async fn api_key_and_tenant_events_have_what_they_name_checked_again() {
    let hooks = hooks().await;
    let rotated = hooks.key(ApiKeyGrant::new("billing").key_id(7001).owner_user_id(USER));
    let kept = hooks.key(ApiKeyGrant::new("billing").key_id(7002).owner_user_id(USER));
    let member = hooks.key(
        ApiKeyGrant::new("billing")
            .key_id(7003)
            .organization(427001234567890561, 9001),
    );
    let workspace = hooks.key(ApiKeyGrant::new("billing").key_id(7004).workspace(5, 9002));
    let org_token = hooks.token_of(USER);
    for credential in [&rotated, &kept, &member, &workspace, &org_token] {
        assert_eq!(hooks.status(credential).await, 200);
    }
    hooks.gateway.revoke(&rotated);
    assert_eq!(
        hooks
            .deliver("msg_k", "api_key.rotated", json!({"entity_id": "7001"}))
            .await,
        200
    );
    assert_eq!(hooks.status(&rotated).await, 401);
    hooks.gateway.reset_calls();
    assert_eq!(hooks.status(&kept).await, 200);
    assert_eq!(hooks.gateway.calls(), 0, "another key stays cached");

    // A membership ends: the API key of that membership is checked again (OAuth tokens carry
    // no membership id).
    hooks.gateway.revoke(&member);
    assert_eq!(
        hooks
            .deliver("msg_m", "organization.member.removed", json!({"entity_id": "9001"}))
            .await,
        200
    );
    assert_eq!(hooks.status(&member).await, 401);
    // The workspace is deleted: its key; the organization is deleted: its token.
    hooks.gateway.revoke(&workspace);
    hooks.gateway.revoke(&org_token);
    assert_eq!(
        hooks
            .deliver("msg_w", "workspace.deleted", json!({"entity_id": "5"}))
            .await,
        200
    );
    assert_eq!(hooks.status(&workspace).await, 401);
    assert_eq!(
        hooks.status(&org_token).await,
        200,
        "still cached: another tenant's event"
    );
    assert_eq!(
        hooks
            .deliver(
                "msg_o",
                "organization.deleted",
                json!({"entity_id": "427001234567890561"})
            )
            .await,
        200
    );
    assert_eq!(hooks.status(&org_token).await, 401);
}

#[tokio::test]
async fn forged_stale_and_malformed_deliveries_are_refused_and_change_nothing() {
    let hooks = hooks().await;
    let token = hooks.token_of(USER);
    assert_eq!(hooks.status(&token).await, 200);
    hooks.gateway.revoke(&token);
    let body = WebhookSigner::event("user.deleted", json!({"entity_id": USER.to_string()}));
    let signed = |id: &str, at: u64| hooks.signer.sign(id, at, body.as_bytes());
    let now = unix_now();

    // The body changed under a genuine signature.
    let altered = body.replace(&USER.to_string(), &OTHER_USER.to_string());
    assert_eq!(hooks.post(signed("msg_1", now), altered).await, 401);
    // Signed with another secret.
    let stranger = WebhookSigner::generate();
    assert_eq!(
        hooks
            .post(stranger.sign("msg_1", now, body.as_bytes()), body.clone())
            .await,
        401
    );
    // Signed by the right secret, but for another id or timestamp than the headers name.
    let mut moved = signed("msg_1", now);
    moved.insert("webhook-id", "msg_2".parse().unwrap());
    assert_eq!(hooks.post(moved, body.clone()).await, 401);
    // Stale and from the future, genuinely signed for those times (5 minutes either side).
    assert_eq!(hooks.post(signed("msg_1", now - 400), body.clone()).await, 401);
    assert_eq!(hooks.post(signed("msg_1", now + 400), body.clone()).await, 401);
    // Missing, repeated or malformed headers.
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut missing = signed("msg_1", now);
        missing.remove(header);
        assert_eq!(hooks.post(missing, body.clone()).await, 400, "without {header}");
        let mut repeated = signed("msg_1", now);
        let value = repeated[header].clone();
        repeated.append(header, value);
        assert_eq!(hooks.post(repeated, body.clone()).await, 400, "{header} twice");
    }
    // An id with a dot (the signed string is `{id}.{timestamp}.{body}`), genuinely signed.
    assert_eq!(hooks.post(signed("msg.1", now), body.clone()).await, 400);
    let mut no_v1 = signed("msg_1", now);
    no_v1.insert("webhook-signature", "v2,abc".parse().unwrap());
    assert_eq!(hooks.post(no_v1, body.clone()).await, 401);
    let mut not_a_number = signed("msg_1", now);
    not_a_number.insert("webhook-timestamp", "soon".parse().unwrap());
    assert_eq!(hooks.post(not_a_number, body.clone()).await, 400);
    // Another method.
    let get = hooks
        .http
        .get(format!("http://{}{PATH}", hooks.receiver))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    // Signed, but not a Wacht event; a known event without its id.
    let junk = b"not json".to_vec();
    assert_eq!(hooks.post(hooks.signer.sign_now("msg_1", &junk), junk).await, 400);
    let without_id = WebhookSigner::event("user.deleted", json!({}));
    assert_eq!(
        hooks
            .post(hooks.signer.sign_now("msg_1", without_id.as_bytes()), without_id)
            .await,
        400
    );

    // None of them acted: the revoked token is still served from the cache.
    hooks.gateway.reset_calls();
    assert_eq!(hooks.status(&token).await, 200);
    assert_eq!(hooks.gateway.calls(), 0);
    // Within the window, the genuine delivery acts.
    assert_eq!(hooks.post(signed("msg_1", now - 250), body.clone()).await, 200);
    assert_eq!(hooks.status(&token).await, 401);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    // The default bound, 1 MiB.
    let app = start(|b| b).await;
    let signer = WebhookSigner::generate();
    let receiver = WachtWebhooks::new(&app.auth, [signer.secret()]).expect("valid");
    let post = http::Method::POST;
    let huge = vec![b' '; 1024 * 1024 + 1];
    let answer = receiver.handle(&post, &signer.sign_now("msg_1", &huge), &huge).await;
    assert_eq!(answer.status(), 413);
    let bound = &huge[..1024 * 1024];
    let answer = receiver.handle(&post, &signer.sign_now("msg_1", bound), bound).await;
    assert_eq!(answer.status(), 400, "at the bound: read (and not an event)");
    // Over HTTP, declared or streamed, with a bound of 4 KiB.
    let hooks = hooks_with(
        |auth| {
            WachtWebhooks::new(auth, [signer.secret()])
                .expect("valid")
                .max_body_bytes(4096)
        },
        signer.clone(),
    )
    .await;
    let big = vec![b' '; 8192];
    assert_eq!(hooks.post(signer.sign_now("msg_1", &big), big.clone()).await, 413);
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])),
    ));
    assert_eq!(hooks.post(signer.sign_now("msg_1", &big), chunked).await, 413);
}

#[tokio::test]
async fn a_replayed_delivery_is_acknowledged_and_acted_on_once() {
    let hooks = hooks().await;
    let token = hooks.token_of(USER);
    assert_eq!(hooks.status(&token).await, 200);
    let body = WebhookSigner::event("user.deleted", json!({"entity_id": USER.to_string()}));
    let headers = hooks.signer.sign_now("msg_replayed", body.as_bytes());
    assert_eq!(hooks.post(headers.clone(), body.clone()).await, 200);
    hooks.gateway.reset_calls();
    assert_eq!(hooks.status(&token).await, 200, "checked again (not revoked)");
    assert_eq!(hooks.gateway.calls(), 1);
    // The same delivery again (a replay, or Wacht retrying it): acknowledged, not acted on.
    assert_eq!(hooks.post(headers, body.clone()).await, 200);
    // Wacht's own retry of that event: a new timestamp and signature, the same id.
    assert_eq!(
        hooks
            .post(hooks.signer.sign_now("msg_replayed", body.as_bytes()), body)
            .await,
        200
    );
    assert_eq!(hooks.status(&token).await, 200);
    assert_eq!(hooks.gateway.calls(), 1, "the replays did not invalidate again");
}

#[tokio::test]
async fn while_a_secret_is_rotated_both_secrets_are_accepted() {
    let (old, new) = (WebhookSigner::generate(), WebhookSigner::generate());
    let secrets = [old.secret().to_owned(), new.secret().to_owned()];
    let hooks = hooks_with(
        |auth| WachtWebhooks::new(auth, &secrets).expect("valid secrets"),
        new.clone(),
    )
    .await;
    let now = unix_now();
    for (n, signer) in [&old, &new].into_iter().enumerate() {
        let token = hooks.token_of(USER);
        assert_eq!(hooks.status(&token).await, 200);
        hooks.gateway.revoke(&token);
        let body = WebhookSigner::event("user.deleted", json!({"entity_id": USER.to_string()}));
        let id = format!("msg_rotation_{n}");
        assert_eq!(hooks.post(signer.sign(&id, now, body.as_bytes()), body).await, 200);
        assert_eq!(hooks.status(&token).await, 401, "signed by secret {n}");
    }
    // Wacht signing with both at once (one header, two entries), one of them unknown here.
    let token = hooks.token_of(USER);
    assert_eq!(hooks.status(&token).await, 200);
    hooks.gateway.revoke(&token);
    let body = WebhookSigner::event("user.deleted", json!({"entity_id": USER.to_string()}));
    let mut headers = new.sign("msg_both", now, body.as_bytes());
    let both = format!(
        "{} {}",
        WebhookSigner::generate().signature("msg_both", now, body.as_bytes()),
        new.signature("msg_both", now, body.as_bytes())
    );
    headers.insert("webhook-signature", both.parse().unwrap());
    assert_eq!(hooks.post(headers, body).await, 200);
    assert_eq!(hooks.status(&token).await, 401);

    // Once the old secret is removed, its signatures are refused.
    let after = hooks_with(
        |auth| WachtWebhooks::new(auth, [new.secret()]).expect("valid"),
        new.clone(),
    )
    .await;
    let body = WebhookSigner::event("user.deleted", json!({"entity_id": USER.to_string()}));
    assert_eq!(after.post(old.sign_now("msg_old", body.as_bytes()), body).await, 401);
}

#[tokio::test]
async fn unknown_and_unmappable_events_are_acknowledged_and_change_nothing() {
    let hooks = hooks().await;
    let token = hooks.token_of(USER);
    assert_eq!(hooks.status(&token).await, 200);
    hooks.gateway.reset_calls();
    assert_eq!(
        hooks
            .deliver("msg_u", "invitation.created", json!({"entity_id": "1"}))
            .await,
        200
    );
    assert_eq!(
        hooks
            .deliver("msg_u2", "user.created", json!({"entity_id": USER.to_string()}))
            .await,
        200
    );
    assert_eq!(hooks.status(&token).await, 200);
    assert_eq!(hooks.gateway.calls(), 0);
}

#[tokio::test]
async fn a_receiver_needs_a_signing_secret_and_never_repeats_one() {
    let app = start(|b| b).await;
    let none: [&str; 0] = [];
    assert!(WachtWebhooks::new(&app.auth, none).is_err());
    for bad in ["whsec_c2hvcnQ=", "whsec_not-base64!"] {
        let error = WachtWebhooks::new(&app.auth, [bad]).expect_err(bad).to_string();
        assert!(!error.contains(bad.trim_start_matches("whsec_")), "{error}");
    }
    let signer = WebhookSigner::generate();
    let receiver = WachtWebhooks::new(&app.auth, [signer.secret()]).expect("valid");
    let shown = format!("{receiver:?} {signer:?}");
    assert!(!shown.contains(signer.secret().trim_start_matches("whsec_")), "{shown}");
}
