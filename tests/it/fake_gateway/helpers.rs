//! What the sections share: sending check calls, the protocol reference's example token and
//! answers, envelope assertions and raw HTTP/1.1 exchanges.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_wacht::testing::*;

pub(crate) const CLIENT_ID: &str = "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl";
pub(crate) const ORG_URN: &str = "urn:wacht:organization:427001234567890561";
pub(crate) const EXPIRES_AT: &str = "2099-06-29T14:05:11.482913Z";

/// Answer of one check call.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    pub(crate) text: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Answer {
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

pub(crate) fn check_url(gw: &FakeGateway) -> String {
    format!("{}/v1/authz/check", gw.url())
}

pub(crate) async fn post_json(gw: &FakeGateway, body: &Value) -> Answer {
    send(client().post(check_url(gw)).json(body)).await
}

pub(crate) async fn post_raw(gw: &FakeGateway, content_type: Option<&str>, body: &str) -> Answer {
    let mut request = client().post(check_url(gw)).body(body.to_owned());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    send(request).await
}

pub(crate) fn check_body(token: &str, required: Option<&[&str]>) -> Value {
    json!({
        "principal": { "type": "oauth_access_token", "value": token },
        "resource": "/v1/projects?limit=20",
        "method": "get",
        "client_ip": "203.0.113.7",
        "user_agent": "curl/8.5.0",
        "required_permissions": required,
    })
}

pub(crate) fn example_expiry() -> SystemTime {
    let at = time::OffsetDateTime::parse(EXPIRES_AT, &time::format_description::well_known::Rfc3339).unwrap();
    SystemTime::from(at)
}

/// The protocol reference's example token (section 3.5).
pub(crate) fn example_grant() -> TokenGrant {
    TokenGrant::new(CLIENT_ID)
        .scopes(["projects:read", "projects:write"])
        .granted_resource(ORG_URN)
        .oauth_resource("https://api.example.com")
        .expires_at(example_expiry())
}

/// A gateway with the example scope definitions and one registered example token.
pub(crate) async fn example_gateway() -> (FakeGateway, String) {
    let gw = FakeGateway::start().await.unwrap();
    gw.set_scope_definitions(vec![
        ScopeDefinition::organization("projects:read", "org:projects:read"),
        ScopeDefinition::organization("projects:write", "org:projects:write"),
    ]);
    let token = generate_token();
    gw.register(&token, example_grant());
    (gw, token)
}

pub(crate) fn example_identity() -> Value {
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

pub(crate) fn example_metadata() -> Value {
    json!({
        "principal_type": "oauth_access_token",
        "scopes": ["projects:read", "projects:write"],
        "oauth_resource": "https://api.example.com",
        "granted_resource": ORG_URN,
        "expires_at": EXPIRES_AT
    })
}

pub(crate) fn example_permissions() -> Value {
    json!([
        "org:projects:read",
        "org:projects:write",
        "projects:read",
        "projects:write"
    ])
}

pub(crate) fn example_headers() -> serde_json::Map<String, Value> {
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
pub(crate) fn normalize_request_id(value: &mut Value) -> u64 {
    let id = value["request_id"].as_str().unwrap().to_owned();
    let digits = id.strip_prefix("req_").unwrap();
    let number: u64 = digits.parse().unwrap();
    value["request_id"] = json!("req_X");
    number
}

pub(crate) fn envelope() -> Value {
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

pub(crate) fn assert_envelope(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "body: {}", answer.text);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let mut body = answer.json();
    normalize_request_id(&mut body);
    assert_eq!(body, envelope());
    // Field order on the wire is the documented one.
    assert!(answer.text.starts_with("{\"request_id\":\"req_"));
}

pub(crate) fn assert_plain(answer: &Answer, status: u16, prefix: &str) {
    assert_eq!(answer.status, status, "body: {}", answer.text);
    assert_eq!(answer.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert!(
        answer.text.starts_with(prefix),
        "{:?} does not start with {prefix:?}",
        answer.text
    );
}

/// Sends raw bytes on a fresh connection and reads until the server closes it (or 5 s).
pub(crate) async fn raw_exchange(gw: &FakeGateway, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .unwrap();
    out
}

pub(crate) fn raw_check_request(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /v1/authz/check HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Splits a raw HTTP/1.1 response into (head, body).
pub(crate) fn split_response(raw: &[u8]) -> (String, Vec<u8>) {
    let pos = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    (
        String::from_utf8(raw[..pos].to_vec()).unwrap().to_lowercase(),
        raw[pos + 4..].to_vec(),
    )
}

pub(crate) fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("no content-length")
        .trim()
        .parse()
        .unwrap()
}
