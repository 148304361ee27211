//! Error envelopes and extractor rejections.

use std::time::{Duration, SystemTime};

use serde_json::json;
use tower_wacht::testing::*;

use super::helpers::*;

#[tokio::test]
async fn inactive_tokens_get_401_envelope() {
    let (gw, token) = example_gateway().await;
    assert_envelope(&post_json(&gw, &check_body("oat_unknown", None)).await, 401);
    assert_envelope(&post_json(&gw, &check_body("   ", None)).await, 401);
    assert_envelope(&post_json(&gw, &check_body("", None)).await, 401);

    // Surrounding whitespace is trimmed before hashing; a Bearer prefix is not stripped.
    let padded = post_json(&gw, &check_body(&format!("  {token}\n"), None)).await;
    assert_eq!(padded.status, 200);
    assert_envelope(
        &post_json(&gw, &check_body(&format!("Bearer {token}"), None)).await,
        401,
    );

    let expired = generate_token();
    gw.register(
        &expired,
        example_grant().expires_at(SystemTime::now() - Duration::from_secs(1)),
    );
    assert_envelope(&post_json(&gw, &check_body(&expired, None)).await, 401);

    let short = generate_token();
    gw.register(&short, example_grant().expires_in(Duration::from_millis(150)));
    assert_eq!(post_json(&gw, &check_body(&short, None)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_envelope(&post_json(&gw, &check_body(&short, None)).await, 401);

    gw.revoke(&token);
    assert_envelope(&post_json(&gw, &check_body(&token, None)).await, 401);
    // Registering again reinstates it.
    gw.register(&token, example_grant());
    assert_eq!(post_json(&gw, &check_body(&token, None)).await.status, 200);
}

#[tokio::test]
async fn method_and_resource_are_validated_first() {
    let (gw, token) = example_gateway().await;
    for method in ["TRACE", "", "  ", "CONNECT", "GETS"] {
        let mut body = check_body(&token, None);
        body["method"] = json!(method);
        assert_envelope(&post_json(&gw, &body).await, 400);
    }
    for method in [" post ", "Delete", "OPTIONS", "head", "PUT", "patch"] {
        let mut body = check_body(&token, None);
        body["method"] = json!(method);
        assert_eq!(post_json(&gw, &body).await.status, 200, "{method}");
    }
    for resource in ["", "   ", "?limit=1", "#top", "  ?a#b  "] {
        let mut body = check_body(&token, None);
        body["resource"] = json!(resource);
        assert_envelope(&post_json(&gw, &body).await, 400);
    }
    for resource in ["v1/projects", "https://x/y", "/a#?", "//x//"] {
        let mut body = check_body(&token, None);
        body["resource"] = json!(resource);
        assert_eq!(post_json(&gw, &body).await.status, 200, "{resource}");
    }
    // Checked before the principal: an unknown token with a bad method is a 400.
    let mut body = check_body("oat_unknown", None);
    body["method"] = json!("TRACE");
    assert_envelope(&post_json(&gw, &body).await, 400);
}

#[tokio::test]
async fn unknown_api_keys_get_the_plain_text_401() {
    let gw = FakeGateway::start().await.unwrap();
    let mut body = check_body(&format!("sk_live_{}", "a".repeat(43)), None);
    body["principal"]["type"] = json!("api_key");
    let answer = post_json(&gw, &body).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.text, "Invalid API key");
    assert_eq!(answer.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(gw.requests()[0].principal_type, "api_key");

    // Empty or malformed keys get the envelope, like the real gateway.
    body["principal"]["value"] = json!("  ");
    assert_envelope(&post_json(&gw, &body).await, 401);
    body["principal"]["value"] = json!("sk_short");
    assert_envelope(&post_json(&gw, &body).await, 401);
}

#[tokio::test]
async fn extractor_rejections_are_plain_text() {
    let (gw, token) = example_gateway().await;
    let valid = check_body(&token, None).to_string();
    let ct_msg = "Expected request with `Content-Type: application/json`";

    assert_plain(&post_raw(&gw, None, &valid).await, 415, ct_msg);
    assert_plain(&post_raw(&gw, Some("text/plain"), &valid).await, 415, ct_msg);
    assert_plain(&post_raw(&gw, Some("application/xml"), &valid).await, 415, ct_msg);
    for ct in [
        "application/json; charset=utf-8",
        "application/vnd.wacht+json",
        "Application/JSON",
    ] {
        assert_eq!(post_raw(&gw, Some(ct), &valid).await.status, 200, "{ct}");
    }

    let syntax = "Failed to parse the request body as JSON";
    assert_plain(&post_raw(&gw, Some("application/json"), "{").await, 400, syntax);
    assert_plain(&post_raw(&gw, Some("application/json"), "").await, 400, syntax);
    assert_plain(&post_raw(&gw, Some("application/json"), "nope").await, 400, syntax);
    assert_plain(
        &post_raw(&gw, Some("application/json"), &format!("{valid} {{}}")).await,
        400,
        syntax,
    );

    let schema = "Failed to deserialize the JSON body into the target type";
    let mut cases = Vec::new();
    let mut unknown_top = check_body(&token, None);
    unknown_top["extra"] = json!(1);
    cases.push(unknown_top);
    let mut unknown_principal = check_body(&token, None);
    unknown_principal["principal"]["scheme"] = json!("Bearer");
    cases.push(unknown_principal);
    for missing in ["principal", "resource", "method"] {
        let mut body = check_body(&token, None);
        body.as_object_mut().unwrap().remove(missing);
        cases.push(body);
    }
    for missing in ["type", "value"] {
        let mut body = check_body(&token, None);
        body["principal"].as_object_mut().unwrap().remove(missing);
        cases.push(body);
    }
    for kind in ["bearer", "OAUTH_ACCESS_TOKEN", "oauth"] {
        let mut body = check_body(&token, None);
        body["principal"]["type"] = json!(kind);
        cases.push(body);
    }
    let mut wrong_type = check_body(&token, None);
    wrong_type["required_permissions"] = json!("projects:read");
    cases.push(wrong_type);
    let mut wrong_type = check_body(&token, None);
    wrong_type["resource"] = json!(5);
    cases.push(wrong_type);
    cases.push(json!([]));
    for body in &cases {
        assert_plain(&post_json(&gw, body).await, 422, schema);
    }
    // Optional fields may be null or absent.
    let minimal = json!({
        "principal": { "type": "oauth_access_token", "value": token },
        "resource": "/x",
        "method": "GET",
    });
    assert_eq!(post_json(&gw, &minimal).await.status, 200);

    // Rejected requests are counted but not recorded.
    assert_eq!(gw.calls(), 3 + 3 + 4 + cases.len() + 1);
    assert_eq!(gw.requests().len(), 3 + 1);
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let gw = FakeGateway::start().await.unwrap();
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024 + 10));
    let answer = post_raw(&gw, Some("application/json"), &huge).await;
    assert_eq!(answer.status, 413);
}

/// A registered key is answered as `gateway-protocol.md` §4 says: its identity (ids as
/// strings, org / workspace and membership ids), the sorted union of its own and its roles'
/// permissions, its own metadata verbatim (no `principal_type`), the key's header entries.
#[tokio::test]
async fn registered_api_keys_get_the_api_key_decision() {
    let gw = FakeGateway::start().await.unwrap();
    let key = generate_api_key("sk_live");
    gw.register_api_key(
        &key,
        ApiKeyGrant::new("billing")
            .key_id(77)
            .key_name("export")
            .owner_user_id(5)
            .workspace(12, 34)
            .permissions(["b:write"])
            .workspace_role_permissions(["a:read", "b:write"])
            .metadata("team", json!("finance"))
            .metadata("tier", json!(3)),
    );
    let mut body = check_body(&key, None);
    body["principal"]["type"] = json!("api_key");
    let answer = post_json(&gw, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let decision: serde_json::Value = serde_json::from_str(&answer.text).unwrap();
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["identity"]["key_id"], "77");
    assert_eq!(decision["identity"]["app_slug"], "billing");
    assert_eq!(decision["identity"]["key_name"], "export");
    assert_eq!(decision["identity"]["owner_user_id"], "5");
    assert_eq!(decision["identity"]["workspace_id"], "12");
    assert_eq!(decision["identity"]["workspace_membership_id"], "34");
    assert_eq!(decision["identity"]["organization_id"], serde_json::Value::Null);
    assert_eq!(decision["permissions"], json!(["a:read", "b:write"]));
    assert_eq!(decision["metadata"], json!({"team": "finance", "tier": 3}));
    assert_eq!(decision["headers"]["x-wacht-key-id"], "77");
    assert_eq!(decision["headers"]["x-wacht-metadata"], "team=finance");
    assert!(decision["headers"].get("x-wacht-principal-type").is_none());
    // Revoked: the plain-text 401, as for an unknown key; expired: the envelope.
    gw.revoke(&key);
    assert_eq!(post_json(&gw, &body).await.text, "Invalid API key");
    gw.register_api_key(
        &key,
        ApiKeyGrant::new("billing").expires_at(SystemTime::now() - Duration::from_secs(1)),
    );
    assert_envelope(&post_json(&gw, &body).await, 401);
}
