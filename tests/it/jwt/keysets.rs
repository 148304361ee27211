//! The rules of JWT key sets, over loopback HTTP against a `JwksIssuer`: a key withdrawal
//! drops the JWT decisions only.

use std::time::Duration;

use tower_wacht::testing::generate_token;

use super::{CLIENT, JwtApp, claims, start_jwt};

/// The status of a request with `token`, and its `Retry-After` if any.
async fn answer(app: &JwtApp, token: &str) -> (u16, Option<String>) {
    let resp = app.get("/whoami", Some(token)).await;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), retry_after)
}

/// A key withdrawn from the JWKS (compromised) drops the decisions on JWTs: the cached token
/// it signed is refused. Opaque tokens' decisions stay, accepted and refused alike: the
/// gateway is not asked about them again.
#[tokio::test]
async fn a_key_withdrawal_drops_jwt_decisions_only() {
    let app = start_jwt(|j| j, |b| b.negative_ttl(Duration::from_secs(600))).await;
    let opaque = app.token_with(|g| g.issuer(app.issuer.url()));
    let unknown = generate_token();
    assert_eq!(answer(&app, &opaque).await.0, 200);
    assert_eq!(answer(&app, &unknown).await.0, 401);
    let calls = app.gateway.calls();
    assert_eq!(calls, 2);
    let compromised = app.issuer.active_kid();
    let jwt = app.issuer.mint(&claims());
    assert_eq!(answer(&app, &jwt).await.0, 200);

    // Withdrawn; the new key's first token makes this server fetch the JWKS and see it.
    assert!(app.issuer.compromise(&compromised));
    let replacement = app.issuer.mint(&claims());
    assert_eq!(answer(&app, &replacement).await.0, 200);
    assert_eq!(app.issuer.fetches(), 2);

    assert_eq!(answer(&app, &jwt).await.0, 401, "cached token by the withdrawn key");
    let fresh = app.issuer.mint_with_key(&compromised, &claims()).unwrap();
    assert_eq!(answer(&app, &fresh).await.0, 401, "new token by the withdrawn key");
    assert_eq!(answer(&app, &replacement).await.0, 200);

    assert_eq!(answer(&app, &opaque).await.0, 200);
    assert_eq!(answer(&app, &unknown).await.0, 401);
    assert_eq!(
        app.gateway.calls(),
        calls,
        "opaque tokens were answered from the cache and the negative cache"
    );
    let whoami: serde_json::Value = app.get("/whoami", Some(&opaque)).await.json().await.unwrap();
    assert_eq!(whoami["client_id"], CLIENT);
}
