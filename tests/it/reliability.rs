//! Gateway fault matrix, outage policy, refresh-ahead and client deprovisioning, over real
//! loopback HTTP against `FakeGateway`.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use tower_wacht::testing::{Fault, TokenGrant};

const TIMEOUT: Duration = Duration::from_millis(500);

/// Every fault: the right status, an answer within the configured timeout (plus scheduling
/// slack, never a hang), nothing cached (the next good answer works), no panic.
#[tokio::test]
async fn fault_matrix() {
    let app = start(|b| {
        b.request_timeout(TIMEOUT)
            .unavailable_retry_after(Duration::from_secs(3))
    })
    .await;
    let cases: Vec<(&str, Fault, u16)> = vec![
        ("accept then hang", Fault::Hang, 503),
        ("slow headers", Fault::SlowHeaders(Duration::from_secs(3)), 503),
        ("slow body", Fault::SlowBody(Duration::from_secs(3)), 503),
        ("half body then close", Fault::HalfBodyThenClose, 503),
        ("connection dropped", Fault::DropConnection, 503),
        ("500 with JSON", Fault::Status(500), 503),
        (
            "502 without JSON",
            Fault::StatusPlain(502, "<html>Bad Gateway</html>".into()),
            503,
        ),
        (
            "503 without JSON",
            Fault::StatusPlain(503, "upstream connect error".into()),
            503,
        ),
        ("200 garbage", Fault::GarbageBody, 503),
        ("200 truncated", Fault::TruncatedBody, 503),
        ("200 huge (5 MiB)", Fault::HugeBody(5 * 1024 * 1024), 503),
        ("200 wrong content type", Fault::WrongContentType, 503),
        ("200 allowed without identity", Fault::AllowedWithoutIdentity, 503),
        (
            "401 plain text from a proxy",
            Fault::StatusPlain(401, "Unauthorized".into()),
            503,
        ),
        (
            "429 from a proxy",
            Fault::StatusPlain(429, "Too Many Requests".into()),
            503,
        ),
        ("gateway rate limit", Fault::RateLimited { retry_after_ms: 2_000 }, 429),
        ("400 from the gateway", Fault::Status(400), 503),
    ];
    for (name, fault, expected) in cases {
        let token = app.token(&["mcp:invoke"]);
        app.gateway.set_fault(Some(fault));
        let started = Instant::now();
        let resp = app.get("/whoami", Some(&token)).await;
        let elapsed = started.elapsed();
        app.gateway.set_fault(None);
        assert_eq!(resp.status().as_u16(), expected, "{name}");
        assert!(
            elapsed < TIMEOUT + Duration::from_millis(1500),
            "{name}: answered after {elapsed:?}"
        );
        assert!(resp.headers().contains_key("retry-after"), "{name}");
        assert!(
            resp.headers().get("www-authenticate").is_none(),
            "{name}: must not look like a bad token"
        );
        assert_problem(resp, expected, Some(&token)).await;
        // Nothing was cached, positively or negatively: the next good answer works at once.
        let calls = app.gateway.calls();
        assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200, "{name}: recovery");
        assert_eq!(app.gateway.calls(), calls + 1, "{name}: recovery asked the gateway");
    }
}

#[tokio::test]
async fn gateway_json_401_is_invalid_token_but_a_proxy_401_is_not() {
    let app = start(|b| b).await;
    let token = app.token(&[]);
    app.gateway.set_fault(Some(Fault::Status(401)));
    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(
        resp.status(),
        401,
        "the gateway's own 401 envelope means the token is invalid"
    );
    assert!(challenge(&resp).contains("invalid_token"));

    let other = app.token(&[]);
    app.gateway
        .set_fault(Some(Fault::StatusPlain(401, "Invalid API key".into())));
    assert_eq!(app.get("/whoami", Some(&other)).await.status(), 503);
}

#[tokio::test]
async fn outages_fail_closed_by_default() {
    let app = start(|b| b.ttl(Duration::from_millis(200))).await;
    let token = app.token(&[]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    app.gateway.set_fault(Some(Fault::Status(503)));
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200, "still cached");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 503);
}

#[tokio::test]
async fn stale_if_error_serves_known_tokens_for_a_bounded_grace() {
    let app = start(|b| {
        b.ttl(Duration::from_millis(200))
            .stale_if_error(Duration::from_millis(800))
    })
    .await;
    let token = app.token(&["mcp:invoke"]);
    let short = app.token_with(|g| g.scopes(["mcp:invoke"]).expires_in(Duration::from_millis(700)));
    let revoked = app.token(&[]);
    let never_seen = app.token(&[]);
    for t in [&token, &short, &revoked] {
        assert_eq!(app.get("/whoami", Some(t)).await.status(), 200);
    }
    app.gateway.set_fault(Some(Fault::Status(503)));
    app.auth.invalidate(&revoked).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Past the ttl, gateway down: a token verified before is served from the grace.
    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(resp.status(), 200);
    let who: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(who["client_id"], "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl");
    // Never for a token that was invalidated, nor one never verified.
    assert_eq!(app.get("/whoami", Some(&revoked)).await.status(), 503);
    assert_eq!(app.get("/whoami", Some(&never_seen)).await.status(), 503);

    // Never past the token's own expiry.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(app.get("/whoami", Some(&short)).await.status(), 503, "token expired");
    // Never past the grace.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 503, "grace over");

    // Rate limiting is not an outage: no stale serving for it.
    app.gateway.set_fault(None);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.gateway.set_fault(Some(Fault::RateLimited { retry_after_ms: 1000 }));
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 429);
}

#[tokio::test]
async fn stale_if_error_never_serves_a_denied_client() {
    let app = start(|b| b.ttl(Duration::from_millis(150)).stale_if_error(Duration::from_secs(5))).await;
    let token = app.token(&[]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    app.auth
        .verifier()
        .deny_client("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
        .await;
    app.gateway.set_fault(Some(Fault::Status(500)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 503);
}

#[tokio::test]
async fn refresh_ahead_renews_hot_tokens_in_the_background() {
    // ttl 1 s, refresh in the last 300 ms of an entry.
    let app = start(|b| {
        b.ttl(Duration::from_millis(1000))
            .refresh_ahead(Duration::from_millis(300))
    })
    .await;
    let token = app.token(&[]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.gateway.calls(), 1);

    // Inside the refresh window (t = 750 ms): served from the cache, one background check.
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    wait_for_calls(&app, 2).await;

    // Past the first entry's end (t ≈ 1150 ms) the refreshed entry answers, and it is not yet
    // in its own refresh window: no request waits on the gateway, no new call.
    tokio::time::sleep(Duration::from_millis(360)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.gateway.calls(), 2);

    // A revocation found by a refresh takes effect at once, before the entry ends.
    app.gateway.revoke(&token);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        app.get("/whoami", Some(&token)).await.status(),
        200,
        "served while the refresh runs"
    );
    wait_for_calls(&app, 3).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
}

async fn wait_for_calls(app: &TestApp, n: usize) {
    for _ in 0..200 {
        if app.gateway.calls() >= n {
            // Let the refresh store its answer.
            tokio::time::sleep(Duration::from_millis(30)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gateway calls stayed at {} (expected {n})", app.gateway.calls());
}

#[tokio::test]
async fn denied_clients_are_refused_even_when_the_gateway_allows() {
    let app = start(|b| b.negative_ttl(Duration::ZERO).denied_clients(["oc_leaked"])).await;
    let leaked = app.token_with(|_| TokenGrant::new("oc_leaked"));
    let resp = app.get("/whoami", Some(&leaked)).await;
    assert!(challenge(&resp).contains("invalid_token"));
    assert_problem(resp, 401, Some(&leaked)).await;

    // Deny at run time: a cached token of that client stops working at once.
    let token = app.token(&[]);
    let other = app.token_with(|_| TokenGrant::new("oc_other"));
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.get("/whoami", Some(&other)).await.status(), 200);
    app.auth
        .verifier()
        .deny_client("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
        .await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
    assert_eq!(
        app.get("/whoami", Some(&other)).await.status(),
        200,
        "other clients unaffected"
    );
    assert_eq!(
        app.auth.verifier().denied_clients(),
        ["oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl", "oc_leaked"]
    );

    // Lifting the deny lets the client's tokens work again.
    assert_eq!(
        app.auth
            .verifier()
            .allow_client("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
            .await,
        tower_wacht::ChangeOutcome::Applied
    );
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn invalidate_client_drops_every_cached_token_of_a_client() {
    let app = start(|b| b.ttl(Duration::from_secs(60))).await;
    let a = app.token(&[]);
    let b = app.token(&[]);
    let other = app.token_with(|_| TokenGrant::new("oc_other"));
    for t in [&a, &b, &other] {
        assert_eq!(app.get("/whoami", Some(t)).await.status(), 200);
    }
    app.gateway.revoke(&a);
    app.gateway.revoke(&b);
    app.gateway.revoke(&other);
    app.auth
        .verifier()
        .invalidate_client("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
        .await;
    assert_eq!(app.get("/whoami", Some(&a)).await.status(), 401);
    assert_eq!(app.get("/whoami", Some(&b)).await.status(), 401);
    assert_eq!(app.get("/whoami", Some(&other)).await.status(), 200, "still cached");
}
