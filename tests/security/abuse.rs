//! Items 6-9: floods that would reach the gateway or grow memory without bound, tokens the
//! gateway can never accept, metric label floods, and MCP bodies the tool guard cannot read.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures_util::future::join_all;
use serde_json::Value;
use tower_wacht::testing::{Fault, generate_token};
use tower_wacht::{McpGuardLayer, Permissions, Principal};

use crate::common::{self, start};
use crate::harness::Runs;

// 6. A flood of random tokens -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_tokens_cannot_put_unbounded_calls_on_the_gateway() {
    // Generous timeouts: the gateway is slow, not down.
    let app = Arc::new(
        start(|b| {
            b.request_timeout(Duration::from_secs(30))
                .connect_timeout(Duration::from_secs(5))
        })
        .await,
    );
    let good = app.token(&["projects:read"]);
    assert_eq!(app.get("/whoami", Some(&good)).await.status(), 200);
    app.gateway.reset_calls();

    // Every unseen token costs a gateway call; the gateway now takes 5 s to answer.
    app.gateway.set_fault(Some(Fault::Latency(Duration::from_secs(5))));
    const FLOOD: usize = 320;
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let flood = (0..FLOOD).map(|_| {
        let (app, http) = (Arc::clone(&app), http.clone());
        tokio::spawn(async move {
            let resp = http
                .get(app.url("/whoami"))
                .bearer_auth(generate_token())
                .send()
                .await
                .expect("request completes");
            (resp.status().as_u16(), resp.headers().contains_key("retry-after"))
        })
    });
    let flood = tokio::spawn(join_all(flood));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // During the flood, a cached token is still served.
    assert_eq!(app.get("/whoami", Some(&good)).await.status(), 200);
    let answers: Vec<(u16, bool)> = flood.await.unwrap().into_iter().map(|r| r.unwrap()).collect();

    let refused = answers.iter().filter(|(status, _)| *status == 503).count();
    assert!(
        app.gateway.calls() <= 256,
        "{} gateway calls in flight at once (default cap 256)",
        app.gateway.calls()
    );
    assert!(refused >= FLOOD - 256, "only {refused} refused");
    assert!(
        answers.iter().all(|(status, _)| matches!(status, 401 | 503)),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|(status, _)| *status == 503)
            .all(|(_, retry)| *retry),
        "every 503 carries Retry-After"
    );
}

// 7. Tokens the gateway can never accept ---------------------------------------------------

#[tokio::test]
async fn a_jwt_shaped_token_is_refused_without_a_gateway_call() {
    let app = start(|b| b).await;
    for jwt in [
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
        "a.b.c",
    ] {
        let resp = app.get("/whoami", Some(jwt)).await;
        assert_eq!(resp.status(), 401, "{jwt}");
        assert!(common::challenge(&resp).contains("error=\"invalid_token\""), "{jwt}");
    }
    assert_eq!(
        app.gateway.calls(),
        0,
        "the gateway answers 401 for every JWT: never ask it"
    );
    // Opaque tokens still go to the gateway.
    assert_eq!(app.get("/whoami", Some(&generate_token())).await.status(), 401);
    assert_eq!(app.gateway.calls(), 1);
}

// 8. Metric label floods ---------------------------------------------------------------------

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_labels_stay_bounded_under_a_flood_of_clients() {
    use metrics_util::debugging::DebuggingRecorder;
    use tower_wacht::telemetry::{MAX_CLIENT_ID_LABELS, names};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder in this test binary");

    let app = start(|b| b).await;
    // Another tenant's clients (e.g. dynamically registered, with URL client ids).
    for i in 0..50 {
        let token = app.token_with(|_| {
            tower_wacht::testing::TokenGrant::new(format!("https://client{i}.evil.example/metadata.json"))
                .deployment_id(7)
        });
        assert_eq!(app.get("/whoami", Some(&token)).await.status(), 401);
    }
    // More clients of this tenant than there are label values.
    for i in 0..(MAX_CLIENT_ID_LABELS + 50) {
        let token = app.token_with(|g| {
            tower_wacht::testing::TokenGrant::new(format!("oc_flood{i:0>28}"))
                .granted_resource(common::ORG_URN)
                .scopes(g.scopes.clone())
        });
        let resp = app
            .http
            .post(app.url("/tools/invoke"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
    let mut values = std::collections::HashSet::new();
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        for label in key.key().labels().filter(|l| l.key() == "client_id") {
            assert!(
                !label.value().contains("evil.example"),
                "{name}: a foreign tenant's client id"
            );
            values.insert(label.value().to_owned());
        }
        let _ = names::PERMISSION_DENIED;
    }
    assert!(
        values.len() <= MAX_CLIENT_ID_LABELS + 2,
        "{} client_id label values",
        values.len()
    );
    assert!(values.contains("other"), "{values:?}");
}

// 9. MCP bodies the guard cannot read ------------------------------------------------------

#[tokio::test]
async fn the_mcp_tool_guard_refuses_bodies_it_cannot_classify() {
    let app = start(|b| b).await;
    let runs = Runs::default();
    let r = runs.clone();
    // The guard in front of a lenient server that would run whatever it is given.
    let mcp = Router::new()
        .route_service(
            "/mcp",
            tower::service_fn(move |req: axum::extract::Request| {
                r.record(req.extensions().get::<Principal>());
                async {
                    Ok::<_, std::convert::Infallible>(axum::response::Response::new(axum::body::Body::from("ran")))
                }
            }),
        )
        .layer(
            McpGuardLayer::new()
                .tool("whoami", Permissions::authenticated())
                .tool("archive_project", Permissions::all(["projects:write"])),
        )
        .layer(app.auth.clone());
    let addr = common::serve(mcp).await;
    let reader = app.token(&["projects:read"]);
    let post = |body: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{addr}/mcp"))
            .bearer_auth(&reader)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "not json",
        "",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"archive_project\"}",
        // Repeated keys: which one counts depends on the parser.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"archive_project","name":"whoami"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"archive_project"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}"#,
        // JSON-RPC the guard cannot classify.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["archive_project"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
        r#"[]"#,
        r#"[1]"#,
        r#"42"#,
        r#""tools/call""#,
    ] {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store", "{body}");
        let answer: Value = resp.json().await.unwrap();
        let code = answer["error"]["code"].as_i64().unwrap_or_default();
        assert!(matches!(code, -32700 | -32600), "{body}: {answer}");
    }
    assert_eq!(runs.total(), 0, "a body the guard could not read reached the server");
    // Well-formed messages it can classify pass; the guarded tool is still refused.
    let ok = post(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#);
    assert_eq!(ok.await.unwrap().status(), 200);
    let note = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(note.await.unwrap().status(), 200);
    let refused = post(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"archive_project"}}"#);
    assert_eq!(refused.await.unwrap().status(), 403);
    assert_eq!(runs.total(), 2);
}
