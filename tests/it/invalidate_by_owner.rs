//! `invalidate_user`, `invalidate_api_key`, `invalidate_organization` and
//! `invalidate_workspace` over real HTTP against the `FakeGateway`: every cached answer they
//! cover is asked again (counted as gateway calls; a JWT, which never reaches the gateway, by
//! the verifier's cache), and nothing else is.

use tower_wacht::jwt::JwtConfig;
use tower_wacht::principal::{ApiKeyId, OrganizationId, UserId, WorkspaceId};
use tower_wacht::testing::{AccessTokenClaims, ApiKeyGrant, JwksIssuer, generate_api_key};
use tower_wacht::{ChangeOutcome, Verifier};

use crate::common::{TestApp, start};

const USER: i64 = 432119876543210241;
const OTHER_USER: i64 = 432119876543210999;
const ORG: i64 = 427001234567890561;
const WORKSPACE: i64 = 427001234567899999;

/// An app taking opaque tokens, `sk_live` API keys and JWTs of `issuer`.
async fn app(issuer: &JwksIssuer) -> TestApp {
    let url = issuer.url();
    start(move |b| {
        b.api_key_prefixes(["sk_live"])
            .expected_issuer(url)
            .jwt(JwtConfig::new())
    })
    .await
}

fn opaque(app: &TestApp, issuer: &JwksIssuer, user: i64) -> String {
    app.token_with(|g| g.owner_user_id(user).issuer(issuer.url()))
}

fn api_key(app: &TestApp, grant: ApiKeyGrant) -> String {
    let key = generate_api_key("sk_live");
    app.gateway.register_api_key(&key, grant);
    key
}

/// Asks for `/whoami` with each credential; every answer must be `status`.
async fn all_answer(app: &TestApp, credentials: &[&String], status: u16) {
    for credential in credentials {
        assert_eq!(app.get("/whoami", Some(credential)).await.status(), status);
    }
}

fn cached(verifier: &Verifier, token: &str) -> bool {
    verifier.cached(&verifier.hash_token(token)).is_some()
}

#[tokio::test]
async fn invalidate_user_rechecks_every_credential_of_that_user_and_no_other() {
    let issuer = JwksIssuer::start().await.expect("issuer starts");
    let app = app(&issuer).await;
    let (first, second) = (opaque(&app, &issuer, USER), opaque(&app, &issuer, USER));
    let key = api_key(&app, ApiKeyGrant::new("billing").key_id(7001).owner_user_id(USER));
    let jwt = issuer.mint(&AccessTokenClaims::new("oc_jwtClient00000000000000000001").subject(USER));
    let other = opaque(&app, &issuer, OTHER_USER);
    let other_key = api_key(&app, ApiKeyGrant::new("billing").key_id(7002).owner_user_id(OTHER_USER));
    let other_jwt = issuer.mint(&AccessTokenClaims::new("oc_jwtClient00000000000000000001").subject(OTHER_USER));
    let everything = [&first, &second, &key, &jwt, &other, &other_key, &other_jwt];
    all_answer(&app, &everything, 200).await;
    assert_eq!(app.gateway.calls(), 5, "one call per opaque credential; JWTs never");
    all_answer(&app, &everything, 200).await;
    assert_eq!(app.gateway.calls(), 5, "all cached");

    assert_eq!(app.auth.invalidate_user(UserId(USER)).await, ChangeOutcome::Applied);
    let verifier = app.auth.verifier();
    assert!(!cached(verifier, &jwt), "the user's JWT (its sub) is verified again");
    assert!(cached(verifier, &other_jwt), "another user's JWT stays");
    app.gateway.reset_calls();
    all_answer(&app, &everything, 200).await;
    assert_eq!(
        app.gateway.calls(),
        3,
        "the user's two tokens and key were asked again; the other user's stayed cached"
    );

    // The use a user depends on: access revoked at Wacht ends here at once.
    app.gateway.revoke(&first);
    app.gateway.revoke(&key);
    all_answer(&app, &[&first, &key], 200).await;
    app.auth.invalidate_user(UserId(USER)).await;
    all_answer(&app, &[&first, &key], 401).await;
    all_answer(&app, &[&second, &jwt, &other, &other_key, &other_jwt], 200).await;
}

#[tokio::test]
async fn invalidate_api_key_drops_that_key_only() {
    let issuer = JwksIssuer::start().await.expect("issuer starts");
    let app = app(&issuer).await;
    let key = api_key(&app, ApiKeyGrant::new("billing").key_id(7001).owner_user_id(USER));
    let sibling = api_key(&app, ApiKeyGrant::new("billing").key_id(7002).owner_user_id(USER));
    let token = opaque(&app, &issuer, USER);
    all_answer(&app, &[&key, &sibling, &token], 200).await;
    app.gateway.reset_calls();

    app.gateway.revoke(&key);
    assert_eq!(
        app.auth.invalidate_api_key(ApiKeyId(7001)).await,
        ChangeOutcome::Applied
    );
    all_answer(&app, &[&key], 401).await;
    all_answer(&app, &[&sibling, &token], 200).await;
    assert_eq!(app.gateway.calls(), 1, "only the invalidated key was asked again");
}

#[tokio::test]
async fn invalidating_a_tenant_drops_its_grants_and_the_keys_acting_for_it() {
    let issuer = JwksIssuer::start().await.expect("issuer starts");
    let app = app(&issuer).await;
    // The default grant is for the organization.
    let org_token = opaque(&app, &issuer, USER);
    let org_key = api_key(&app, ApiKeyGrant::new("billing").key_id(1).organization(ORG, 9001));
    let workspace_token = app.token_with(|g| {
        g.issuer(issuer.url())
            .granted_resource(format!("urn:wacht:workspace:{WORKSPACE}"))
    });
    let workspace_key = api_key(&app, ApiKeyGrant::new("billing").key_id(2).workspace(WORKSPACE, 9002));
    let everything = [&org_token, &org_key, &workspace_token, &workspace_key];
    all_answer(&app, &everything, 200).await;

    app.gateway.reset_calls();
    app.auth.invalidate_organization(OrganizationId(ORG)).await;
    all_answer(&app, &everything, 200).await;
    assert_eq!(app.gateway.calls(), 2, "the organization's token and key");

    app.gateway.reset_calls();
    app.auth.invalidate_workspace(WorkspaceId(WORKSPACE)).await;
    all_answer(&app, &everything, 200).await;
    assert_eq!(app.gateway.calls(), 2, "the workspace's token and key");
}
