//! A tool that asks for more scope itself: the example's `read_project` needs
//! `projects:private` for a private project, which only the tool can tell (from its
//! arguments). It records the demand (`InsufficientScope::step_up`) and returns a JSON-RPC
//! error; the auth layer answers 403 `insufficient_scope` with its challenge instead, so an MCP
//! client steps up exactly as for a guarded tool. Driven by rmcp's OAuth client against the
//! example's dev issuer (401 → authorization → the tool's 403 → re-authorization with the
//! challenged scopes → success), in both protocol eras, and on the wire.

use rmcp::transport::auth::{AuthClient, AuthorizationCallback, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::InsufficientScopeError;
use serde_json::{Value, json};
use tower_wacht::testing::ConsentPolicy;

use super::mcp_server::{PRIVATE_SCOPE, READER_CLIENT_ID};
use super::oauth::{Era, REDIRECT, browse, connect, query, scopes};
use super::{Server, bounded, call, call_body, challenge, find_source, modern_call, post_modern, structured};

/// The challenge for a reader (`projects:read`) reading the private project.
fn expected_challenge(server: &Server) -> String {
    format!(
        "Bearer resource_metadata=\"{}\", scope=\"projects:private projects:read\", error=\"insufficient_scope\", \
         error_description=\"The access token lacks a permission this operation requires.\"",
        server.metadata_url()
    )
}

async fn tool_steps_up(era: Era) {
    let server = Server::start().await;
    let issuer = server.demo.issuer.clone();
    // The user approves reading only, at first.
    issuer.set_consent_policy(ConsentPolicy::only(["projects:read"]));
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Discovery from the 401, authorization for the suggested scope, the code exchange.
    let refused = connect(&server, era, None).await.expect_err("no token, no MCP");
    let first_challenge = refused.auth_challenge().expect("a 401 challenge").to_owned();
    let mut state = bounded("OAuthState", OAuthState::new(server.resource.as_str(), None))
        .await
        .expect("rmcp accepts the URL");
    let request = AuthorizationRequest::new(REDIRECT)
        .with_challenge(first_challenge)
        .with_client_name("rmcp handler step-up test client")
        .with_initial_scope_selection();
    bounded("start_authorization", state.start_authorization(request))
        .await
        .expect("discovery and registration succeed");
    let authorize_url = state.get_authorization_url().await.expect("an authorization URL");
    assert_eq!(scopes(&query(&authorize_url)["scope"]), ["projects:read"]);
    let callback = browse(&browser, &authorize_url).await;
    bounded("code exchange", state.handle_callback_url(&callback))
        .await
        .expect("rmcp exchanges the code");
    let auth = AuthClient::new(
        reqwest::Client::new(),
        state.into_authorization_manager().expect("authorized"),
    );

    // The token reads public projects; the private one makes the tool ask for more scope.
    let client = connect(&server, era, Some(auth.clone())).await.expect("connects");
    let public = call(&client, "read_project", json!({"project_id": "prj_apollo"}))
        .await
        .expect("a public project needs projects:read only");
    assert_eq!(structured(&public)["private"], false);
    let error = call(&client, "read_project", json!({"project_id": "prj_mercury"}))
        .await
        .expect_err("the private project needs projects:private");
    assert_eq!(
        error.auth_challenge(),
        Some(expected_challenge(&server).as_str()),
        "{error:?}"
    );
    let insufficient = find_source::<InsufficientScopeError>(&error).expect("an insufficient-scope error");
    let required = insufficient.get_required_scope().expect("scopes to ask for").to_owned();
    assert_eq!(scopes(&required), ["projects:private", "projects:read"]);
    let _ = bounded("client shutdown", client.cancel()).await;

    // Re-authorization with the challenged scopes; the user approves this time.
    issuer.set_consent_policy(ConsentPolicy::GrantAll);
    let upgrade_url = {
        let manager = auth.auth_manager.lock().await;
        bounded("scope upgrade", manager.request_scope_upgrade(&required))
            .await
            .expect("rmcp starts a scope upgrade")
    };
    let asked = query(&upgrade_url);
    assert_eq!(scopes(&asked["scope"]), ["projects:private", "projects:read"]);
    assert_eq!(asked["resource"], server.resource);
    let callback = AuthorizationCallback::from_redirect_url(&browse(&browser, &upgrade_url).await).unwrap();
    {
        let manager = auth.auth_manager.lock().await;
        bounded(
            "step-up code exchange",
            manager.exchange_code_for_token_with_issuer(
                &callback.code,
                &callback.csrf_token,
                callback.issuer.as_deref(),
            ),
        )
        .await
        .expect("rmcp exchanges the step-up code");
    }
    let issued = issuer.issued();
    assert_eq!(issued.len(), 2);
    let mut granted: Vec<&str> = issued[1].scopes.iter().map(String::as_str).collect();
    granted.sort_unstable();
    assert_eq!(granted, [PRIVATE_SCOPE, "projects:read"]);

    // The same call now succeeds.
    let client = connect(&server, era, Some(auth)).await.expect("reconnects");
    let private = call(&client, "read_project", json!({"project_id": "prj_mercury"}))
        .await
        .expect("read_project succeeds after step-up");
    assert_eq!(
        structured(&private),
        &json!({"id": "prj_mercury", "name": "Mercury", "private": true,
                "organization": super::mcp_server::DEMO_ORGANIZATION})
    );
    let _ = bounded("client shutdown", client.cancel()).await;
}

#[tokio::test]
async fn current_protocol_client_steps_up_when_a_tool_asks_for_more_scope() {
    tool_steps_up(Era::Current).await;
}

#[tokio::test]
async fn legacy_protocol_client_steps_up_when_a_tool_asks_for_more_scope() {
    tool_steps_up(Era::Legacy).await;
}

/// On the wire, the tool's JSON-RPC answer is gone: 403, the layer's challenge, a problem
/// body, whichever protocol era the request speaks; a token with the scope gets the project.
#[tokio::test]
async fn a_tools_demand_replaces_its_json_rpc_answer_with_the_layers_403() {
    let server = Server::start().await;
    let reader = server.demo.reader.clone();
    let arguments = json!({"project_id": "prj_mercury"});
    let legacy = server
        .post(Some(&reader), &call_body(5, "read_project", arguments.clone()))
        .await;
    let modern = post_modern(
        &server,
        &reader,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "read_project"),
        ],
        &modern_call("read_project", arguments.clone()),
    )
    .await;
    for (era, resp) in [("legacy", legacy), ("2026-07-28", modern)] {
        assert_eq!(resp.status(), 403, "{era}");
        assert_eq!(challenge(&resp), expected_challenge(&server), "{era}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{era}");
        assert_eq!(resp.headers()["cache-control"], "no-store", "{era}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "insufficient_scope", "{era}: {body}");
        assert!(body.get("jsonrpc").is_none(), "{era}: the tool's answer leaked: {body}");
    }

    // The reader is still served where the tool asks for nothing more.
    let public = server
        .post(
            Some(&reader),
            &call_body(6, "read_project", json!({"project_id": "prj_gemini"})),
        )
        .await;
    assert_eq!(public.status(), 200);
    let body: Value = public.json().await.unwrap();
    assert_eq!(body["result"]["structuredContent"]["private"], false, "{body}");

    // A token holding the scope reads the private project.
    let token = server.token(
        READER_CLIENT_ID,
        &["projects:read", PRIVATE_SCOPE],
        Some(&server.resource),
    );
    let resp = server
        .post(Some(&token), &call_body(7, "read_project", arguments))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["structuredContent"]["name"], "Mercury", "{body}");
}

/// The conformance suite's step-up tool: guarded by `projects:write` in the example's guard.
#[tokio::test]
async fn admin_action_needs_projects_write() {
    let server = Server::start().await;
    let resp = server
        .post(Some(&server.demo.reader), &call_body(8, "admin-action", json!({})))
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        challenge(&resp),
        format!(
            "Bearer resource_metadata=\"{}\", scope=\"projects:write projects:read\", error=\"insufficient_scope\", \
             error_description=\"The access token lacks a permission this operation requires.\"",
            server.metadata_url()
        )
    );
    let resp = server
        .post(Some(&server.demo.agent), &call_body(8, "admin-action", json!({})))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["structuredContent"]["done"], true, "{body}");
}
