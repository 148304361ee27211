//! Items 10-13: gRPC answers only for HTTP/2, `no-store` on every refusal, the RFC 6750
//! `invalid_request` challenge, no token passthrough, and a cache bounded in bytes.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::Full;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, TokenGrant, generate_token};
use tower_wacht::{ProtectedResourceMetadata, WachtAuthConfig, WachtAuthLayer};

use crate::common::{self, API_KEY, raw_request, start, start_gateway};
use crate::harness::{RecordingGreeter, grpc_frame, raw_h2, serve_grpc};

// 10. gRPC rendering only for HTTP/2; no-store everywhere ------------------------------------

#[tokio::test]
async fn an_http1_request_claiming_grpc_gets_an_http_refusal() {
    let app = start(|b| b.realm("attacked")).await;
    let raw = raw_request(
        app.addr,
        "POST /whoami HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("www-authenticate: bearer realm=\"attacked\""), "{raw}");
    assert!(lower.contains("content-type: application/problem+json"), "{raw}");
    assert!(lower.contains("cache-control: no-store"), "{raw}");
    assert!(!lower.contains("grpc-status"), "{raw}");
}

#[tokio::test]
async fn every_grpc_refusal_carries_no_store() {
    let gateway = start_gateway().await;
    let config = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .build()
        .unwrap();
    let greeter = RecordingGreeter::default();
    let addr = serve_grpc(
        WachtAuthLayer::new(config).unwrap(),
        crate::grpc_server::method_guard(),
        greeter.clone(),
    )
    .await;
    let token = generate_token();
    gateway.register(&token, TokenGrant::new("oc_noShout"));
    for (path, authorization, code) in [
        ("/greeter.v1.Greeter/SayHello", None, "16"),
        (
            "/greeter.v1.Greeter/SayHello",
            Some(format!("Bearer {}", generate_token())),
            "16",
        ),
        ("/greeter.v1.Greeter/Shout", Some(format!("Bearer {token}")), "7"),
    ] {
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(value) = &authorization {
            request = request.header("authorization", value.as_str());
        }
        let raw = raw_h2(addr, request.body(Full::new(grpc_frame("Ada"))).unwrap()).await;
        assert_eq!(raw.grpc_status(), Some(code), "{raw:?}");
        assert_eq!(raw.header("cache-control"), Some("no-store"), "{raw:?}");
    }
    assert_eq!(greeter.0.total(), 0);
}

// 11. invalid_request challenge ------------------------------------------------------------

#[tokio::test]
async fn repeated_authorization_headers_get_an_invalid_request_challenge() {
    let metadata = ProtectedResourceMetadata::builder(common::RESOURCE)
        .authorization_server("https://auth.example.com")
        .build()
        .unwrap();
    let app = start(|b| b.realm("attacked").resource_metadata(metadata)).await;
    let (a, b) = (app.token(&[]), app.token(&[]));
    let raw = raw_request(
        app.addr,
        &format!(
            "GET /whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nAuthorization: Bearer {b}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    let challenge = raw
        .lines()
        .find_map(|l| l.strip_prefix("www-authenticate: "))
        .unwrap_or_else(|| panic!("no challenge: {raw}"));
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    for part in [
        "error=\"invalid_request\"",
        "realm=\"attacked\"",
        "resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/mcp\"",
    ] {
        assert!(challenge.contains(part), "{challenge}");
    }
    assert!(!raw.contains(&a) && !raw.contains(&b));
    assert_eq!(app.gateway.calls(), 0);
}

// 12. No token passthrough -----------------------------------------------------------------

/// What a handler that logs headers would see of the `Authorization` header.
async fn peek(headers: HeaderMap) -> String {
    match headers.get("authorization") {
        None => "absent".to_owned(),
        Some(v) if v.is_sensitive() => "present, sensitive".to_owned(),
        Some(_) => "present".to_owned(),
    }
}

#[tokio::test]
async fn handlers_cannot_read_the_token_by_default() {
    let gateway = start_gateway().await;
    for (keep, expected) in [(false, "absent"), (true, "present, sensitive")] {
        let config = WachtAuthConfig::builder()
            .gateway_url(gateway.url())
            .api_key(API_KEY)
            .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
            .optional(true)
            .keep_authorization_header(keep)
            .build()
            .unwrap();
        let auth = WachtAuthLayer::new(config).unwrap();
        let addr = common::serve(Router::new().route("/peek", get(peek)).layer(auth)).await;
        let token = generate_token();
        gateway.register(&token, TokenGrant::new("oc_peek"));
        let http = reqwest::Client::new();
        // The miss, then a cache hit.
        for _ in 0..2 {
            let resp = http
                .get(format!("http://{addr}/peek"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.text().await.unwrap(), expected, "keep = {keep}");
        }
    }
}

// 13. The cache is bounded in bytes ---------------------------------------------------------

#[tokio::test]
async fn large_principals_cannot_grow_the_cache_past_its_byte_budget() {
    const BUDGET: u64 = 2 * 1024 * 1024;
    let app = start(|b| b.max_cache_bytes(BUDGET).ttl(Duration::from_secs(600))).await;
    // Each grant carries about 60 KiB of distinct scope names (the gateway repeats them as
    // permissions and in its header map, and may answer up to 256 KiB per decision).
    let mut tokens = Vec::new();
    for t in 0..40 {
        let scopes: Vec<String> = (0..1000).map(|i| format!("scope:{t:03}:{i:0>50}")).collect();
        tokens.push(app.token_with(|g| g.scopes(scopes)));
    }
    for token in &tokens {
        assert_eq!(app.get("/whoami", Some(token)).await.status(), 200);
    }
    let verifier = app.auth.verifier();
    verifier.run_pending_tasks().await;
    assert!(
        verifier.cached_bytes() <= BUDGET,
        "{} bytes cached, budget {BUDGET}",
        verifier.cached_bytes()
    );
    assert!(verifier.cached_count() < 40, "{} entries", verifier.cached_count());
    // The default budget is documented and finite.
    let default = WachtAuthConfig::builder().expected_deployment_id(1).build().unwrap();
    assert_eq!(default.max_cache_bytes(), 64 * 1024 * 1024);
    let _ = Bytes::new();
}
