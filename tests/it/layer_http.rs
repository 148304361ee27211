//! The core layer over real loopback HTTP: Axum app + `WachtAuthLayer` + `FakeGateway`.

use crate::common;

use std::time::Duration;

use common::*;
use tower_wacht::testing::{Fault, TokenGrant, generate_token};

#[tokio::test]
async fn valid_token_reaches_the_handler_with_its_principal() {
    let app = start(|b| b).await;
    let token = app.token(&["projects:read", "projects:write"]);

    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(resp.status(), 200);
    let who: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(who["client_id"], "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl");
    assert_eq!(who["granted_resource"], ORG_URN);
    assert_eq!(who["scopes"], serde_json::json!(["projects:read", "projects:write"]));
    assert_eq!(
        who["permissions"],
        serde_json::json!([
            "org:projects:read",
            "org:projects:write",
            "projects:read",
            "projects:write"
        ])
    );
    assert_eq!(who["oauth_resource"], RESOURCE);
    assert_eq!(who["issuer"], "https://auth.example.com");
    assert_eq!(who["deployment_id"], "418223109876543489");
    assert_eq!(who["owner_user_id"], "432119876543210241");
    assert!(who["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(who["request_id"].as_str().unwrap().starts_with("req_"));
}

#[tokio::test]
async fn gateway_request_follows_the_protocol() {
    let app = start(|b| b.method("post").resource("/mcp")).await;
    let token = app.token(&["mcp:invoke"]);
    let resp = app
        .http
        .get(app.url("/whoami"))
        .header("authorization", format!("Bearer {token}"))
        .header("user-agent", "agent-007/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let requests = app.gateway.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.principal_type, "oauth_access_token");
    assert_eq!(r.method, "POST");
    assert_eq!(r.resource, "/mcp");
    assert_eq!(r.user_agent.as_deref(), Some("agent-007/1.0"));
    assert_eq!(r.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {API_KEY}").as_str()));
    assert_eq!(r.required_permissions, None);
    assert!(r.content_type.as_deref().unwrap_or("").starts_with("application/json"));
}

#[tokio::test]
async fn a_client_ip_hook_replaces_the_connection_address_sent_to_the_gateway() {
    // A trusted proxy's header, read by the application's hook.
    let app = start(|b| b.client_ip(|headers, _| headers.get("x-proxy-client")?.to_str().ok()?.parse().ok())).await;
    let send = |token: String, proxy_header: Option<&'static str>| {
        let mut req = app
            .http
            .get(app.url("/whoami"))
            .header("authorization", format!("Bearer {token}"));
        if let Some(value) = proxy_header {
            req = req.header("x-proxy-client", value);
        }
        req.send()
    };
    assert_eq!(send(app.token(&[]), Some("203.0.113.9")).await.unwrap().status(), 200);
    // No answer from the hook: the connection address, as without a hook.
    assert_eq!(send(app.token(&[]), None).await.unwrap().status(), 200);
    let ips: Vec<_> = app.gateway.requests().into_iter().map(|r| r.client_ip).collect();
    assert_eq!(ips, [Some("203.0.113.9".to_owned()), Some("127.0.0.1".to_owned())]);
}

#[tokio::test]
async fn missing_or_foreign_credentials_get_a_challenge_without_error() {
    let app = start(|b| b.realm("example")).await;
    for auth in [None, Some("Basic dXNlcjpwYXNz"), Some("DPoP abc")] {
        let resp = match auth {
            None => app.get("/whoami", None).await,
            Some(h) => app.get_with_header("/whoami", h).await,
        };
        assert_eq!(challenge(&resp), "Bearer realm=\"example\"", "{auth:?}");
        let problem = assert_problem(resp, 401, None).await;
        assert!(problem["error"].is_null());
    }
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn scheme_is_case_insensitive_and_spaces_are_flexible() {
    let app = start(|b| b).await;
    let token = app.token(&[]);
    for header in [
        format!("bearer {token}"),
        format!("BEARER    {token}"),
        format!("Bearer {token}"),
    ] {
        let resp = app.get_with_header("/whoami", &header).await;
        assert_eq!(resp.status(), 200, "{header}");
    }
    assert_eq!(app.gateway.calls(), 1, "one gateway call, then cache hits");
}

#[tokio::test]
async fn malformed_and_oversized_tokens_are_invalid_without_a_gateway_call() {
    let app = start(|b| b.max_token_len(64)).await;
    for header in [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer a,b",
        "Bearer \"quoted\"",
        "Bearer ===",
    ] {
        let resp = app.get_with_header("/whoami", header).await;
        assert!(challenge(&resp).contains("error=\"invalid_token\""), "{header}");
        assert_problem(resp, 401, None).await;
    }
    let long = "a".repeat(65);
    let resp = app.get_with_header("/whoami", &format!("Bearer {long}")).await;
    assert!(challenge(&resp).contains("error=\"invalid_token\""));
    assert_problem(resp, 401, Some(&long)).await;
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn repeated_authorization_headers_are_invalid_requests() {
    let app = start(|b| b).await;
    let token = app.token(&[]);
    let raw = raw_request(
        app.addr,
        &format!(
            "GET /whoami HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("invalid_request"), "{raw}");
    assert!(!raw.contains(&token));
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn gateway_401_is_invalid_token() {
    let app = start(|b| b).await;
    let unknown = generate_token();
    let resp = app.get("/whoami", Some(&unknown)).await;
    let c = challenge(&resp);
    assert!(c.starts_with("Bearer ") && c.contains("error=\"invalid_token\""), "{c}");
    assert_problem(resp, 401, Some(&unknown)).await;
}

#[tokio::test]
async fn gateway_rate_limit_is_429_with_retry_after_in_seconds() {
    let app = start(|b| b).await;
    let token = app.token(&[]);
    app.gateway
        .set_fault(Some(Fault::RateLimited { retry_after_ms: 60_000 }));
    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(resp.headers()["retry-after"], "60");
    assert!(resp.headers().get("www-authenticate").is_none());
    assert_problem(resp, 429, Some(&token)).await;

    app.gateway
        .set_fault(Some(Fault::RateLimited { retry_after_ms: 1_500 }));
    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(
        resp.headers()["retry-after"],
        "2",
        "milliseconds round up to whole seconds"
    );

    // Rate-limited answers are not cached: once the gateway allows, the token works.
    app.gateway.set_fault(None);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.gateway.calls(), 3);
}

#[tokio::test]
async fn real_rate_limit_rule_of_the_gateway_maps_to_429() {
    let app = start(|b| b.ttl(Duration::from_millis(1))).await;
    app.gateway.set_rate_limit(1, Duration::from_secs(30));
    let token = app.token(&[]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "30");
}

#[tokio::test]
async fn gateway_failures_fail_closed_with_503() {
    let app = start(|b| b.unavailable_retry_after(Duration::from_secs(7))).await;
    let token = app.token(&[]);
    let faults = [
        Fault::Status(500),
        Fault::Status(502),
        Fault::StatusPlain(503, "upstream down".into()),
        Fault::Status(400),
        Fault::Status(422),
        Fault::Status(404),
        Fault::GarbageBody,
        Fault::TruncatedBody,
        Fault::WrongContentType,
        Fault::AllowedWithoutIdentity,
        Fault::DropConnection,
        Fault::Hang,
    ];
    for fault in faults {
        app.gateway.set_fault(Some(fault.clone()));
        let started = std::time::Instant::now();
        let resp = app.get("/whoami", Some(&token)).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{fault:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            resp.headers().get("retry-after").map(|v| v.to_str().unwrap()),
            Some("7"),
            "{fault:?}"
        );
        assert!(
            resp.headers().get("www-authenticate").is_none(),
            "{fault:?}: 503 must not look like a bad token"
        );
        assert_problem(resp, 503, Some(&token)).await;
    }
    // Nothing was cached: the next good answer works at once.
    app.gateway.set_fault(None);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn unreachable_gateway_is_503() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let gateway = start_gateway().await;
    let app = start_with_gateway(gateway, |b| b.gateway_url(format!("http://127.0.0.1:{port}"))).await;
    let resp = app.get("/whoami", Some(&generate_token())).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn cache_entry_lives_no_longer_than_the_token() {
    let app = start(|b| b.ttl(Duration::from_secs(30))).await;
    let token = app.token_with(|g| g.scopes(["a"]).expires_in(Duration::from_millis(1500)));
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.gateway.calls(), 1, "second request served from cache");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    // The entry expired with the token, so the gateway is asked again and says 401.
    let resp = app.get("/whoami", Some(&token)).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn revocation_is_seen_after_the_ttl() {
    let app = start(|b| b.ttl(Duration::from_millis(300))).await;
    let token = app.token(&[]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    app.gateway.revoke(&token);
    assert_eq!(
        app.get("/whoami", Some(&token)).await.status(),
        200,
        "cached until the ttl passes"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
}

#[tokio::test]
async fn invalidate_makes_revocation_visible_at_once() {
    let app = start(|b| b.ttl(Duration::from_secs(60))).await;
    let token = app.token(&[]);
    let other = app.token(&[]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.get("/whoami", Some(&other)).await.status(), 200);
    app.gateway.revoke(&token);
    app.auth.invalidate(&token).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
    // Other tokens stay cached.
    assert_eq!(app.get("/whoami", Some(&other)).await.status(), 200);
    assert_eq!(app.gateway.calls(), 3);

    app.gateway.revoke(&other);
    app.auth.invalidate_all().await;
    assert_eq!(app.get("/whoami", Some(&other)).await.status(), 401);
}

#[tokio::test]
async fn gateway_401s_are_remembered_briefly() {
    let app = start(|b| b.negative_ttl(Duration::from_millis(300))).await;
    let token = generate_token();
    for _ in 0..5 {
        assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
    }
    assert_eq!(app.gateway.calls(), 1, "the negative cache answers repeats");
    // Once the negative entry expires, a token that became valid works.
    app.gateway
        .register(&token, tower_wacht::testing::TokenGrant::new("oc_late"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn pinning_rejects_other_deployments_issuers_and_audiences() {
    let app = start(|b| {
        b.expected_deployment_id(418223109876543489)
            .expected_issuer("https://auth.example.com")
            .expected_audience(RESOURCE)
    })
    .await;
    let good = app.token(&[]);
    assert_eq!(app.get("/whoami", Some(&good)).await.status(), 200);

    let other_deployment = app.token_with(|g| g.deployment_id(1));
    let other_issuer = app.token_with(|g| g.issuer("https://evil.example.com"));
    let other_audience = app.token_with(|g| g.oauth_resource("https://other.example.com/mcp"));
    let no_audience = app.token_with(|_| TokenGrant::new("oc_x").granted_resource(ORG_URN));
    for token in [&other_deployment, &other_issuer, &other_audience, &no_audience] {
        let resp = app.get("/whoami", Some(token)).await;
        assert!(challenge(&resp).contains("error=\"invalid_token\""));
        assert_problem(resp, 401, Some(token)).await;
    }
    // A mismatch is remembered like a gateway 401.
    let before = app.gateway.calls();
    assert_eq!(app.get("/whoami", Some(&other_audience)).await.status(), 401);
    assert_eq!(app.gateway.calls(), before);
}

#[tokio::test]
async fn optional_mode_lets_anonymous_requests_through_but_not_bad_tokens() {
    let app = start(|b| b.optional(true)).await;
    let resp = app.get("/public", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello anonymous");

    let token = app.token(&[]);
    let resp = app.get("/public", Some(&token)).await;
    assert_eq!(resp.text().await.unwrap(), "hello oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl");

    // A handler that requires a principal still refuses anonymous callers, with a challenge.
    let resp = app.get("/whoami", None).await;
    assert_eq!(resp.status(), 401);
    assert!(challenge(&resp).starts_with("Bearer "));
    assert!(!challenge(&resp).contains("error="));

    // A present but bad token is rejected even on the public route.
    let resp = app.get("/public", Some(&generate_token())).await;
    assert_eq!(resp.status(), 401);
    let resp = app.get_with_header("/public", "Bearer bad token").await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn guards_check_permissions_locally() {
    // One reported route: rate-limit metering learns the rules of no second route (which
    // would ask the gateway once), so every call counted here is a token's first check.
    let app = start(|b| b.report_fixed(http::Method::GET, "/")).await;
    let invoker = app.token(&["mcp:invoke"]);
    let reader = app.token(&["projects:read"]);

    let resp = app
        .http
        .post(app.url("/tools/invoke"))
        .bearer_auth(&invoker)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = app
        .http
        .post(app.url("/tools/invoke"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let c = challenge(&resp);
    assert!(
        c.starts_with("Bearer scope=\"mcp:invoke projects:read\", error=\"insufficient_scope\""),
        "required scope first, then granted: {c}"
    );
    assert_problem(resp, 403, Some(&reader)).await;

    // any-of: the mapped org permission satisfies it; mcp:invoke alone does not.
    assert_eq!(app.get("/reports", Some(&reader)).await.status(), 200);
    let resp = app.get("/reports", Some(&invoker)).await;
    assert_eq!(resp.status(), 403);
    // An any-of rule asks for its first alternative only (then what the token has).
    assert!(challenge(&resp).contains("scope=\"reports:read mcp:invoke\""));

    // Guards never call the gateway: 2 tokens, 2 calls.
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn a_scope_hierarchy_lets_broader_permissions_satisfy_narrower_requirements() {
    use tower_wacht::scopes::ScopeHierarchy;
    let app = start(|b| {
        b.scope_hierarchy(
            ScopeHierarchy::new()
                .implies("mcp:admin", ["mcp:invoke"])
                .implies("org:admin", ["org:projects:read"])
                .wildcards(),
        )
    })
    .await;
    let invoke = |token: String| {
        let req = app.http.post(app.url("/tools/invoke")).bearer_auth(token);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(invoke(app.token(&["mcp:admin"])).await.status(), 200, "implied");
    assert_eq!(invoke(app.token(&["mcp:*"])).await.status(), 200, "wildcard");
    let resp = invoke(app.token(&["projects:read"])).await;
    assert_eq!(resp.status(), 403);
    assert!(
        challenge(&resp).starts_with("Bearer scope=\"mcp:invoke projects:read\""),
        "the challenge names what the operation needs, not the broader scope: {}",
        challenge(&resp)
    );
    // any-of through a transitive implication.
    assert_eq!(
        app.get("/reports", Some(&app.token(&["org:admin"]))).await.status(),
        200
    );
    assert_eq!(
        app.get("/reports", Some(&app.token(&["mcp:admin"]))).await.status(),
        403
    );
    // Without a hierarchy, the broader scope does not count.
    let plain = start(|b| b).await;
    let resp = plain
        .http
        .post(plain.url("/tools/invoke"))
        .bearer_auth(plain.token(&["mcp:admin"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn concurrent_requests_with_one_new_token_make_one_gateway_call() {
    let app = start(|b| b).await;
    app.gateway.set_fault(Some(Fault::Latency(Duration::from_millis(200))));
    let token = app.token(&["mcp:invoke"]);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let http = app.http.clone();
        let url = app.url("/whoami");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            http.get(url).bearer_auth(token).send().await.map(|r| r.status())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn the_layer_wrapped_around_a_whole_app_serves_like_router_layer() {
    use axum::{ServiceExt, extract::Request, middleware::ResponseAxumBodyLayer, routing::get};
    use tower::ServiceBuilder;
    use tower_wacht::{Principal, WachtAuthConfig, WachtAuthLayer};

    // The construction documented on `WachtAuthLayer`: one layer around the whole Router.
    let gateway = start_gateway().await;
    let config = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(API_KEY)
        .expected_deployment_id(tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID)
        .build()
        .expect("valid config");
    let auth = WachtAuthLayer::new(config).expect("layer builds");
    let router = axum::Router::new().route("/whoami", get(|p: Principal| async move { p.client_id().to_string() }));
    let app = ServiceBuilder::new()
        .layer(ResponseAxumBodyLayer)
        .layer(auth)
        .service(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await;
    });

    let token = generate_token();
    gateway.register(
        &token,
        TokenGrant::new("oc_wholeApp").expires_in(Duration::from_secs(60)),
    );
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/whoami");
    let ok = http.get(&url).bearer_auth(&token).send().await.expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), "oc_wholeApp");
    // Unknown paths are behind the layer too: no token, 401 with a challenge.
    let anonymous = http
        .get(format!("http://{addr}/elsewhere"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn a_handler_returning_an_auth_error_gets_the_layers_challenge() {
    use axum::routing::get;
    use tower_wacht::{AuthError, Principal, ProtectedResourceMetadata};

    let metadata = ProtectedResourceMetadata::builder(RESOURCE)
        .authorization_server("https://auth.example.com")
        .build()
        .expect("metadata");
    let gateway = start_gateway().await;
    let config = tower_wacht::WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(API_KEY)
        .expected_deployment_id(tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID)
        .realm("handlers")
        .resource_metadata(metadata)
        .build()
        .expect("valid config");
    let auth = tower_wacht::WachtAuthLayer::new(config).expect("layer builds");
    // A handler deciding on its own that the token lacks a permission.
    let app = axum::Router::new()
        .route(
            "/admin",
            get(|p: Principal| async move {
                p.has_permission("admin")
                    .then_some("admin")
                    .ok_or(AuthError::InsufficientScope {
                        required: vec!["admin".into()],
                        granted: p.scopes().iter().map(str::to_owned).collect(),
                    })
            }),
        )
        .layer(auth);
    let addr = serve(app).await;
    let token = generate_token();
    gateway.register(
        &token,
        TokenGrant::new("oc_handler")
            .scopes(["projects:read"])
            .oauth_resource(RESOURCE),
    );
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/admin"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    let challenge = challenge(&resp);
    for part in [
        "resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/mcp\"",
        "scope=\"admin projects:read\"",
        "error=\"insufficient_scope\"",
        "realm=\"handlers\"",
    ] {
        assert!(challenge.contains(part), "{challenge}");
    }
    assert_problem(resp, 403, Some(&token)).await;
}

/// MCP: a 401 SHOULD name the scopes to ask for. Without `challenge_scopes`, the challenge
/// names the metadata's `scopes_supported` (what a client would fall back to); an explicit
/// `challenge_scopes` wins.
#[tokio::test]
async fn a_401_names_the_metadatas_scopes_unless_challenge_scopes_says_otherwise() {
    use tower_wacht::ProtectedResourceMetadata;

    let gateway = start_gateway().await;
    let metadata = ProtectedResourceMetadata::builder(RESOURCE)
        .authorization_server("https://auth.example.com")
        .scopes_supported(["projects:read", "projects:write"])
        .build()
        .expect("metadata");
    let builder = || {
        tower_wacht::WachtAuthConfig::builder()
            .gateway_url(gateway.url())
            .api_key(API_KEY)
            .expected_deployment_id(tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID)
            .resource_metadata(metadata.clone())
    };
    for (config, expected) in [
        (builder().build(), "scope=\"projects:read projects:write\""),
        (
            builder().challenge_scopes(["projects:read"]).build(),
            "scope=\"projects:read\"",
        ),
    ] {
        let auth = tower_wacht::WachtAuthLayer::new(config.expect("valid config")).expect("layer builds");
        let app = axum::Router::new()
            .route("/mcp", axum::routing::post(|| async { "served" }))
            .layer(auth);
        let addr = serve(app).await;
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/mcp"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401);
        let challenge = challenge(&resp);
        assert!(challenge.contains(expected), "{challenge}");
        assert!(!challenge.contains("error="), "no token, no error code: {challenge}");
    }
}
