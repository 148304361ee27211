//! 200 decisions: allowed and denied answers, request ids, rate limits, required permission
//! expressions, scope mapping and user URNs.

use std::time::Duration;

use serde_json::json;
use tower_wacht::testing::*;

use super::helpers::*;

#[tokio::test]
async fn allowed_decision_matches_protocol_example() {
    let (gw, token) = example_gateway().await;
    let answer = post_json(&gw, &check_body(&token, Some(&["org:projects:read"]))).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let mut body = answer.json();
    normalize_request_id(&mut body);

    let mut headers = example_headers();
    headers.insert("x-ratelimit-60s-limit".into(), json!("1000"));
    headers.insert("x-ratelimit-60s-remaining".into(), json!("999"));
    let expected = json!({
        "request_id": "req_X",
        "allowed": true,
        "reason": null,
        "blocked_rule": null,
        "identity": example_identity(),
        "permissions": example_permissions(),
        "metadata": example_metadata(),
        "rate_limits": [{ "rule": "1000/60s", "remaining": 999, "limit": 1000 }],
        "retry_after": null,
        "headers": headers,
    });
    // Field by field first, for readable failures.
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&body[key], value, "field {key}");
    }
    assert_eq!(body, expected);

    // Wire order of the top-level fields and of metadata.
    let order = [
        "request_id",
        "allowed",
        "reason",
        "blocked_rule",
        "identity",
        "permissions",
        "metadata",
        "rate_limits",
        "retry_after",
        "headers",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|k| answer.text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let meta = [
        "principal_type",
        "scopes",
        "oauth_resource",
        "granted_resource",
        "expires_at",
    ];
    let positions: Vec<usize> = meta
        .iter()
        .map(|k| answer.text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    // The request was recorded as sent, with the token only hashed.
    let recorded = gw.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.principal_type, "oauth_access_token");
    assert_eq!(r.token_sha256, hash_token(&token));
    assert_eq!(r.token_sha256.len(), 64);
    assert_eq!(r.method, "get");
    assert_eq!(r.resource, "/v1/projects?limit=20");
    assert_eq!(r.client_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(r.user_agent.as_deref(), Some("curl/8.5.0"));
    assert_eq!(r.required_permissions, Some(vec!["org:projects:read".to_owned()]));
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.authorization, None);
}

#[tokio::test]
async fn request_ids_increase() {
    let (gw, token) = example_gateway().await;
    let mut last = 0;
    for _ in 0..3 {
        let mut body = post_json(&gw, &check_body(&token, None)).await.json();
        let id = normalize_request_id(&mut body);
        assert!(id > last);
        last = id;
    }
    let mut unknown = post_json(&gw, &check_body("oat_unknown", None)).await.json();
    assert!(normalize_request_id(&mut unknown) > last);
}

#[tokio::test]
async fn permission_denied_matches_protocol_example_and_skips_rate_limit() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit(1, Duration::from_secs(60));
    let answer = post_json(&gw, &check_body(&token, Some(&["org:projects:delete"]))).await;
    assert_eq!(answer.status, 200);
    let mut body = answer.json();
    normalize_request_id(&mut body);
    let mut headers = example_headers();
    headers.insert("x-wacht-permission-denied".into(), json!("true"));
    let expected = json!({
        "request_id": "req_X",
        "allowed": false,
        "reason": "permission_denied",
        "blocked_rule": "permission_denied",
        "identity": example_identity(),
        "permissions": example_permissions(),
        "metadata": example_metadata(),
        "rate_limits": [],
        "retry_after": null,
        "headers": headers,
    });
    assert_eq!(body, expected);

    // The denial was not counted: the single allowed request is still available.
    let ok = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(ok["allowed"], json!(true));
    assert_eq!(ok["rate_limits"][0]["remaining"], json!(0));
}

#[tokio::test]
async fn rate_limited_after_n_requests() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit(3, Duration::from_secs(60));
    for expected_remaining in [2, 1, 0] {
        let body = post_json(&gw, &check_body(&token, None)).await.json();
        assert_eq!(body["allowed"], json!(true));
        assert_eq!(
            body["rate_limits"],
            json!([{ "rule": "3/60s", "remaining": expected_remaining, "limit": 3 }])
        );
        assert_eq!(body["headers"]["x-ratelimit-60s-limit"], json!("3"));
        assert_eq!(
            body["headers"]["x-ratelimit-60s-remaining"],
            json!(expected_remaining.to_string())
        );
        assert!(body["headers"].get("x-ratelimit-60s-reset").is_none());
    }
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    let mut body = answer.json();
    normalize_request_id(&mut body);
    let mut headers = example_headers();
    headers.insert("x-ratelimit-60s-limit".into(), json!("3"));
    headers.insert("x-ratelimit-60s-remaining".into(), json!("0"));
    headers.insert("x-ratelimit-60s-reset".into(), json!("60000"));
    let expected = json!({
        "request_id": "req_X",
        "allowed": false,
        "reason": "rate_limited",
        "blocked_rule": "3/60s",
        "identity": example_identity(),
        "permissions": example_permissions(),
        "metadata": example_metadata(),
        "rate_limits": [{ "rule": "3/60s", "remaining": 0, "limit": 3 }],
        "retry_after": 60000,
        "headers": headers,
    });
    assert_eq!(body, expected);

    // per_app: another token of the same end user shares the counter ...
    let sibling = generate_token();
    gw.register(&sibling, example_grant());
    let body = post_json(&gw, &check_body(&sibling, None)).await.json();
    assert_eq!(body["reason"], json!("rate_limited"));
    // ... a token of another end user does not.
    let other = generate_token();
    gw.register(&other, example_grant().owner_user_id(7));
    let body = post_json(&gw, &check_body(&other, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["identity"]["app_slug"], json!("oauth_7"));

    gw.reset_rate_limits();
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
}

#[tokio::test]
async fn short_window_labels_in_ms_and_frees_up() {
    let (gw, token) = example_gateway().await;
    gw.set_rate_limit(1, Duration::from_millis(300));
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["headers"]["x-ratelimit-300ms-remaining"], json!("0"));
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["reason"], json!("rate_limited"));
    assert_eq!(body["blocked_rule"], json!("1/300ms"));
    assert_eq!(body["retry_after"], json!(300));
    assert_eq!(body["headers"]["x-ratelimit-300ms-reset"], json!("300"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
}

#[tokio::test]
async fn required_permission_expressions() {
    let (gw, token) = example_gateway().await;
    let cases: &[(&[&str], bool)] = &[
        (&["projects:read"], true),
        (&["org:projects:read", "org:projects:write"], true),
        (&["org:projects:read,projects:write"], true),
        (&["org:projects:read,nope"], false),
        (&["nope OR projects:read"], true),
        (&["nope", "nope OR projects:read"], true),
        (&["projects:read", "nope"], false),
        (&["(nope OR projects:read)"], true),
        (&["projects:read AND (projects:write OR nope)"], false),
        (&["(projects:read)"], false),
        (&["projects:read,projects:write", "projects:read"], false),
        (&["  ", ""], true),
        (&[], true),
    ];
    for (required, allowed) in cases {
        let body = post_json(&gw, &check_body(&token, Some(required))).await.json();
        assert_eq!(body["allowed"], json!(allowed), "required {required:?}");
        if !allowed {
            assert_eq!(body["reason"], json!("permission_denied"));
        }
    }
    // Absent field: no check.
    let mut request = check_body(&token, None);
    request.as_object_mut().unwrap().remove("required_permissions");
    assert_eq!(post_json(&gw, &request).await.json()["allowed"], json!(true));
}

#[tokio::test]
async fn scope_mapping_follows_resource_type_and_live_definitions() {
    let gw = FakeGateway::start().await.unwrap();
    gw.set_scope_definitions(vec![
        ScopeDefinition::organization("projects:read", "org:projects:read"),
        ScopeDefinition::workspace("projects:read", "ws:projects:read"),
    ]);
    let ws = generate_token();
    gw.register(
        &ws,
        TokenGrant::new(generate_client_id())
            .scopes(["projects:read"])
            .granted_resource("urn:wacht:workspace:55"),
    );
    let body = post_json(&gw, &check_body(&ws, None)).await.json();
    assert_eq!(body["permissions"], json!(["projects:read", "ws:projects:read"]));
    assert_eq!(body["identity"]["workspace_id"], json!(null));

    let bare = generate_token();
    gw.register(&bare, TokenGrant::new(generate_client_id()));
    let body = post_json(&gw, &check_body(&bare, None)).await.json();
    assert_eq!(body["permissions"], json!([]));
    assert_eq!(body["metadata"]["scopes"], json!([]));
    assert_eq!(body["metadata"]["granted_resource"], json!(null));
    assert_eq!(body["metadata"]["oauth_resource"], json!(null));
    let headers = body["headers"].as_object().unwrap();
    for absent in [
        "x-wacht-granted-resource",
        "x-wacht-oauth-audience",
        "x-wacht-oauth-resource",
        "x-wacht-scopes",
        "x-wacht-permissions",
    ] {
        assert!(!headers.contains_key(absent), "{absent}");
    }

    gw.set_scope_definitions(Vec::new());
    let body = post_json(&gw, &check_body(&ws, None)).await.json();
    assert_eq!(body["permissions"], json!(["projects:read"]));
}

#[tokio::test]
async fn user_urn_must_match_owner() {
    let gw = FakeGateway::start().await.unwrap();
    gw.set_scope_definitions(vec![ScopeDefinition::organization("a", "org:a")]);
    let owner = generate_token();
    gw.register(
        &owner,
        TokenGrant::new(generate_client_id())
            .scopes(["a"])
            .owner_user_id(42)
            .granted_resource("urn:wacht:user:42"),
    );
    let body = post_json(&gw, &check_body(&owner, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["permissions"], json!(["a"]));
    assert_eq!(body["headers"]["x-wacht-granted-resource"], json!("urn:wacht:user:42"));
    assert_eq!(body["headers"]["x-wacht-oauth-audience"], json!("urn:wacht:user:42"));

    for urn in [
        "urn:wacht:user:43",
        "urn:wacht:team:42",
        "urn:wacht:organization:abc",
        "urn:wacht:workspace:",
        "https://api.example.com",
    ] {
        let token = generate_token();
        gw.register(
            &token,
            TokenGrant::new(generate_client_id())
                .owner_user_id(42)
                .granted_resource(urn),
        );
        let answer = post_json(&gw, &check_body(&token, None)).await;
        assert_envelope(&answer, 401);
    }
}
