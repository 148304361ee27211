//! Protocol tests of the `FakeGateway` test double, over real loopback HTTP.
#![cfg(feature = "test-util")]

use tower_wacht::testing::*;

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENT_ID: &str = "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl";
const ORG_URN: &str = "urn:wacht:organization:427001234567890561";
const EXPIRES_AT: &str = "2099-06-29T14:05:11.482913Z";

/// Answer of one check call.
struct Answer {
    status: u16,
    content_type: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    Answer {
        status,
        content_type,
        text,
    }
}

fn check_url(gw: &FakeGateway) -> String {
    format!("{}/v1/authz/check", gw.url())
}

async fn post_json(gw: &FakeGateway, body: &Value) -> Answer {
    send(client().post(check_url(gw)).json(body)).await
}

async fn post_raw(gw: &FakeGateway, content_type: Option<&str>, body: &str) -> Answer {
    let mut request = client().post(check_url(gw)).body(body.to_owned());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    send(request).await
}

fn check_body(token: &str, required: Option<&[&str]>) -> Value {
    json!({
        "principal": { "type": "oauth_access_token", "value": token },
        "resource": "/v1/projects?limit=20",
        "method": "get",
        "client_ip": "203.0.113.7",
        "user_agent": "curl/8.5.0",
        "required_permissions": required,
    })
}

fn example_expiry() -> SystemTime {
    let at = time::OffsetDateTime::parse(EXPIRES_AT, &time::format_description::well_known::Rfc3339).unwrap();
    SystemTime::from(at)
}

/// The protocol reference's example token (section 3.5).
fn example_grant() -> TokenGrant {
    TokenGrant::new(CLIENT_ID)
        .scopes(["projects:read", "projects:write"])
        .granted_resource(ORG_URN)
        .oauth_resource("https://api.example.com")
        .expires_at(example_expiry())
}

/// A gateway with the example scope definitions and one registered example token.
async fn example_gateway() -> (FakeGateway, String) {
    let gw = FakeGateway::start().await.unwrap();
    gw.set_scope_definitions(vec![
        ScopeDefinition::organization("projects:read", "org:projects:read"),
        ScopeDefinition::organization("projects:write", "org:projects:write"),
    ]);
    let token = generate_token();
    gw.register(&token, example_grant());
    (gw, token)
}

fn example_identity() -> Value {
    json!({
        "key_id": "445566778899001122",
        "deployment_id": "418223109876543489",
        "app_slug": "oauth_432119876543210241",
        "key_name": CLIENT_ID,
        "owner_user_id": "432119876543210241",
        "organization_id": null,
        "workspace_id": null,
        "organization_membership_id": null,
        "workspace_membership_id": null
    })
}

fn example_metadata() -> Value {
    json!({
        "principal_type": "oauth_access_token",
        "scopes": ["projects:read", "projects:write"],
        "oauth_resource": "https://api.example.com",
        "granted_resource": ORG_URN,
        "expires_at": EXPIRES_AT
    })
}

fn example_permissions() -> Value {
    json!([
        "org:projects:read",
        "org:projects:write",
        "projects:read",
        "projects:write"
    ])
}

fn example_headers() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "x-wacht-principal-type": "oauth_access_token",
        "x-wacht-deployment-id": "418223109876543489",
        "x-wacht-app-slug": "oauth_432119876543210241",
        "x-wacht-oauth-client-id": CLIENT_ID,
        "x-wacht-oauth-issuer": "https://auth.example.com",
        "x-wacht-granted-resource": ORG_URN,
        "x-wacht-oauth-audience": ORG_URN,
        "x-wacht-oauth-resource": "https://api.example.com",
        "x-wacht-scopes": "projects:read,projects:write",
        "x-wacht-permissions": "org:projects:read,org:projects:write,projects:read,projects:write"
    }) else {
        unreachable!()
    };
    map
}

/// Asserts `request_id` is `req_<digits>` and replaces it with a fixed value.
fn normalize_request_id(value: &mut Value) -> u64 {
    let id = value["request_id"].as_str().unwrap().to_owned();
    let digits = id.strip_prefix("req_").unwrap();
    let number: u64 = digits.parse().unwrap();
    value["request_id"] = json!("req_X");
    number
}

fn envelope() -> Value {
    json!({
        "request_id": "req_X",
        "allowed": false,
        "reason": null,
        "blocked_rule": null,
        "identity": null,
        "permissions": [],
        "metadata": null,
        "rate_limits": [],
        "retry_after": null,
        "headers": {}
    })
}

fn assert_envelope(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "body: {}", answer.text);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let mut body = answer.json();
    normalize_request_id(&mut body);
    assert_eq!(body, envelope());
    // Field order on the wire is the documented one.
    assert!(answer.text.starts_with("{\"request_id\":\"req_"));
}

fn assert_plain(answer: &Answer, status: u16, prefix: &str) {
    assert_eq!(answer.status, status, "body: {}", answer.text);
    assert_eq!(answer.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert!(
        answer.text.starts_with(prefix),
        "{:?} does not start with {prefix:?}",
        answer.text
    );
}

/// Sends raw bytes on a fresh connection and reads until the server closes it (or 5 s).
async fn raw_exchange(gw: &FakeGateway, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .unwrap();
    out
}

fn raw_check_request(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /v1/authz/check HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Splits a raw HTTP/1.1 response into (head, body).
fn split_response(raw: &[u8]) -> (String, Vec<u8>) {
    let pos = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    (
        String::from_utf8(raw[..pos].to_vec()).unwrap().to_lowercase(),
        raw[pos + 4..].to_vec(),
    )
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("no content-length")
        .trim()
        .parse()
        .unwrap()
}

// ------------------------------------------------------------------------------------------
// Routes
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_unknown_path_and_wrong_method() {
    let gw = FakeGateway::start().await.unwrap();
    assert!(gw.url().starts_with("http://127.0.0.1:"));
    assert!(!gw.url().ends_with('/'));
    assert_eq!(gw.url(), format!("http://{}", gw.addr()));

    let health = send(client().get(format!("{}/health", gw.url()))).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text, "OK");

    let missing = send(client().get(format!("{}/v1/nope", gw.url()))).await;
    assert_eq!(missing.status, 404);

    let wrong = send(client().get(check_url(&gw))).await;
    assert_eq!(wrong.status, 405);
    let wrong = send(client().put(check_url(&gw))).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(gw.calls(), 0, "only POST /v1/authz/check counts");
}

// ------------------------------------------------------------------------------------------
// 200 decisions
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Error envelopes and extractor rejections
// ------------------------------------------------------------------------------------------

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
async fn api_keys_are_not_modelled() {
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

// ------------------------------------------------------------------------------------------
// Observation helpers
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn calls_and_recorded_requests() {
    let (gw, token) = example_gateway().await;
    assert_eq!(gw.calls(), 0);
    let response = client()
        .post(check_url(&gw))
        .header("authorization", "Bearer wacht_backend_key")
        .header("user-agent", "tower-wacht-test")
        .json(&json!({
            "principal": { "type": "oauth_access_token", "value": token },
            "resource": "/v1/a",
            "method": "POST",
            "client_ip": null,
            "user_agent": null,
            "required_permissions": null,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    post_json(&gw, &check_body("oat_unknown", None)).await;
    post_raw(&gw, None, "x").await;
    send(client().get(format!("{}/health", gw.url()))).await;
    assert_eq!(gw.calls(), 3);

    let recorded = gw.requests();
    assert_eq!(recorded.len(), 2);
    let first = &recorded[0];
    assert_eq!(first.authorization.as_deref(), Some("Bearer wacht_backend_key"));
    assert_eq!(first.headers["user-agent"], "tower-wacht-test");
    assert_eq!(first.method, "POST");
    assert_eq!(first.client_ip, None);
    assert_eq!(first.user_agent, None);
    assert_eq!(first.required_permissions, None);
    assert_eq!(recorded[1].token_sha256, hash_token("oat_unknown"));

    gw.reset_calls();
    assert_eq!(gw.calls(), 0);
    gw.clear_requests();
    assert!(gw.requests().is_empty());
}

#[tokio::test]
async fn handles_are_shared_clones() {
    let (gw, token) = example_gateway().await;
    let other = gw.clone();
    post_json(&other, &check_body(&token, None)).await;
    assert_eq!(gw.calls(), 1);
    drop(other);
    // The server keeps running while a handle remains.
    assert_eq!(post_json(&gw, &check_body(&token, None)).await.status, 200);
    assert!(format!("{gw:?}").contains("FakeGateway"));
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let (gw, token) = example_gateway().await;
    let body = check_body(&token, None).to_string();
    let request = format!(
        "POST /v1/authz/check HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        // Read one complete response (headers plus Content-Length bytes).
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed");
            received.extend_from_slice(&buf[..n]);
            if let Some(pos) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let (head, _) = split_response(&received);
                if received.len() >= pos + 4 + content_length(&head) {
                    break;
                }
            }
        }
        assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    assert_eq!(gw.calls(), 2);
}

#[tokio::test]
async fn generated_credentials_have_the_right_shape() {
    let base64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let token = generate_token();
        let rest = token.strip_prefix("oat_").unwrap();
        assert_eq!(rest.len(), 43);
        assert!(base64url(rest));
        assert!(seen.insert(token));
        let client = generate_client_id();
        let rest = client.strip_prefix("oc_").unwrap();
        assert_eq!(rest.len(), 32);
        assert!(base64url(rest));
        assert!(seen.insert(client));
    }
}

#[tokio::test]
async fn shutdown_stops_listener_and_connections() {
    let (gw, token) = example_gateway().await;
    let addr = gw.addr();
    let other = gw.clone();
    gw.set_fault(Some(Fault::Hang));
    let hung = tokio::spawn({
        let url = check_url(&gw);
        let body = check_body(&token, None);
        async move { client().post(url).json(&body).send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(2), gw.shutdown())
        .await
        .expect("shutdown hung");
    // The hanging request's connection was closed.
    let result = tokio::time::timeout(Duration::from_secs(2), hung)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err());
    assert!(TcpStream::connect(addr).await.is_err());
    drop(other);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let gw = FakeGateway::start().await.unwrap();
    let addr = gw.addr();
    drop(gw);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------------------------------
// Faults
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn fault_latency_and_slow_headers() {
    let (gw, token) = example_gateway().await;
    for fault in [
        Fault::Latency(Duration::from_millis(200)),
        Fault::SlowHeaders(Duration::from_millis(200)),
    ] {
        gw.set_fault(Some(fault));
        let started = Instant::now();
        let answer = post_json(&gw, &check_body(&token, None)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["allowed"], json!(true));
    }
    gw.set_fault(None);
    let started = Instant::now();
    post_json(&gw, &check_body(&token, None)).await;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(gw.calls(), 3);
}

#[tokio::test]
async fn fault_status_and_status_plain() {
    let (gw, token) = example_gateway().await;
    for code in [500, 502, 503, 429, 401] {
        gw.set_fault(Some(Fault::Status(code)));
        assert_envelope(&post_json(&gw, &check_body(&token, None)).await, code);
    }
    // Faults win over extractor rejections too.
    assert_envelope(&post_raw(&gw, None, "garbage").await, 401);
    // Informational codes cannot be final answers: they become 500.
    gw.set_fault(Some(Fault::Status(101)));
    assert_envelope(&post_json(&gw, &check_body(&token, None)).await, 500);

    gw.set_fault(Some(Fault::StatusPlain(503, "upstream connect error".into())));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_plain(&answer, 503, "upstream connect error");
    assert_eq!(answer.text, "upstream connect error");
    assert_eq!(gw.calls(), 8);
    // Faulted requests whose body parsed are still recorded.
    assert_eq!(gw.requests().len(), 7);
}

#[tokio::test]
async fn fault_garbage_body() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::GarbageBody));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert!(serde_json::from_str::<Value>(&answer.text).is_err());
}

#[tokio::test]
async fn fault_truncated_body() {
    let (gw, token) = example_gateway().await;
    let full = post_json(&gw, &check_body(&token, None)).await.text;
    gw.set_fault(Some(Fault::TruncatedBody));
    let raw = raw_exchange(&gw, &raw_check_request(&check_body(&token, None))).await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("http/1.1 200"));
    assert!(head.contains("content-type: application/json"));
    assert_eq!(content_length(&head), body.len());
    assert!(body.len() >= full.len() / 2 - 5 && body.len() < full.len());
    assert!(body.starts_with(b"{\"request_id\":\"req_"));
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    // Unknown token: a synthetic decision is truncated instead.
    let answer = post_json(&gw, &check_body("oat_unknown", None)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text.starts_with("{\"request_id\":\"req_"));
    assert!(serde_json::from_str::<Value>(&answer.text).is_err());
}

#[tokio::test]
async fn fault_huge_body() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::HugeBody(300_000)));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.text.len(), 300_000);
    let value: Value = serde_json::from_str(&answer.text).unwrap();
    assert!(value.is_string());
}

#[tokio::test]
async fn fault_half_body_then_close() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::HalfBodyThenClose));
    let raw = raw_exchange(&gw, &raw_check_request(&check_body(&token, None))).await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("http/1.1 200"));
    let announced = content_length(&head);
    assert!(!body.is_empty());
    assert!(body.len() < announced, "{} < {announced}", body.len());
    assert!(body.starts_with(b"{\"request_id\":\"req_"));

    // A real client sees a body error.
    let response = client()
        .post(check_url(&gw))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn fault_slow_body() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::SlowBody(Duration::from_millis(300))));
    let started = Instant::now();
    let response = client()
        .post(check_url(&gw))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap();
    let head_after = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(head_after < Duration::from_millis(250), "{head_after:?}");
    let body: Value = response.json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["allowed"], json!(true));
}

#[tokio::test]
async fn fault_wrong_content_type() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::WrongContentType));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.content_type.as_deref().unwrap().starts_with("text/html"));
    let body = answer.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["identity"], example_identity());
}

#[tokio::test]
async fn fault_allowed_without_identity() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::AllowedWithoutIdentity));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let mut body = answer.json();
    normalize_request_id(&mut body);
    let mut expected = envelope();
    expected["allowed"] = json!(true);
    assert_eq!(body, expected);
}

#[tokio::test]
async fn fault_drop_connection() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::DropConnection));
    let raw = raw_exchange(&gw, &raw_check_request(&check_body(&token, None))).await;
    assert!(raw.is_empty(), "got {:?}", String::from_utf8_lossy(&raw));
    let err = client()
        .post(check_url(&gw))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout());
    assert_eq!(gw.calls(), 2);
    assert_eq!(gw.requests().len(), 2);
    gw.set_fault(None);
    assert_eq!(post_json(&gw, &check_body(&token, None)).await.status, 200);
}

#[tokio::test]
async fn fault_hang() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::Hang));
    let err = client()
        .post(check_url(&gw))
        .timeout(Duration::from_millis(200))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(gw.calls(), 1);
    gw.set_fault(None);
    assert_eq!(post_json(&gw, &check_body(&token, None)).await.status, 200);
}

#[tokio::test]
async fn fault_rate_limited() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::RateLimited { retry_after_ms: 1234 }));
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(false));
    assert_eq!(body["reason"], json!("rate_limited"));
    assert_eq!(body["blocked_rule"], json!("1000/60s"));
    assert_eq!(body["retry_after"], json!(1234));
    assert_eq!(
        body["rate_limits"],
        json!([{ "rule": "1000/60s", "remaining": 0, "limit": 1000 }])
    );
    assert_eq!(body["headers"]["x-ratelimit-60s-limit"], json!("1000"));
    assert_eq!(body["headers"]["x-ratelimit-60s-remaining"], json!("0"));
    assert_eq!(body["headers"]["x-ratelimit-60s-reset"], json!("1234"));
    assert_eq!(body["identity"], example_identity());

    // Unknown tokens still get 401; permission denial still wins.
    assert_envelope(&post_json(&gw, &check_body("oat_unknown", None)).await, 401);
    let denied = post_json(&gw, &check_body(&token, Some(&["nope"]))).await.json();
    assert_eq!(denied["reason"], json!("permission_denied"));

    gw.set_fault(None);
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["rate_limits"][0]["remaining"], json!(999));
}
