//! JWT access tokens over loopback HTTP: an Axum app behind `WachtAuthLayer` with local JWT
//! verification, a `JwksIssuer` serving the keys, and a `FakeGateway` that must never see a
//! JWT. Every refusal the JWT verifier owes is sent as an attack: a real request whose token
//! was crafted the way an attacker would.

use crate::common;

use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};
use tower_wacht::jwt::{JwtConfig, ScopeDefinition};
use tower_wacht::testing::{AccessTokenClaims, EXAMPLE_OWNER_USER_ID, JwksIssuer, TokenGrant};
use tower_wacht::{WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer};

const CLIENT: &str = "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl";

struct JwtApp {
    app: TestApp,
    issuer: JwksIssuer,
}

impl std::ops::Deref for JwtApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

fn definitions() -> Vec<ScopeDefinition> {
    vec![
        ScopeDefinition::organization("projects:read", "org:projects:read"),
        ScopeDefinition::organization("projects:write", "org:projects:write"),
    ]
}

/// An app verifying JWTs of a fresh issuer double, with `jwt` and `builder` adjusted.
async fn start_jwt(
    jwt: impl FnOnce(JwtConfig) -> JwtConfig,
    builder: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder,
) -> JwtApp {
    let issuer = JwksIssuer::start().await.expect("issuer starts");
    let gateway = start_gateway().await;
    let config = jwt(JwtConfig::new().scope_definitions(definitions()));
    let url = issuer.url();
    let app = start_with_gateway(gateway, move |b| builder(b.expected_issuer(url).jwt(config))).await;
    JwtApp { app, issuer }
}

async fn start_default() -> JwtApp {
    start_jwt(|j| j, |b| b).await
}

fn claims() -> AccessTokenClaims {
    AccessTokenClaims::new(CLIENT).scopes(["projects:read", "mcp:invoke"])
}

/// Asserts a 401 `invalid_token` challenge, and that the gateway never saw the token.
async fn assert_refused(app: &JwtApp, token: &str, what: &str) {
    let resp = app.get("/whoami", Some(token)).await;
    assert_eq!(resp.status(), 401, "{what}");
    let challenge = challenge(&resp);
    assert!(challenge.contains(r#"error="invalid_token""#), "{what}: {challenge}");
    assert_eq!(app.gateway.calls(), 0, "{what}: a JWT went to the gateway");
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn a_valid_jwt_gives_the_principal_the_gateway_gives_for_the_same_grant() {
    let app = start_default().await;
    // The same grant as an opaque token, answered by the gateway for the same issuer.
    let opaque = app.token_with(|mut g: TokenGrant| {
        g.oauth_resource = None;
        g.issuer(app.issuer.url()).scopes(["projects:read", "mcp:invoke"])
    });
    let by_gateway: Value = app.get("/whoami", Some(&opaque)).await.json().await.unwrap();
    app.gateway.reset_calls();

    let claims = claims();
    let jwt = app.issuer.mint(&claims);
    let resp = app.get("/whoami", Some(&jwt)).await;
    assert_eq!(resp.status(), 200);
    let by_jwt: Value = resp.json().await.unwrap();
    assert_eq!(app.gateway.calls(), 0, "a JWT never goes to the gateway");

    for field in [
        "client_id",
        "granted_resource",
        "scopes",
        "permissions",
        "issuer",
        "owner_user_id",
    ] {
        assert_eq!(by_jwt[field], by_gateway[field], "{field}");
    }
    assert_eq!(
        by_jwt["permissions"],
        json!(["mcp:invoke", "org:projects:read", "projects:read"]),
        "scopes plus the app's mapping, as the gateway computes them"
    );
    let expiry = |v: &Value| {
        time::OffsetDateTime::parse(
            v["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp()
    };
    assert!((expiry(&by_jwt) - expiry(&by_gateway)).abs() <= 2);
    // What a JWT cannot carry is absent, not invented; what only a JWT carries is there.
    assert_eq!(by_jwt["deployment_id"], Value::Null);
    assert_eq!(by_jwt["request_id"], Value::Null);
    assert_eq!(by_jwt["oauth_resource"], Value::Null);
    assert_eq!(by_jwt["session_id"], json!(claims.sid().unwrap()));
    assert_eq!(by_jwt["token_id"], json!(claims.jti()));
    assert_eq!(by_jwt["verified_by"], "jwt_signature");
    assert_eq!(by_gateway["verified_by"], "gateway");

    // Permission guards read the same permissions.
    let resp = app
        .http
        .post(app.url("/tools/invoke"))
        .header("authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.get("/reports", Some(&jwt)).await.status(),
        200,
        "org:projects:read mapped from projects:read"
    );
    let reader = app.issuer.mint(&AccessTokenClaims::new(CLIENT).scopes(["other"]));
    let resp = app
        .http
        .post(app.url("/tools/invoke"))
        .header("authorization", format!("Bearer {reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn a_verified_jwt_is_cached_like_an_opaque_token() {
    let app = start_default().await;
    let jwt = app.issuer.mint(&claims());
    for _ in 0..20 {
        assert_eq!(app.get("/whoami", Some(&jwt)).await.status(), 200);
    }
    assert_eq!(app.issuer.fetches(), 1, "the JWKS is fetched once");
    app.auth.verifier().run_pending_tasks().await;
    assert_eq!(app.auth.verifier().cached_count(), 1);
    assert_eq!(app.gateway.calls(), 0);
    // An opaque token still goes to the gateway.
    let opaque = app.token_with(|g| g.issuer(app.issuer.url()));
    assert_eq!(app.get("/whoami", Some(&opaque)).await.status(), 200);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn forged_algorithms_and_headers_are_refused() {
    let app = start_default().await;
    let kid = app.issuer.active_kid();
    let payload = claims().to_json(&app.issuer.url());
    // Warm the key set so every refusal below is about the token, not the JWKS.
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );

    // alg none, unsigned.
    let none = format!(
        "{}.{}.",
        b64(&json!({"typ":"JWT","alg":"none","kid":kid})),
        b64(&payload)
    );
    assert_refused(&app, &none, "alg none").await;

    // HS256 with the public key as the HMAC secret (the official SDK's hole): every form of
    // the public key an attacker can read from the JWKS.
    let jwks: Value = reqwest::get(app.issuer.jwks_url()).await.unwrap().json().await.unwrap();
    let jwk = jwks["keys"][0].clone();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    for secret in [
        jwk.to_string().into_bytes(),
        n,
        jwks.to_string().into_bytes(),
        Vec::new(),
    ] {
        let input = format!(
            "{}.{}",
            b64(&json!({"typ":"JWT","alg":"HS256","kid":kid})),
            b64(&payload)
        );
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), input.as_bytes());
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_refused(&app, &forged, "HS256 with public key bytes").await;
    }

    // Validly signed by the issuer's own key, but with headers a verifier must not honour.
    for (name, header) in [
        (
            "crit",
            json!({"typ":"JWT","alg":"RS256","kid":kid,"crit":["exp"],"exp":1}),
        ),
        (
            "jku",
            json!({"typ":"JWT","alg":"RS256","kid":kid,"jku":"https://evil.example.com/jwks.json"}),
        ),
        ("jwk", json!({"typ":"JWT","alg":"RS256","kid":kid,"jwk":jwk})),
        (
            "x5u",
            json!({"typ":"JWT","alg":"RS256","kid":kid,"x5u":"https://evil.example.com/cert"}),
        ),
        ("no kid", json!({"typ":"JWT","alg":"RS256"})),
        ("PS256", json!({"typ":"JWT","alg":"PS256","kid":kid})),
        ("ES256", json!({"typ":"JWT","alg":"ES256","kid":kid})),
    ] {
        let token = app.issuer.sign_with_key(&kid, &header, &payload).unwrap();
        assert_refused(&app, &token, name).await;
    }
}

#[tokio::test]
async fn tokens_signed_by_other_keys_are_refused() {
    let app = start_default().await;
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );

    // Signed by a key this issuer never published, claiming to be from it.
    let stranger = JwksIssuer::start().await.unwrap();
    let forged = stranger.mint(&claims().claim("iss", json!(app.issuer.url())));
    assert_refused(&app, &forged, "unknown key").await;
    // The same, naming the issuer's real kid.
    let header = json!({"typ":"JWT","alg":"RS256","kid":app.issuer.active_kid()});
    let payload = claims().to_json(&app.issuer.url());
    let borrowed_kid = stranger
        .sign_with_key(&stranger.active_kid(), &header, &payload)
        .unwrap();
    assert_refused(&app, &borrowed_kid, "another key under the issuer's kid").await;

    // kid swap: both keys published, signed by one, naming the other.
    let old = app.issuer.active_kid();
    let new = app.issuer.rotate().unwrap();
    let payload = claims().to_json(&app.issuer.url());
    let swapped = app
        .issuer
        .sign_with_key(&new, &json!({"typ":"JWT","alg":"RS256","kid":old}), &payload)
        .unwrap();
    assert_refused(&app, &swapped, "kid swap").await;

    // A signature that verifies, over a payload changed afterwards (by a key of the set this
    // server holds: the new key's tokens wait for a fetch, the unknown-kid budget is spent).
    let genuine = app.issuer.mint_with_key(&old, &claims()).unwrap();
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let elevated = b64(&claims().scopes(["admin"]).to_json(&app.issuer.url()));
    parts[1] = &elevated;
    assert_refused(&app, &parts.join("."), "payload swapped under a valid signature").await;
}

#[tokio::test]
async fn claims_outside_the_rules_are_refused() {
    let app = start_default().await;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    for (what, token) in [
        (
            "expired",
            app.issuer.mint(&claims().issued_at(now - 2 * hour).ttl(hour)),
        ),
        (
            "iat in the future",
            app.issuer.mint(&claims().issued_at(now + Duration::from_secs(600))),
        ),
        (
            "wrong iss",
            app.issuer
                .mint(&claims().claim("iss", json!("https://evil.example.com"))),
        ),
        (
            "iss with a trailing slash",
            app.issuer
                .mint(&claims().claim("iss", json!(format!("{}/", app.issuer.url())))),
        ),
        ("id_token", app.issuer.mint_id_token(CLIENT)),
        (
            "token_use id_token",
            app.issuer.mint(&claims().claim("token_use", json!("id_token"))),
        ),
        ("no exp", app.issuer.mint(&claims().without("exp"))),
        ("audience is a client id", app.issuer.mint(&claims().audience(CLIENT))),
        (
            "user audience of another user",
            app.issuer.mint(&claims().audience("urn:wacht:user:7")),
        ),
        (
            "lifetime over 24 hours",
            app.issuer.mint(&claims().ttl(Duration::from_secs(48 * 3600))),
        ),
        (
            "oversized",
            app.issuer.mint(&claims().claim("pad", json!("x".repeat(5000)))),
        ),
    ] {
        assert_refused(&app, &token, what).await;
    }
    let expired = app
        .get(
            "/whoami",
            Some(&app.issuer.mint(&claims().issued_at(now - 2 * hour).ttl(hour))),
        )
        .await;
    assert!(
        challenge(&expired).contains("expired"),
        "an honest client learns to refresh"
    );
    // Within the leeway, and a user URN of the token's own user, pass.
    let fine = app
        .issuer
        .mint(&claims().issued_at(now - hour).ttl(hour - Duration::from_secs(5)));
    assert_eq!(app.get("/whoami", Some(&fine)).await.status(), 200);
    let own = app
        .issuer
        .mint(&claims().audience(format!("urn:wacht:user:{EXAMPLE_OWNER_USER_ID}")));
    assert_eq!(app.get("/whoami", Some(&own)).await.status(), 200);
}

/// RS256 by a 1024-bit key (aws-lc-rs refuses to sign with one; the arithmetic is done here).
fn sign_with_weak_key(header: &Value, payload: &Value) -> String {
    use num_bigint::BigUint;
    const N: &str = "b1794129043b70c2476b350adcdb0c19f6ee3ad5ac64efdcdb003d4160b54607b675d0233a636a8d2ac37844cbfc4de0b2607a1f70ebe3fe3f5a1b903171a4cb12fb72a4cb79e6d6afab2bbeddf02c123c22ae61814ad659619a16f55a279c98a4703821cc568956de5ef32e59ae1a33dfd5747f362659c70355ab63b5ddc2a7";
    const D: &str = "3dad5e2fdb00ad57576ab2ac6bc4d497d171499128b08b8bbdb07f9950faaeb3cf7d72304c0270ed4e87502cd8977e993064c70c563a24aa1f6a395a0b54eb67f3a86602286471358c0bf761402fc3f7c55c0d2b0eda7c5157760394a297bd25097c52fa8f917a97b9d62af435b2e391c10fecb9a76f6db20762174b007a92c1";
    let n = BigUint::parse_bytes(N.as_bytes(), 16).unwrap();
    let d = BigUint::parse_bytes(D.as_bytes(), 16).unwrap();
    let input = format!("{}.{}", b64(header), b64(payload));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.as_bytes());
    // EMSA-PKCS1-v1_5 (RFC 8017 §9.2) with SHA-256's DigestInfo prefix.
    let prefix = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ];
    let mut em = vec![0x00, 0x01];
    em.resize(128 - prefix.len() - 32 - 1, 0xff);
    em.push(0x00);
    em.extend_from_slice(&prefix);
    em.extend_from_slice(digest.as_ref());
    let signature = BigUint::from_bytes_be(&em).modpow(&d, &n).to_bytes_be();
    let mut padded = vec![0; 128 - signature.len()];
    padded.extend_from_slice(&signature);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(padded))
}

#[tokio::test]
async fn a_1024_bit_key_in_the_jwks_verifies_nothing() {
    let app = start_default().await;
    let n = URL_SAFE_NO_PAD.encode(
        num_bigint::BigUint::parse_bytes(b"b1794129043b70c2476b350adcdb0c19f6ee3ad5ac64efdcdb003d4160b54607b675d0233a636a8d2ac37844cbfc4de0b2607a1f70ebe3fe3f5a1b903171a4cb12fb72a4cb79e6d6afab2bbeddf02c123c22ae61814ad659619a16f55a279c98a4703821cc568956de5ef32e59ae1a33dfd5747f362659c70355ab63b5ddc2a7", 16)
            .unwrap()
            .to_bytes_be(),
    );
    app.issuer
        .publish_jwk(json!({"kty":"RSA","use":"sig","alg":"RS256","kid":"weak-1024","n":n,"e":"AQAB"}));
    let token = sign_with_weak_key(
        &json!({"typ":"JWT","alg":"RS256","kid":"weak-1024"}),
        &claims().to_json(&app.issuer.url()),
    );
    assert_refused(&app, &token, "signed by a 1024-bit key the JWKS publishes").await;
    assert!(app.issuer.fetches() >= 1, "the JWKS was read, and the weak key skipped");
    // The issuer's real keys still work.
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refresh() {
    let app = start_default().await;
    let before = app.issuer.mint(&claims());
    assert_eq!(app.get("/whoami", Some(&before)).await.status(), 200);
    assert_eq!(app.issuer.fetches(), 1);
    app.issuer.rotate().unwrap();
    let after = app.issuer.mint(&claims());
    assert_eq!(
        app.get("/whoami", Some(&after)).await.status(),
        200,
        "new kid, fetched at once"
    );
    assert_eq!(app.issuer.fetches(), 2, "one refresh");
    // The retired key stays published: its tokens keep working.
    let retired = app.issuer.published_kids()[1].clone();
    let old_key_token = app.issuer.mint_with_key(&retired, &claims()).unwrap();
    assert_eq!(app.get("/whoami", Some(&old_key_token)).await.status(), 200);
    assert_eq!(app.issuer.fetches(), 2);
}

#[tokio::test]
async fn a_compromised_key_stops_verifying_within_the_refresh_interval() {
    let app = start_jwt(
        |j| j.jwks_refresh(Duration::from_secs(1)),
        |b| b.ttl(Duration::from_secs(300)),
    )
    .await;
    let kid = app.issuer.active_kid();
    let token = app.issuer.mint(&claims());
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    app.issuer.compromise(&kid);
    let compromised_at = Instant::now();
    // The cached decision too: the timer's refresh withdraws the key and drops the cache.
    let deadline = compromised_at + Duration::from_secs(10);
    loop {
        let status = app.get("/whoami", Some(&token)).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "still served 10 s after the compromise (refresh every 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = app.issuer.mint_with_key(&kid, &claims()).unwrap();
    assert_refused(&app, &fresh, "new token by the compromised key").await;
    // The replacement key works.
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );
}

#[tokio::test]
async fn an_unreachable_jwks_keeps_the_cached_keys() {
    let app = start_jwt(|j| j.jwks_refresh(Duration::from_millis(200)), |b| b).await;
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );
    app.issuer.set_available(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Past the refresh interval, with the JWKS down: new tokens by the known key verify.
    for _ in 0..3 {
        assert_eq!(
            app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
            200
        );
    }
}

/// An issuer that hangs (its JWKS never answers) while the key set is past its refresh
/// interval: new tokens by a known key are verified from the cached set at once, not queued
/// behind the refresh that waits on the issuer (here up to the 60 s request timeout).
#[tokio::test]
async fn a_hanging_jwks_holds_up_no_verification_by_a_known_key() {
    let app = start_jwt(
        |j| j.jwks_refresh(Duration::from_millis(200)),
        |b| b.request_timeout(Duration::from_secs(60)),
    )
    .await;
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );
    app.issuer.set_hanging(true);
    let fetches = app.issuer.fetches();
    // The timer's refresh, or a request's, is now waiting on the issuer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.issuer.fetches() == fetches {
        assert!(Instant::now() < deadline, "no refresh was attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let verified = tokio::time::timeout(
            Duration::from_secs(10),
            app.get("/whoami", Some(&app.issuer.mint(&claims()))),
        )
        .await
        .expect("verified from the cached key set while the JWKS hangs");
        assert_eq!(verified.status(), 200);
    }
    app.issuer.set_hanging(false);
}

#[tokio::test]
async fn without_any_key_set_jwts_fail_closed_with_503() {
    let issuer = JwksIssuer::start().await.unwrap();
    issuer.set_available(false);
    let gateway = start_gateway().await;
    let url = issuer.url();
    let app = start_with_gateway(gateway, move |b| b.expected_issuer(url).jwt(JwtConfig::new())).await;
    let token = issuer.mint(&claims());
    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(app.gateway.calls(), 0);
    issuer.set_available(true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.get("/whoami", Some(&token)).await.status(),
        200,
        "recovers once the JWKS answers"
    );
}

/// Made-up kids on tokens issued just now: each is refused (401) once a key set fetched after
/// it was issued lacks its kid, and until then gets 503 with `Retry-After` (its kid might be a
/// key rotated in since the last fetch). Never a principal, and at most one extra fetch.
#[tokio::test]
async fn a_flood_of_unknown_kids_costs_the_issuer_one_fetch() {
    let app = start_default().await;
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );
    let payload = claims().to_json(&app.issuer.url());
    let kid = app.issuer.active_kid();
    let mut requests = Vec::new();
    for i in 0..200 {
        let header = json!({"typ":"JWT","alg":"RS256","kid":format!("made-up-{i}")});
        let token = app.issuer.sign_with_key(&kid, &header, &payload).unwrap();
        let app = &app;
        requests.push(async move {
            let resp = app.get("/whoami", Some(&token)).await;
            (resp.status().as_u16(), resp.headers().contains_key("retry-after"))
        });
    }
    let answers = futures_util::future::join_all(requests).await;
    assert!(
        answers.iter().all(|a| *a == (401, false) || *a == (503, true)),
        "{answers:?}"
    );
    assert!(answers.contains(&(401, false)), "the fetch they caused settles them");
    assert!(
        app.issuer.fetches() <= 2,
        "{} JWKS fetches for 200 made-up kids",
        app.issuer.fetches()
    );
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn jwts_are_refused_locally_unless_enabled() {
    let issuer = JwksIssuer::start().await.unwrap();
    let app = start(|b| b).await;
    let resp = app.get("/whoami", Some(&issuer.mint(&claims()))).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(app.gateway.calls(), 0, "never sent to the gateway");
    assert_eq!(issuer.fetches(), 0);
}

#[tokio::test]
async fn a_resource_pinned_server_refuses_jwts_unless_it_accepts_the_tenant_audience() {
    let pinned = start_jwt(|j| j, |b| b.expected_audience(RESOURCE)).await;
    let token = pinned.issuer.mint(&claims());
    assert_refused(&pinned, &token, "tenant audience on a resource-pinned server").await;
    assert_eq!(pinned.issuer.fetches(), 0);

    let opted_in = start_jwt(|j| j.accept_tenant_audience(), |b| b.expected_audience(RESOURCE)).await;
    let token = opted_in.issuer.mint(&claims());
    assert_eq!(opted_in.get("/whoami", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn allowed_clients_and_accepted_tenants_narrow_who_is_served() {
    let app = start_jwt(
        |j| j,
        |b| {
            b.allowed_clients([CLIENT])
                .accepted_tenants([ORG_URN, "urn:wacht:workspace:9"])
        },
    )
    .await;
    assert_eq!(
        app.get("/whoami", Some(&app.issuer.mint(&claims()))).await.status(),
        200
    );
    let ws = app.issuer.mint(&claims().audience("urn:wacht:workspace:9"));
    assert_eq!(app.get("/whoami", Some(&ws)).await.status(), 200);
    let other_client = app.issuer.mint(&AccessTokenClaims::new("oc_someone_else"));
    assert_refused(&app, &other_client, "client not allowed").await;
    let other_tenant = app.issuer.mint(&claims().audience("urn:wacht:organization:1"));
    assert_refused(&app, &other_tenant, "tenant not accepted").await;
}

#[tokio::test]
async fn a_session_a_token_id_or_a_client_can_be_cut_off_at_once() {
    let app = start_default().await;
    let victim = claims();
    let other = claims();
    let (victim_token, other_token) = (app.issuer.mint(&victim), app.issuer.mint(&other));
    let same_session = app.issuer.mint(&claims().session_id(victim.sid().map(str::to_owned)));
    for t in [&victim_token, &other_token, &same_session] {
        assert_eq!(app.get("/whoami", Some(t)).await.status(), 200);
    }
    assert_eq!(
        app.auth.verifier().deny_session(victim.sid().unwrap()).await,
        tower_wacht::ChangeOutcome::Applied
    );
    assert_refused(&app, &victim_token, "cached token of a denied session").await;
    assert_refused(&app, &same_session, "another token of the denied session").await;
    assert_eq!(app.get("/whoami", Some(&other_token)).await.status(), 200);

    assert_eq!(
        app.auth.verifier().deny_token_id(other.jti()).await,
        tower_wacht::ChangeOutcome::Applied
    );
    assert_refused(&app, &other_token, "denied token id").await;

    let third = app.issuer.mint(&claims());
    assert_eq!(app.get("/whoami", Some(&third)).await.status(), 200);
    assert_eq!(
        app.auth.verifier().deny_client(CLIENT).await,
        tower_wacht::ChangeOutcome::Applied
    );
    assert_refused(&app, &third, "denied client").await;
}

#[tokio::test]
async fn jwt_config_is_validated() {
    let build = |b: WachtAuthConfigBuilder| b.build().map(|_| ()).map_err(|e| e.to_string());
    let err = build(
        WachtAuthConfig::builder()
            .expected_deployment_id(1)
            .jwt(JwtConfig::new()),
    )
    .unwrap_err();
    assert!(err.contains("expected_issuer"), "{err}");
    for (issuer, ok) in [
        ("https://auth.example.com", true),
        ("http://127.0.0.1:9", true),
        ("http://auth.example.com", false),
        // `iss` is compared exactly and Wacht's has no trailing slash: refused at start-up
        // rather than every JWT refused later.
        ("https://auth.example.com/", false),
    ] {
        let result = build(WachtAuthConfig::builder().expected_issuer(issuer).jwt(JwtConfig::new()));
        assert_eq!(result.is_ok(), ok, "{issuer}: {result:?}");
    }
    let err = build(
        WachtAuthConfig::builder()
            .expected_issuer("https://auth.example.com")
            .jwt(JwtConfig::new().leeway(Duration::from_secs(3600))),
    )
    .unwrap_err();
    assert!(err.contains("leeway"), "{err}");
    let err = build(
        WachtAuthConfig::builder()
            .expected_issuer("https://auth.example.com")
            .accepted_tenants(["urn:wacht:team:1"])
            .jwt(JwtConfig::new()),
    )
    .unwrap_err();
    assert!(err.contains("tenant"), "{err}");
    // Through the deprecated alias too.
    #[allow(deprecated)]
    let jwt = JwtConfig::new().accepted_tenants(["urn:wacht:team:1"]);
    let err = build(
        WachtAuthConfig::builder()
            .expected_issuer("https://auth.example.com")
            .jwt(jwt),
    )
    .unwrap_err();
    assert!(err.contains("tenant"), "{err}");
    // The layer builds with a valid one.
    let config = WachtAuthConfig::builder()
        .expected_issuer("https://auth.example.com")
        .jwt(JwtConfig::new())
        .build()
        .unwrap();
    assert!(WachtAuthLayer::new(config).is_ok());
}

#[tokio::test]
async fn the_static_verifier_applies_the_same_rules_without_cache_or_network() {
    let issuer = JwksIssuer::start().await.unwrap();
    let jwks = reqwest::get(issuer.jwks_url()).await.unwrap().bytes().await.unwrap();
    let verifier = tower_wacht::jwt::StaticJwtVerifier::new(issuer.url(), &jwks, &JwtConfig::new()).unwrap();
    let principal = verifier.verify(&issuer.mint(&claims())).unwrap();
    assert_eq!(principal.client_id().as_str(), CLIENT);
    assert!(verifier.verify(&issuer.mint_id_token(CLIENT)).is_err());
    let other = JwksIssuer::start().await.unwrap();
    assert!(
        verifier
            .verify(&other.mint(&claims().claim("iss", json!(issuer.url()))))
            .is_err()
    );
}

mod keysets;
