//! The quickstart example: every curl command it prints gives the answer it promises.

use crate::common;

#[allow(dead_code, clippy::module_inception)]
#[path = "../../examples/quickstart.rs"]
mod quickstart;

use std::time::Duration;

use tower_wacht::WachtAuthLayer;
use tower_wacht::testing::WebhookSigner;

#[tokio::test]
async fn every_printed_demo_call_answers_as_documented() {
    let quickstart::Demo {
        gateway,
        issuer,
        config,
        calls,
        ..
    } = quickstart::demo().await.unwrap();
    let addr = common::serve(quickstart::app(WachtAuthLayer::new(config).unwrap())).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    assert_eq!(calls.len(), 9);
    for call in &calls {
        let curl = call.curl(&base);
        assert!(curl.starts_with("curl -i ") && curl.ends_with(call.path), "{curl}");
        let mut req = http.request(call.method.parse().unwrap(), format!("{base}{}", call.path));
        if let Some(t) = &call.token {
            assert!(curl.contains(&format!("Authorization: Bearer {t}")));
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), call.expect_status, "{}: {curl}", call.what);
        let challenge = common::challenge(&resp);
        let body = resp.text().await.unwrap();
        match (call.path, call.expect_status, call.token.is_some()) {
            ("/public", 200, false) => assert!(body.contains("anonymous")),
            ("/public", 200, true) => assert!(body.contains("oc_demoAgent")),
            ("/whoami", 200, _) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let jwt = call.token.as_deref().is_some_and(|t| t.starts_with("ey"));
                assert_eq!(v["verified_by"], if jwt { "jwt_signature" } else { "gateway" });
                assert_eq!(v["client_id"], "oc_demoAgentWithInvokeScope00000001");
                assert_eq!(v["granted_resource"], "urn:wacht:organization:427001234567890561");
                assert_eq!(
                    v["permissions"],
                    serde_json::json!(["mcp:invoke", "org:projects:read", "projects:read"])
                );
                assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
            }
            (_, 401, false) => assert_eq!(challenge, "Bearer scope=\"mcp:invoke\", realm=\"quickstart\""),
            (_, 401, true) => assert!(challenge.contains("error=\"invalid_token\"")),
            (_, 403, _) => {
                assert!(challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"mcp:invoke"))
            }
            ("/tools/invoke", 200, _) => assert!(body.contains("\"invoked\":true")),
            other => panic!("unexpected demo call {other:?}"),
        }
    }
    // The agent's token (then cached), the unknown one and the reader's, and once per route
    // whose rate-limit rules the token's app was not yet seen on (metering learns them from
    // the gateway); never a JWT.
    let sent = gateway.requests();
    assert!(
        sent.iter().all(|r| r.principal_type == "oauth_access_token"),
        "{sent:?}"
    );
    assert_eq!(
        gateway.calls(),
        5,
        "opaque tokens only: the JWTs never reach the gateway"
    );
    assert!(issuer.fetches() >= 1, "the JWT was verified against the issuer's JWKS");
}

/// Reads an SSE response until it ends cleanly (bounded, so a stream that never ends fails);
/// returns how many events came.
async fn events_until_end(mut response: reqwest::Response) -> usize {
    let mut events = 0;
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = response.chunk().await.expect("a clean end, not a broken connection") {
            events += String::from_utf8_lossy(&chunk).matches("event: tick").count();
        }
    })
    .await;
    assert!(read.is_ok(), "the stream was not ended ({events} events)");
    events
}

#[tokio::test]
async fn the_printed_streams_end_with_their_tokens() {
    // The short-lived token expires 2 s after the start here (2 minutes in the example).
    let demo = quickstart::demo_with(Duration::from_secs(2), WebhookSigner::generate())
        .await
        .unwrap();
    let auth = WachtAuthLayer::new(demo.config.clone()).unwrap();
    let addr = common::serve(quickstart::app(auth.clone()).merge(demo.router(auth))).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    assert_eq!(demo.streams.len(), 2);
    let mut open = Vec::new();
    for call in &demo.streams {
        let curl = call.curl_stream(&base);
        let token = call.token.as_deref().expect("streams need a token");
        assert!(
            curl.starts_with("curl -N -i ") && curl.contains(&format!("Authorization: Bearer {token}")),
            "{curl}"
        );
        let resp = http
            .get(format!("{base}{}", call.path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), call.expect_status, "{}", call.what);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        open.push(resp);
    }
    let revocable = open.pop().expect("the stream to revoke");
    let short = open.pop().expect("the short-lived stream");

    // The short-lived token's stream ends when the token expires.
    assert!(events_until_end(short).await >= 1);

    // The revoke command answers 204, and the revoked token's stream ends.
    let revoke = &demo.revoke;
    assert_eq!(revoke.curl(&base), format!("curl -i -X POST {base}/demo/revoke"));
    let resp = http.post(format!("{base}{}", revoke.path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), revoke.expect_status);
    assert!(events_until_end(revocable).await >= 1);
    // Asked again, the revoked token gets 401.
    let resp = http
        .get(format!("{base}/events"))
        .bearer_auth(&demo.revocable)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// The printed API-key commands: a key in `Authorization` and in `x-api-key` is served with
/// its principal saying so (one gateway call, sent as an API key), an unknown key gets 401.
#[tokio::test]
async fn the_printed_api_key_calls_answer_as_documented() {
    let quickstart::Demo {
        gateway,
        config,
        api_keys,
        ..
    } = quickstart::demo().await.unwrap();
    let addr = common::serve(quickstart::app(WachtAuthLayer::new(config).unwrap())).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    assert_eq!(api_keys.len(), 3);
    for call in &api_keys {
        let key = call.token.as_deref().expect("every key call carries a key");
        let curl = call.curl(&base);
        let mut req = http.request(call.method.parse().unwrap(), format!("{base}{}", call.path));
        if call.header == "Authorization" {
            assert!(curl.contains(&format!("-H 'Authorization: Bearer {key}'")), "{curl}");
            req = req.bearer_auth(key);
        } else {
            assert!(curl.contains(&format!("-H 'x-api-key: {key}'")), "{curl}");
            req = req.header(call.header, key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), call.expect_status, "{}: {curl}", call.what);
        if call.path == "/whoami" && call.expect_status == 200 {
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(v["credential_kind"], "api_key");
            assert_eq!(v["client_id"], "billing-service");
            assert_eq!(v["api_key"]["key_name"], "nightly export");
        }
    }
    let sent: Vec<String> = gateway.requests().into_iter().map(|r| r.principal_type).collect();
    assert_eq!(
        sent,
        ["api_key", "api_key", "api_key"],
        "the known key (then cached, and once more on the second route its app's rate limits are learned on), the unknown one"
    );
}

/// The printed webhook: a JWT of a session is served, the signed `session.deleted` delivery
/// (exactly as printed) is acknowledged, and the JWT is refused from then on; delivered again,
/// it is acknowledged once more; forged (another secret), it is refused.
#[tokio::test]
async fn the_printed_webhook_ends_the_sessions_access() {
    let demo = quickstart::demo().await.unwrap();
    let auth = WachtAuthLayer::new(demo.config.clone()).unwrap();
    let webhooks = quickstart::webhooks(&auth, demo.signer.secret()).unwrap();
    let addr = common::serve(quickstart::app(auth.clone()).merge(demo.router(auth)).merge(webhooks)).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let whoami = |call: &quickstart::DemoCall| {
        let curl = call.curl(&base);
        let token = call.token.clone().expect("a token");
        assert!(curl.contains(&format!("Authorization: Bearer {token}")), "{curl}");
        let request = http.get(format!("{base}{}", call.path)).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(whoami(&demo.session_jwt).await, demo.session_jwt.expect_status);
    assert_eq!(demo.session_jwt.expect_status, 200);

    let webhook = &demo.webhook;
    let curl = webhook.curl(&base);
    assert!(
        curl.starts_with("curl -i -X POST ") && curl.ends_with(&format!("{base}/webhooks/wacht")),
        "{curl}"
    );
    assert!(curl.contains(&format!("-d '{}'", webhook.body)), "{curl}");
    assert!(!webhook.body.contains('\''), "the body fits in single quotes");
    let deliver = |headers: &[(&str, String)]| {
        let mut request = http
            .post(format!("{base}/webhooks/wacht"))
            .header("content-type", "application/json")
            .body(webhook.body.clone());
        for (name, value) in headers {
            assert!(curl.contains(&format!("-H '{name}: {value}'")), "{curl}");
            request = request.header(*name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(deliver(&webhook.headers).await, 200);
    assert_eq!(
        whoami(&demo.session_jwt_after).await,
        demo.session_jwt_after.expect_status
    );
    assert_eq!(demo.session_jwt_after.expect_status, 401);
    assert_eq!(deliver(&webhook.headers).await, 200, "delivered again: acknowledged");
    // The other demo JWT (another session) is still served.
    let jwt = demo
        .calls
        .iter()
        .find(|c| c.token.as_deref().is_some_and(|t| t.starts_with("ey")) && c.expect_status == 200);
    assert_eq!(whoami(jwt.expect("the demo JWT")).await, 200);
    // Signed with a secret the server does not have: refused.
    let forged = quickstart::DemoWebhook::signed(
        "forged",
        &WebhookSigner::generate(),
        "msg_forged",
        "session.deleted",
        serde_json::json!({"entity_id": "1"}),
    );
    let status = http
        .post(format!("{base}/webhooks/wacht"))
        .headers(
            forged
                .headers
                .iter()
                .map(|(n, v)| (http::HeaderName::from_static(n), v.parse().unwrap()))
                .collect(),
        )
        .body(forged.body.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}
