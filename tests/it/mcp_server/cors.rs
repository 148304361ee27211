//! Browser clients against the example: `McpCorsLayer` in front of the auth layer answers a
//! preflight to `/mcp` from an allowed origin (loopback, where the MCP Inspector runs) without
//! a token, and every answer to such a page, the layer's refusals included, is readable:
//! `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers: WWW-Authenticate, …`.
//! Other origins get no allowance. rmcp's own `Origin` check serves every origin CORS allows.

use reqwest::Method;
use serde_json::{Value, json};
use tower_wacht::testing::Fault;

use super::{Server, bounded, call_body, challenge, initialize_body};

/// Where the MCP Inspector's web page runs.
const INSPECTOR: &str = "http://localhost:6274";
/// Every header an MCP client may ask a preflight for.
const MCP_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "mcp-protocol-version",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "mcp-param-region",
];

impl Server {
    /// A browser's preflight for a POST to `/mcp` from `origin`, asking for `headers`.
    async fn preflight(&self, origin: &str, headers: &str) -> reqwest::Response {
        let request = self
            .http
            .request(Method::OPTIONS, &self.resource)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers);
        bounded("preflight", request.send()).await.expect("an answer")
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn list(resp: &reqwest::Response, name: &str) -> Vec<String> {
    header(resp, name)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The allowance a page on `origin` needs to read an answer, challenge included.
#[track_caller]
fn assert_readable(resp: &reqwest::Response, origin: &str, what: &str) {
    assert_eq!(header(resp, "access-control-allow-origin"), Some(origin), "{what}");
    let exposed = list(resp, "access-control-expose-headers");
    for needed in [
        "www-authenticate",
        "mcp-session-id",
        "mcp-protocol-version",
        "retry-after",
    ] {
        assert!(
            exposed.iter().any(|e| e == needed),
            "{what}: {needed} not exposed: {exposed:?}"
        );
    }
    assert!(
        list(resp, "vary").iter().any(|v| v == "origin"),
        "{what}: no Vary: Origin"
    );
    assert!(header(resp, "access-control-allow-credentials").is_none(), "{what}");
}

#[tokio::test]
async fn a_browser_preflight_to_mcp_from_an_allowed_origin_is_answered_without_a_token() {
    let server = Server::start().await;
    let resp = server.preflight(INSPECTOR, &MCP_HEADERS.join(", ")).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(INSPECTOR));
    let methods = list(&resp, "access-control-allow-methods");
    for method in ["post", "get", "delete"] {
        assert!(methods.iter().any(|m| m == method), "{methods:?}");
    }
    assert_eq!(list(&resp, "access-control-allow-headers"), MCP_HEADERS);
    assert!(header(&resp, "access-control-max-age").is_some());
    assert!(list(&resp, "vary").iter().any(|v| v == "origin"));
    assert!(resp.headers().get("www-authenticate").is_none());
    assert!(resp.bytes().await.unwrap().is_empty());

    // A header no MCP client sends is left out: the browser then refuses to send it.
    let resp = server.preflight(INSPECTOR, "authorization, x-smuggled").await;
    assert_eq!(resp.status(), 204);
    assert_eq!(list(&resp, "access-control-allow-headers"), ["authorization"]);

    // Private Network Access (a page on a public site calling a server on this machine).
    let request = server
        .http
        .request(Method::OPTIONS, &server.resource)
        .header("origin", "http://127.0.0.1:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-private-network", "true");
    let resp = bounded("preflight", request.send()).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-private-network"), Some("true"));

    // The metadata document too: the allowed origin is named instead of `*`.
    let request = server
        .http
        .request(Method::OPTIONS, server.metadata_url())
        .header("origin", INSPECTOR)
        .header("access-control-request-method", "GET");
    let resp = bounded("preflight", request.send()).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(INSPECTOR));

    assert_eq!(server.demo.gateway.calls(), 0, "no token was looked at");
}

#[tokio::test]
async fn a_cross_origin_401_is_readable_by_the_page() {
    let server = Server::start().await;
    let resp = server.post_from(Some(INSPECTOR), None, &initialize_body()).await;
    assert_eq!(resp.status(), 401);
    assert_readable(&resp, INSPECTOR, "401");
    assert_eq!(challenge(&resp), server.no_token_challenge());
}

#[tokio::test]
async fn every_answer_to_an_allowed_origin_carries_the_allowance() {
    let server = Server::start().await;
    let (agent, reader) = (server.demo.agent.clone(), server.demo.reader.clone());
    let gateway = &server.demo.gateway;
    // (what, token, body, status)
    let cases: [(&str, Option<&str>, Value, u16); 5] = [
        ("200", Some(&agent), initialize_body(), 200),
        (
            "403 from the tool guard",
            Some(&reader),
            call_body(2, "archive_project", json!({"project_id": "prj_apollo"})),
            403,
        ),
        (
            "403 asked for by the tool",
            Some(&reader),
            call_body(3, "read_project", json!({"project_id": "prj_mercury"})),
            403,
        ),
        ("401 invalid_token", Some(&server.demo.foreign), initialize_body(), 401),
        ("401 without a token", None, initialize_body(), 401),
    ];
    for (what, token, body, status) in cases {
        let resp = server.post_from(Some(INSPECTOR), token, &body).await;
        assert_eq!(resp.status(), status, "{what}");
        assert_readable(&resp, INSPECTOR, what);
    }
    // The gateway rate-limits, then is down: fresh tokens, so that the gateway is asked.
    for (what, fault, status) in [
        ("429", Fault::RateLimited { retry_after_ms: 2_000 }, 429),
        ("503", Fault::Status(503), 503),
    ] {
        gateway.set_fault(Some(fault));
        let token = server.token(
            "oc_corsFreshToken00000000000000001",
            &["projects:read"],
            Some(&server.resource),
        );
        let resp = server
            .post_from(Some(INSPECTOR), Some(&token), &initialize_body())
            .await;
        assert_eq!(resp.status(), status, "{what}");
        assert!(header(&resp, "retry-after").is_some(), "{what}");
        assert_readable(&resp, INSPECTOR, what);
    }
    gateway.set_fault(None);
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_allowance() {
    let server = Server::start().await;
    for origin in ["https://evil.example", "http://localhost.evil.example:3000", "null"] {
        // The preflight goes on to the auth layer, which refuses it without a token.
        let resp = server.preflight(origin, "authorization").await;
        assert_eq!(resp.status(), 401, "{origin}");
        assert!(header(&resp, "access-control-allow-origin").is_none(), "{origin}");
        assert!(header(&resp, "access-control-allow-headers").is_none(), "{origin}");
        // A refusal and a served request alike carry no allowance.
        let refused = server.post_from(Some(origin), None, &initialize_body()).await;
        assert_eq!(refused.status(), 401, "{origin}");
        let served = server
            .post_from(Some(origin), Some(&server.demo.agent), &initialize_body())
            .await;
        assert_eq!(served.status(), 403, "{origin}: rmcp refuses the origin too");
        for resp in [&refused, &served] {
            assert!(header(resp, "access-control-allow-origin").is_none(), "{origin}");
            assert!(header(resp, "access-control-expose-headers").is_none(), "{origin}");
            assert!(list(resp, "vary").iter().any(|v| v == "origin"), "{origin}");
        }
    }
}

#[tokio::test]
async fn rmcp_serves_every_origin_cors_allows() {
    let server = Server::start().await;
    let own = format!("http://{}", server.addr);
    for origin in [
        INSPECTOR,
        "http://127.0.0.1:5173",
        "http://[::1]:8080",
        "http://LOCALHOST:6274",
        own.as_str(),
    ] {
        let resp = server
            .post_from(Some(origin), Some(&server.demo.agent), &initialize_body())
            .await;
        assert_eq!(resp.status(), 200, "{origin}");
        assert_readable(&resp, origin, origin);
    }
}
