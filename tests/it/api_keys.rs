//! Wacht API keys through the layer, over real HTTP against the `FakeGateway`: classified by
//! the configured prefixes only, checked by the gateway as `api_key`, cached like tokens, from
//! `Authorization: Bearer` and the opt-in key header, and kept off routes that take OAuth
//! tokens only.

use std::time::{Duration, SystemTime};

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_wacht::testing::{ApiKeyGrant, Fault, generate_api_key};
use tower_wacht::{CredentialKind, Principal, RequirePermissionsLayer};

use crate::common::{API_KEY, RESOURCE, TestApp, assert_problem, challenge, serve, start};

const APP: &str = "billing-service";

/// An app taking `sk_live` / `sk_test` keys, also from `x-api-key`.
async fn keys_app() -> TestApp {
    start(|b| {
        b.api_key_prefixes(["sk_live", "sk_test"])
            .api_key_header(http::HeaderName::from_static("x-api-key"))
    })
    .await
}

fn register(app: &TestApp, grant: ApiKeyGrant) -> String {
    let key = generate_api_key("sk_live");
    app.gateway.register_api_key(&key, grant);
    key
}

fn billing() -> ApiKeyGrant {
    ApiKeyGrant::new(APP)
        .key_id(7001)
        .key_name("nightly export")
        .owner_user_id(42)
        .organization(427001234567890561, 9001)
        .permissions(["reports:read"])
        .org_role_permissions(["org:projects:read"])
        .metadata("team", json!("finance"))
}

async fn whoami(app: &TestApp, header: (&str, String)) -> reqwest::Response {
    app.http
        .get(app.url("/whoami"))
        .header(header.0, header.1)
        .send()
        .await
        .expect("request completes")
}

#[tokio::test]
async fn a_key_is_checked_as_an_api_key_and_its_principal_says_so() {
    let app = keys_app().await;
    let key = register(&app, billing());
    for header in [("authorization", format!("Bearer {key}")), ("x-api-key", key.clone())] {
        let resp = whoami(&app, header).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["credential_kind"], "api_key");
        assert_eq!(body["client_id"], APP, "an API key's client is its app");
        assert_eq!(body["granted_resource"], "urn:wacht:organization:427001234567890561");
        assert_eq!(body["owner_user_id"], "42");
        assert_eq!(body["api_key"]["key_id"], "7001");
        assert_eq!(body["api_key"]["key_name"], "nightly export");
        assert_eq!(body["api_key"]["organization_membership_id"], "9001");
        assert_eq!(body["api_key"]["metadata"]["team"], "finance");
        assert_eq!(body["permissions"], json!(["org:projects:read", "reports:read"]));
        assert!(!body.to_string().contains(&key), "the key is never in a principal");
    }
    // One gateway call, sent as an API key; the second request (other header) was a hit.
    let calls = app.gateway.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].principal_type, "api_key");
    // The route guard judges a key's permissions like a token's.
    assert_eq!(
        app.get("/reports", Some(&key)).await.status(),
        200,
        "any of reports:read, org:projects:read"
    );
    let resp = app
        .http
        .post(app.url("/tools/invoke"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request completes");
    assert_eq!(resp.status(), 403, "the key lacks mcp:invoke");
}

#[tokio::test]
async fn unknown_expired_revoked_and_malformed_keys_are_refused() {
    let app = keys_app().await;
    // Unknown: the gateway's plain-text `401 Invalid API key` is an invalid credential (not
    // an outage), remembered like a token's 401.
    let unknown = generate_api_key("sk_test");
    for _ in 0..2 {
        let resp = app.get("/whoami", Some(&unknown)).await;
        assert!(
            challenge(&resp).contains("error=\"invalid_token\""),
            "{}",
            challenge(&resp)
        );
        assert_problem(resp, 401, Some(&unknown)).await;
    }
    assert_eq!(
        app.gateway.calls(),
        1,
        "the second refusal came from the negative cache"
    );
    // Expired: the JSON envelope.
    let expired = register(&app, billing().expires_at(SystemTime::now() - Duration::from_secs(1)));
    assert_eq!(app.get("/whoami", Some(&expired)).await.status(), 401);
    // Revoked at the gateway: refused once the cached decision is dropped.
    let key = register(&app, billing());
    assert_eq!(app.get("/whoami", Some(&key)).await.status(), 200);
    app.gateway.revoke(&key);
    app.auth.invalidate(&key).await;
    assert_eq!(app.get("/whoami", Some(&key)).await.status(), 401);
    // A key with a configured prefix but not the gateway's form: no gateway call at all.
    app.gateway.reset_calls();
    let resp = app.get("/whoami", Some("sk_live_short")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn a_rate_limited_key_gets_429_and_a_denied_app_401() {
    let app = keys_app().await;
    let key = register(&app, billing());
    app.gateway.set_fault(Some(Fault::RateLimited { retry_after_ms: 1500 }));
    let resp = app.get("/whoami", Some(&key)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2", "milliseconds rounded up to seconds");
    app.gateway.set_fault(None);
    assert_eq!(app.get("/whoami", Some(&key)).await.status(), 200);
    // deny_client names a key's app: its keys are refused at once, cached or not.
    app.auth.deny_client(APP).await;
    let resp = app.get("/whoami", Some(&key)).await;
    assert_eq!(resp.status(), 401);
    assert!(challenge(&resp).contains("invalid_token"));
    app.auth.allow_client(APP).await;
    let other = register(&app, billing().key_id(7002));
    assert_eq!(app.get("/whoami", Some(&other)).await.status(), 200, "allowed again");
}

#[tokio::test]
async fn without_prefixes_a_key_shaped_credential_is_an_access_token() {
    // The same bytes, no prefixes configured: never taken for a key by its shape.
    let app = start(|b| b).await;
    let key = generate_api_key("sk_live");
    app.gateway.register_api_key(&key, billing());
    assert_eq!(app.get("/whoami", Some(&key)).await.status(), 401);
    assert_eq!(app.gateway.requests()[0].principal_type, "oauth_access_token");
}

#[tokio::test]
async fn the_key_header_takes_keys_only_and_never_two_credentials() {
    let app = keys_app().await;
    let key = register(&app, billing());
    let token = app.token(&["projects:read"]);
    // An access token in the key header: refused without a gateway call.
    let resp = whoami(&app, ("x-api-key", token.clone())).await;
    assert_eq!(resp.status(), 401);
    assert!(challenge(&resp).contains("invalid_token"));
    assert_eq!(app.gateway.calls(), 0);
    // Both headers: 400 invalid_request, whatever each holds.
    let resp = app
        .http
        .get(app.url("/whoami"))
        .bearer_auth(&token)
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request completes");
    assert_eq!(resp.status(), 400);
    assert!(challenge(&resp).contains("invalid_request"));
    // The key header never reaches the handler.
    let seen = Router::new()
        .route(
            "/headers",
            get(|headers: http::HeaderMap| async move { format!("{}", headers.contains_key("x-api-key")) }),
        )
        .layer(app.auth.clone());
    let addr = serve(seen).await;
    let resp = app
        .http
        .get(format!("http://{addr}/headers"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request completes");
    assert_eq!(resp.text().await.expect("body"), "false");
}

#[tokio::test]
async fn routes_say_which_credentials_they_take() {
    let app = keys_app().await;
    let key = register(&app, billing());
    let token = app.token(&["projects:read"]);
    let principal = |p: Principal| async move { Json(json!({"kind": p.credential_kind() == CredentialKind::ApiKey})) };
    let router = Router::new()
        .route("/mcp", get(principal).layer(app.auth.oauth_only()))
        .route("/v1/export", get(principal).layer(app.auth.api_keys_only()))
        .route(
            "/v1/any",
            get(principal)
                .route_layer(RequirePermissionsLayer::all(["reports:read"]))
                .layer(app.auth.clone()),
        );
    let addr = serve(router).await;
    let call = |path: &'static str, credential: Option<String>| {
        let http = app.http.clone();
        async move {
            let mut req = http.get(format!("http://{addr}{path}"));
            if let Some(c) = credential {
                req = req.bearer_auth(c);
            }
            req.send().await.expect("request completes")
        }
    };
    app.gateway.reset_calls();
    // An OAuth-only route refuses a valid key before asking anyone, with its OAuth challenge.
    let resp = call("/mcp", Some(key.clone())).await;
    assert_eq!(resp.status(), 401);
    let c = challenge(&resp);
    assert!(c.contains("error=\"invalid_token\""), "{c}");
    assert!(c.contains("API keys are not accepted"), "{c}");
    assert_eq!(app.gateway.calls(), 0);
    assert_eq!(call("/mcp", Some(token.clone())).await.status(), 200);
    // A keys-only route refuses a token, and its 401s name no OAuth metadata or scope: an
    // OAuth client is not sent to get a token this route does not take.
    for credential in [Some(token.clone()), None] {
        let resp = call("/v1/export", credential).await;
        assert_eq!(resp.status(), 401);
        let c = challenge(&resp);
        assert!(!c.contains("resource_metadata"), "{c}");
        assert!(!c.contains("scope="), "{c}");
    }
    assert_eq!(call("/v1/export", Some(key.clone())).await.status(), 200);
    // A route of the plain layer takes both.
    assert_eq!(call("/v1/any", Some(key)).await.status(), 200);
}

#[tokio::test]
async fn keys_need_a_pinned_deployment_and_sane_prefixes() {
    use tower_wacht::WachtAuthConfig;
    let base = || {
        WachtAuthConfig::builder()
            .gateway_url("http://127.0.0.1:1")
            .api_key(API_KEY)
    };
    // Pinned by issuer only: a key carries no issuer, so nothing would pin it.
    assert!(
        base()
            .expected_issuer("https://auth.example.com")
            .api_key_prefixes(["sk_live"])
            .build()
            .is_err()
    );
    for bad in ["oat", "sk live", ""] {
        assert!(
            base()
                .expected_deployment_id(1)
                .api_key_prefixes([bad])
                .build()
                .is_err(),
            "{bad:?}"
        );
    }
    // A key header without prefixes would take anything for a key.
    assert!(
        base()
            .expected_deployment_id(1)
            .api_key_header(http::HeaderName::from_static("x-api-key"))
            .build()
            .is_err()
    );
    let _ = RESOURCE;
}

/// The allow lists bind keys like tokens: a key's client is its app, its tenant its
/// organization / workspace.
#[tokio::test]
async fn the_allow_lists_bind_api_keys_too() {
    let app = start(|b| {
        b.api_key_prefixes(["sk_live"])
            .allowed_clients([APP])
            .accepted_tenants(["urn:wacht:organization:427001234567890561"])
    })
    .await;
    let ours = register(&app, billing());
    let other_tenant = register(&app, billing().organization(999, 1));
    let other_app = register(&app, ApiKeyGrant::new("stranger").organization(427001234567890561, 1));
    let no_tenant = register(&app, ApiKeyGrant::new(APP));
    assert_eq!(app.get("/whoami", Some(&ours)).await.status(), 200);
    for (what, key) in [
        ("another tenant", other_tenant),
        ("another app", other_app),
        ("no tenant", no_tenant),
    ] {
        let resp = app.get("/whoami", Some(&key)).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert!(challenge(&resp).contains("invalid_token"), "{what}");
    }
}

/// One gRPC method (or route, or MCP tool) of a layer that takes both can say which
/// credential holds its permissions: `Permissions::oauth_only()` / `api_keys_only()`.
#[tokio::test]
async fn a_method_rule_can_admit_one_credential_kind() {
    use tower_wacht::{Permissions, RequireMethodPermissionsLayer};
    let app = keys_app().await;
    let key = register(&app, billing());
    let token = app.token(&["projects:read"]);
    let guard = RequireMethodPermissionsLayer::new()
        .route(
            "/billing.v1.Billing/Approve",
            Permissions::all(["org:projects:read"]).oauth_only(),
        )
        .route(
            "/billing.v1.Billing/Export",
            Permissions::all(["org:projects:read"]).api_keys_only(),
        );
    let router = Router::new()
        .route(
            "/billing.v1.Billing/Approve",
            axum::routing::post(|| async { "approved" }),
        )
        .route(
            "/billing.v1.Billing/Export",
            axum::routing::post(|| async { "exported" }),
        )
        .layer(guard)
        .layer(app.auth.clone());
    let addr = serve(router).await;
    let call = |path: &str, credential: &str| {
        app.http
            .post(format!("http://{addr}{path}"))
            .bearer_auth(credential)
            .send()
    };
    let approve = "/billing.v1.Billing/Approve";
    let export = "/billing.v1.Billing/Export";
    assert_eq!(call(approve, &token).await.unwrap().status(), 200);
    let resp = call(approve, &key).await.unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a key holds the permission, but not for this method"
    );
    assert!(challenge(&resp).contains("API keys are not accepted"));
    assert_eq!(call(export, &key).await.unwrap().status(), 200);
    assert_eq!(call(export, &token).await.unwrap().status(), 401);
}
