//! Rate-limit schemes (`gateway-protocol.md` §3.2 step 9): endpoint-scoped rules, priority
//! order, every rule counted, the counter modes, labels, header entries and windows.

use std::time::Duration;

use serde_json::{Value, json};
use tower_wacht::testing::*;

use super::helpers::*;

/// A check of `token` on `resource` from `client_ip` (`None`: the field is `null`).
fn call(token: &str, resource: &str, client_ip: Option<&str>) -> Value {
    json!({
        "principal": { "type": "oauth_access_token", "value": token },
        "resource": resource,
        "method": "GET",
        "client_ip": client_ip,
        "user_agent": null,
        "required_permissions": null,
    })
}

async fn check(gw: &FakeGateway, token: &str, resource: &str) -> Value {
    let answer = post_json(gw, &call(token, resource, Some("203.0.113.7"))).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json()
}

/// `rate_limits` as `(rule, remaining)` pairs.
fn limits(body: &Value) -> Vec<(String, u64)> {
    body["rate_limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["rule"].as_str().unwrap().to_owned(), e["remaining"].as_u64().unwrap()))
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()
}

/// The `x-ratelimit-*` keys of the header map, sorted.
fn ratelimit_headers(body: &Value) -> Vec<(String, String)> {
    body["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("x-ratelimit-"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn endpoint_scoped_rules_apply_to_their_resource_only() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(100, RateLimitUnit::Minute, 1),
        RateLimitRule::new(2, RateLimitUnit::Second, 10).endpoints(["/v1/search"]),
    ]);
    // The query string is cut before matching.
    let body = check(&gw, &token, "/v1/search?q=x").await;
    assert_eq!(limits(&body), pairs(&[("100/60s", 99), ("2/10s", 1)]));
    let body = check(&gw, &token, "v1/search").await;
    assert_eq!(limits(&body), pairs(&[("100/60s", 98), ("2/10s", 0)]));
    let body = check(&gw, &token, "/v1/search").await;
    assert_eq!(body["reason"], json!("rate_limited"));
    assert_eq!(body["blocked_rule"], json!("2/10s"));
    // Other resources only see the catch-all rule, and are served.
    for resource in ["/v1/projects", "/v1/search/", "/V1/SEARCH"] {
        let body = check(&gw, &token, resource).await;
        assert_eq!(body["allowed"], json!(true), "{resource}");
        assert_eq!(body["rate_limits"].as_array().unwrap().len(), 1, "{resource}");
        assert_eq!(body["rate_limits"][0]["rule"], json!("100/60s"));
    }
    // An explicit `*` endpoint matches everything.
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(5, RateLimitUnit::Hour, 1).endpoints(["/a", "*"]),
    ]);
    let body = check(&gw, &token, "/anything").await;
    assert_eq!(limits(&body), pairs(&[("5/3600s", 4)]));
}

#[tokio::test]
async fn priority_order_blocked_rule_and_retry_after() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(1, RateLimitUnit::Hour, 1).priority(5),
        RateLimitRule::new(1, RateLimitUnit::Minute, 2).priority(-1),
        RateLimitRule::new(3, RateLimitUnit::Second, 30).priority(0),
    ]);
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["retry_after"], Value::Null);
    assert_eq!(body["blocked_rule"], Value::Null);
    assert_eq!(limits(&body), pairs(&[("1/120s", 0), ("3/30s", 2), ("1/3600s", 0)]));
    assert_eq!(
        ratelimit_headers(&body),
        [
            ("x-ratelimit-120s-limit".to_owned(), "1".to_owned()),
            ("x-ratelimit-120s-remaining".to_owned(), "0".to_owned()),
            ("x-ratelimit-30s-limit".to_owned(), "3".to_owned()),
            ("x-ratelimit-30s-remaining".to_owned(), "2".to_owned()),
            ("x-ratelimit-3600s-limit".to_owned(), "1".to_owned()),
            ("x-ratelimit-3600s-remaining".to_owned(), "0".to_owned()),
        ]
    );

    // Two rules block: the first in priority order names the block, retry_after is the
    // smallest full window, each blocking rule gets a `-reset` entry; the middle rule still
    // counts the request.
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(body["allowed"], json!(false));
    assert_eq!(body["reason"], json!("rate_limited"));
    assert_eq!(body["blocked_rule"], json!("1/120s"));
    assert_eq!(body["retry_after"], json!(120_000));
    assert_eq!(limits(&body), pairs(&[("1/120s", 0), ("3/30s", 1), ("1/3600s", 0)]));
    assert_eq!(
        ratelimit_headers(&body),
        [
            ("x-ratelimit-120s-limit".to_owned(), "1".to_owned()),
            ("x-ratelimit-120s-remaining".to_owned(), "0".to_owned()),
            ("x-ratelimit-120s-reset".to_owned(), "120000".to_owned()),
            ("x-ratelimit-30s-limit".to_owned(), "3".to_owned()),
            ("x-ratelimit-30s-remaining".to_owned(), "1".to_owned()),
            ("x-ratelimit-3600s-limit".to_owned(), "1".to_owned()),
            ("x-ratelimit-3600s-remaining".to_owned(), "0".to_owned()),
            ("x-ratelimit-3600s-reset".to_owned(), "3600000".to_owned()),
        ]
    );
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(limits(&body), pairs(&[("1/120s", 0), ("3/30s", 0), ("1/3600s", 0)]));
    // Now all three block: retry_after is still the minimum, 30 s.
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(body["blocked_rule"], json!("1/120s"));
    assert_eq!(body["retry_after"], json!(30_000));
    assert_eq!(body["headers"]["x-ratelimit-30s-reset"], json!("30000"));
}

#[tokio::test]
async fn per_key_and_per_app_counters() {
    let (gw, token) = example_gateway().await;
    let sibling = generate_token();
    gw.register(&sibling, example_grant());
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(3, RateLimitUnit::Minute, 1),
        RateLimitRule::new(1, RateLimitUnit::Minute, 5).mode(RateLimitMode::PerKey),
    ]);
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(limits(&body), pairs(&[("3/60s", 2), ("1/300s", 0)]));
    // Another token of the same end user: per_app is shared, per_key is its own.
    let body = check(&gw, &sibling, "/v1/projects").await;
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(limits(&body), pairs(&[("3/60s", 1), ("1/300s", 0)]));
    // per_key counts per resource too.
    let body = check(&gw, &token, "/v1/other").await;
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(limits(&body), pairs(&[("3/60s", 0), ("1/300s", 0)]));
    // The same token on the same resource again: per_key blocks (and per_app, now full).
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(body["blocked_rule"], json!("3/60s"));
    assert_eq!(limits(&body), pairs(&[("3/60s", 0), ("1/300s", 0)]));
    assert_eq!(body["headers"]["x-ratelimit-300s-reset"], json!("300000"));

    // Another end user has its own per_app counter.
    let other = generate_token();
    gw.register(&other, example_grant().owner_user_id(7));
    let body = check(&gw, &other, "/v1/projects").await;
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(limits(&body), pairs(&[("3/60s", 2), ("1/300s", 0)]));
}

#[tokio::test]
async fn per_app_and_ip_separates_client_ips() {
    let (gw, token) = example_gateway().await;
    let sibling = generate_token();
    gw.register(&sibling, example_grant());
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(1, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerAppAndIp),
    ]);
    let send = |token: String, ip: Option<&'static str>| {
        let gw = gw.clone();
        async move { post_json(&gw, &call(&token, "/v1/projects", ip)).await.json() }
    };
    assert_eq!(send(token.clone(), Some("198.51.100.1")).await["allowed"], json!(true));
    // Same app, same IP, other token: shared, so blocked.
    let body = send(sibling.clone(), Some(" 198.51.100.1 ")).await;
    assert_eq!(body["blocked_rule"], json!("1/60s"));
    assert_eq!(body["retry_after"], json!(60_000));
    // Another IP has its own counter.
    assert_eq!(
        send(sibling.clone(), Some("198.51.100.2")).await["allowed"],
        json!(true)
    );
    // No client_ip: the x-original-client-ip header, else the TCP peer (127.0.0.1).
    assert_eq!(send(token.clone(), None).await["allowed"], json!(true));
    assert_eq!(send(token.clone(), Some("127.0.0.1")).await["allowed"], json!(false));
    let with_header = send_request(
        client()
            .post(check_url(&gw))
            .header("x-original-client-ip", "192.0.2.9")
            .json(&call(&token, "/v1/projects", None)),
    )
    .await;
    assert_eq!(with_header["allowed"], json!(true));
    assert_eq!(send(token.clone(), Some("192.0.2.9")).await["allowed"], json!(false));

    // per_key_and_ip: per token and IP.
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(1, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerKeyAndIp),
    ]);
    assert_eq!(send(token.clone(), Some("198.51.100.1")).await["allowed"], json!(true));
    assert_eq!(
        send(sibling.clone(), Some("198.51.100.1")).await["allowed"],
        json!(true)
    );
    assert_eq!(send(token.clone(), Some("198.51.100.2")).await["allowed"], json!(true));
    assert_eq!(send(token, Some("198.51.100.1")).await["allowed"], json!(false));
}

async fn send_request(request: reqwest::RequestBuilder) -> Value {
    let answer = send(request).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json()
}

#[tokio::test]
async fn api_keys_count_per_key_id_and_share_per_app() {
    let gw = FakeGateway::start().await.unwrap();
    let (a, b) = (generate_api_key("sk_test"), generate_api_key("sk_test"));
    gw.register_api_key(&a, ApiKeyGrant::new("billing").key_id(1));
    gw.register_api_key(&b, ApiKeyGrant::new("billing").key_id(2));
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(3, RateLimitUnit::Minute, 1),
        RateLimitRule::new(1, RateLimitUnit::Minute, 1)
            .mode(RateLimitMode::PerKey)
            .priority(-1),
    ]);
    let key_call = |key: &str| {
        json!({
            "principal": { "type": "api_key", "value": key },
            "resource": "/v1/invoices",
            "method": "GET",
        })
    };
    let body = post_json(&gw, &key_call(&a)).await.json();
    assert_eq!(limits(&body), pairs(&[("1/60s", 0), ("3/60s", 2)]));
    let body = post_json(&gw, &key_call(&b)).await.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(limits(&body), pairs(&[("1/60s", 0), ("3/60s", 1)]));
    let body = post_json(&gw, &key_call(&a)).await.json();
    assert_eq!(body["blocked_rule"], json!("1/60s"));
    // Both rules share the label's `W` (`60s`): the later one's header entries win.
    assert_eq!(body["headers"]["x-ratelimit-60s-limit"], json!("3"));
    assert_eq!(body["headers"]["x-ratelimit-60s-remaining"], json!("0"));
    assert_eq!(body["headers"]["x-ratelimit-60s-reset"], json!("60000"));
}

#[tokio::test]
async fn short_window_rolls() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit_rules(vec![RateLimitRule::new(2, RateLimitUnit::Millisecond, 300)]);
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(limits(&body), pairs(&[("2/300ms", 1)]));
    assert_eq!(body["headers"]["x-ratelimit-300ms-remaining"], json!("1"));
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(limits(&body), pairs(&[("2/300ms", 0)]));
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(body["reason"], json!("rate_limited"));
    assert_eq!(body["blocked_rule"], json!("2/300ms"));
    assert_eq!(body["retry_after"], json!(300));
    assert_eq!(body["headers"]["x-ratelimit-300ms-reset"], json!("300"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let body = check(&gw, &token, "/v1/projects").await;
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(limits(&body), pairs(&[("2/300ms", 1)]));
}

#[tokio::test]
async fn no_matching_rule_means_no_limit_and_clear_restores_default() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(0, RateLimitUnit::Minute, 1).endpoints(["/v1/admin"]),
    ]);
    for _ in 0..3 {
        let body = check(&gw, &token, "/v1/projects").await;
        assert_eq!(body["allowed"], json!(true));
        assert_eq!(body["rate_limits"], json!([]));
        assert!(ratelimit_headers(&body).is_empty());
    }
    let body = check(&gw, &token, "/v1/admin").await;
    assert_eq!(body["blocked_rule"], json!("0/60s"));
    assert_eq!(limits(&body), pairs(&[("0/60s", 0)]));

    gw.set_rate_limit_rules(Vec::new());
    let body = check(&gw, &token, "/v1/admin").await;
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["rate_limits"], json!([]));

    // The fault still answers rate_limited, with the default rule, when no rule applies.
    gw.set_fault(Some(Fault::RateLimited { retry_after_ms: 1234 }));
    let body = check(&gw, &token, "/v1/admin").await;
    assert_eq!(body["blocked_rule"], json!("1000/60s"));
    assert_eq!(body["retry_after"], json!(1234));
    gw.set_fault(None);

    gw.clear_rate_limit_rules();
    let body = check(&gw, &token, "/v1/admin").await;
    assert_eq!(limits(&body), pairs(&[("1000/60s", 999)]));
}

#[tokio::test]
async fn permission_denial_counts_nothing() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit_rules(vec![
        RateLimitRule::new(1, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerKey),
    ]);
    let denied = post_json(&gw, &check_body(&token, Some(&["nope"]))).await.json();
    assert_eq!(denied["reason"], json!("permission_denied"));
    assert_eq!(denied["rate_limits"], json!([]));
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
}
