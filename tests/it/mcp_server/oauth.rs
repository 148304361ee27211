//! The whole OAuth dance with a real MCP client: rmcp's OAuth client (its `auth` feature)
//! pointed at nothing but the example's URL, against the example's development authorization
//! server. 401 → protected resource metadata → authorization server metadata → registration
//! (dynamic, or a client ID metadata document) → authorize with PKCE → token → `tools/call`
//! → 403 `insufficient_scope` on a guarded tool → re-authorization with the challenged scopes
//! → success; with MCP 2026-07-28 (`server/discover`, mirrored headers) and with a legacy
//! protocol version (`initialize`, the body alone).
//!
//! The test plays the browser: it opens the authorization URL without following redirects and
//! hands the redirect back to rmcp, as a desktop client's loopback callback would.

use std::collections::HashMap;

use axum::Router;
use axum::routing::get;
use rmcp::model::ProtocolVersion;
use rmcp::service::{ClientInitializeError, ClientLifecycleMode, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationCallback, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::{InsufficientScopeError, StreamableHttpClientTransportConfig};
use rmcp::{ClientServiceExt as _, ServiceExt};
use serde_json::{Value, json};
use tower_wacht::testing::{ConsentPolicy, GrantType};

use super::mcp_server::{self, DEMO_ORGANIZATION};
use super::{Server, bounded, call, find_source, structured};

/// The client's redirect URI. Nothing listens there: the test reads the redirect itself.
pub(super) const REDIRECT: &str = "http://127.0.0.1:33418/callback";

/// Which protocol era the client speaks.
#[derive(Clone, Copy, Debug)]
pub(super) enum Era {
    /// MCP 2026-07-28: `server/discover`, no `initialize`, `Mcp-Method` / `Mcp-Name` headers.
    Current,
    /// rmcp's default handshake: `initialize` with a 2025 protocol version, judged by the body.
    Legacy,
}

/// How the client makes itself known to the authorization server.
#[derive(Clone, Copy, Debug)]
enum Registration {
    /// RFC 7591 dynamic registration at `/oauth/register`.
    Dynamic,
    /// A client ID metadata document: the `client_id` is the URL of the client's own document,
    /// which the issuer fetches. rmcp only offers an `https` document URL through
    /// `with_client_metadata_url`; the test serves its document on loopback `http`, so it hands
    /// that URL to rmcp as a known client id, which puts the same request on the wire.
    MetadataDocument,
}

pub(super) async fn connect(
    server: &Server,
    era: Era,
    auth: Option<AuthClient<reqwest::Client>>,
) -> Result<RunningService<RoleClient, ()>, ClientInitializeError> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.resource.as_str());
    // One handshake per era, for either transport type.
    macro_rules! handshake {
        ($transport:expr) => {
            match era {
                Era::Current => {
                    let lifecycle = ClientLifecycleMode::Discover {
                        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                    };
                    bounded(
                        "MCP server/discover",
                        ().serve_with_lifecycle($transport, lifecycle),
                    )
                    .await
                }
                Era::Legacy => bounded("MCP initialize", ().serve($transport)).await,
            }
        };
    }
    match auth {
        Some(auth) => handshake!(StreamableHttpClientTransport::with_client(auth, config)),
        None => handshake!(StreamableHttpClientTransport::from_config(config)),
    }
}

/// Opens `authorize_url` as a browser would; the dev issuer approves at once and redirects to
/// the client's redirect URI. Returns that redirect.
pub(super) async fn browse(http: &reqwest::Client, authorize_url: &str) -> String {
    let resp = bounded("authorization request", http.get(authorize_url).send())
        .await
        .expect("the issuer answers");
    assert_eq!(resp.status(), 302, "the issuer redirects back to the client");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(!location.contains("error="), "{location}");
    location
}

pub(super) fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

pub(super) fn scopes(value: &str) -> Vec<&str> {
    let mut scopes: Vec<&str> = value.split_whitespace().filter(|s| *s != "offline_access").collect();
    scopes.sort_unstable();
    scopes
}

/// Serves a client ID metadata document for a public client redirecting to [`REDIRECT`];
/// returns its URL (the client id) and the port it is served on.
async fn serve_client_document() -> (String, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/oauth/client.json");
    let document = json!({
        "client_id": url,
        "client_name": "rmcp end-to-end test client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let app = Router::new().route("/oauth/client.json", get(move || async move { axum::Json(document) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, port)
}

async fn whole_flow(era: Era, registration: Registration) {
    // The example's dev issuer takes metadata documents only when asked (`MCP_CIMD=on`, and
    // `MCP_CIMD_LOOPBACK_PORT` for one served on this machine, as here).
    let document = match registration {
        Registration::Dynamic => None,
        Registration::MetadataDocument => Some(serve_client_document().await),
    };
    let issuer_config = match &document {
        None => mcp_server::dev_issuer_config(),
        Some((_, port)) => {
            let port = port.to_string();
            mcp_server::metadata_documents_from_env(mcp_server::dev_issuer_config(), Some("on"), Some(&port))
                .expect("MCP_CIMD=on with a loopback port")
        }
    };
    let server = Server::start_with(None, issuer_config).await;
    whole_flow_at(server, era, registration, document).await;
}

/// The whole flow against `server`; `document` is the client ID metadata document (its URL
/// and port) when the client registers with one.
async fn whole_flow_at(server: Server, era: Era, registration: Registration, document: Option<(String, u16)>) {
    let issuer = server.demo.issuer.clone();
    // The user approves reading only at first (whatever the client asks for).
    issuer.set_consent_policy(ConsentPolicy::only(["projects:read"]));
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // 1. The client knows only the URL. Its first request is refused with a challenge that
    //    points at the protected resource metadata.
    let refused = connect(&server, era, None).await.expect_err("no token, no MCP");
    let challenge = refused.auth_challenge().expect("a 401 challenge").to_owned();
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    // 2. rmcp's OAuth state machine: discovery from the challenge (resource metadata, then the
    //    dev issuer's RFC 8414 metadata), registration, authorization URL with PKCE.
    let mut state = bounded("OAuthState", OAuthState::new(server.resource.as_str(), None))
        .await
        .expect("rmcp accepts the URL");
    let mut request = AuthorizationRequest::new(REDIRECT)
        .with_challenge(challenge)
        .with_client_name("rmcp end-to-end test client")
        .with_initial_scope_selection();
    let document = document.map(|(url, _)| url);
    if let Some(url) = &document {
        request = request.with_preregistered_client(url.clone());
    }
    bounded("start_authorization", state.start_authorization(request))
        .await
        .expect("discovery and registration succeed");
    let authorize_url = state.get_authorization_url().await.expect("an authorization URL");
    assert!(
        authorize_url.starts_with(&format!("{}/oauth/authorize?", issuer.url())),
        "{authorize_url}"
    );
    let asked = query(&authorize_url);
    assert_eq!(asked["resource"], server.resource, "RFC 8707: this server's URL");
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_eq!(
        scopes(&asked["scope"]),
        ["projects:read"],
        "the scope the challenge suggested"
    );

    // 3. The browser step, then the code exchange (rmcp checks `iss` and the PKCE state).
    let callback = browse(&browser, &authorize_url).await;
    bounded("code exchange", state.handle_callback_url(&callback))
        .await
        .expect("rmcp exchanges the code");
    let manager = state.into_authorization_manager().expect("authorized");

    let issued = issuer.issued();
    assert_eq!(issued.len(), 1);
    let client_id = issued[0].client_id.clone();
    match (registration, &document) {
        (Registration::Dynamic, _) => {
            assert_eq!(issuer.registrations(), 1);
            assert!(client_id.starts_with("oc_"), "{client_id}");
        }
        (Registration::MetadataDocument, Some(url)) => {
            assert_eq!(issuer.registrations(), 0, "no dynamic registration");
            assert!(issuer.metadata_document_fetches() >= 1);
            assert_eq!(&client_id, url);
        }
        (Registration::MetadataDocument, None) => unreachable!(),
    }
    assert_eq!(issued[0].resource, server.resource);
    assert_eq!(issued[0].scopes, ["projects:read"]);
    assert_eq!(issued[0].grant_type, GrantType::AuthorizationCode);

    // 4. MCP with the client's token: the layer verifies it through the gateway path.
    let auth = AuthClient::new(reqwest::Client::new(), manager);
    let client = connect(&server, era, Some(auth.clone()))
        .await
        .expect("the authorized client connects");
    let who = call(&client, "whoami", json!({})).await.expect("whoami succeeds");
    let who = structured(&who);
    assert_eq!(who["client_id"], client_id.as_str());
    assert_eq!(who["scopes"], json!(["projects:read"]));
    assert_eq!(who["audience"], server.resource.as_str());
    assert_eq!(who["issuer"], issuer.url());
    assert_eq!(who["granted_resource"], DEMO_ORGANIZATION);
    let listed = call(&client, "list_projects", json!({}))
        .await
        .expect("projects:read suffices");
    assert_eq!(structured(&listed)["organization"], DEMO_ORGANIZATION);

    // 5. A guarded tool the token cannot call: 403 insufficient_scope naming what it needs.
    let error = call(&client, "archive_project", json!({"project_id": "prj_apollo"}))
        .await
        .expect_err("projects:write is missing");
    let insufficient = find_source::<InsufficientScopeError>(&error).expect("an insufficient-scope error");
    let required = insufficient
        .get_required_scope()
        .expect("the challenge names scopes")
        .to_owned();
    assert_eq!(scopes(&required), ["projects:read", "projects:write"]);
    let _ = bounded("client shutdown", client.cancel()).await;

    // 6. Step-up: the user now approves writing; rmcp asks for the union of what it holds and
    //    what was challenged, for the same resource.
    issuer.set_consent_policy(ConsentPolicy::GrantAll);
    let upgrade_url = {
        let manager = auth.auth_manager.lock().await;
        bounded("scope upgrade", manager.request_scope_upgrade(&required))
            .await
            .expect("rmcp starts a scope upgrade")
    };
    let asked = query(&upgrade_url);
    assert_eq!(scopes(&asked["scope"]), ["projects:read", "projects:write"]);
    assert_eq!(asked["resource"], server.resource);
    assert_eq!(asked["client_id"], client_id);
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
    assert_eq!(granted, ["projects:read", "projects:write"]);

    // 7. The same client, with its new token, calls the tool.
    let client = connect(&server, era, Some(auth)).await.expect("reconnects");
    let archived = call(&client, "archive_project", json!({"project_id": "prj_apollo"}))
        .await
        .expect("archive_project succeeds after step-up");
    assert_eq!(
        structured(&archived),
        &json!({"archived": "prj_apollo", "by": client_id})
    );
    let who = call(&client, "whoami", json!({})).await.expect("whoami succeeds");
    let mut held: Vec<&str> = structured(&who)["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    held.sort_unstable();
    assert_eq!(held, ["projects:read", "projects:write"]);
    let _ = bounded("client shutdown", client.cancel()).await;
}

#[tokio::test]
async fn current_protocol_client_registers_dynamically_authorizes_and_steps_up() {
    whole_flow(Era::Current, Registration::Dynamic).await;
}

#[tokio::test]
async fn current_protocol_client_with_a_metadata_document_authorizes_and_steps_up() {
    whole_flow(Era::Current, Registration::MetadataDocument).await;
}

#[tokio::test]
async fn legacy_protocol_client_registers_dynamically_authorizes_and_steps_up() {
    whole_flow(Era::Legacy, Registration::Dynamic).await;
}

#[tokio::test]
async fn legacy_protocol_client_with_a_metadata_document_authorizes_and_steps_up() {
    whole_flow(Era::Legacy, Registration::MetadataDocument).await;
}

/// The token a client obtained for this server is refused by a server at another URL
/// (RFC 8707 audience), and a token the dev issuer issued for another resource is refused
/// here: the dev issuer records the resource, the layer enforces it.
/// The whole flow for a client configured with `http://localhost:PORT/mcp`, against the
/// example serving every loopback name of its `127.0.0.1` URL.
#[tokio::test]
async fn a_client_configured_with_localhost_completes_the_whole_flow() {
    whole_flow_at(
        Server::start_loopback("localhost").await,
        Era::Current,
        Registration::Dynamic,
        None,
    )
    .await;
}

#[tokio::test]
async fn a_token_issued_for_another_resource_is_refused() {
    let server = Server::start().await;
    let issuer = server.demo.issuer.clone();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client_id = issuer.register_public_client([REDIRECT]);
    // RFC 7636 Appendix B verifier and challenge.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let other = "http://127.0.0.1:1/mcp";
    let mut authorize = reqwest::Url::parse(&issuer.authorization_endpoint()).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "projects:read")
        .append_pair("state", "s1")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", other);
    let callback = browse(&browser, authorize.as_str()).await;
    let code = query(&callback)["code"].clone();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id.as_str()),
            ("code_verifier", verifier),
            ("resource", other),
        ])
        .finish();
    let token: Value = browser
        .post(issuer.token_endpoint())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().expect("an access token");
    let resp = server
        .post(
            Some(access),
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    assert_eq!(resp.status(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

/// The example turns client ID metadata documents on only when asked (`MCP_CIMD=on`), and
/// refuses a setting it does not understand rather than guess.
#[tokio::test]
async fn the_examples_dev_issuer_takes_metadata_documents_only_when_asked() {
    let advertised = |config| async move {
        let server = Server::start_with(None, config).await;
        let metadata: Value = reqwest::get(server.demo.issuer.metadata_url())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        metadata["client_id_metadata_document_supported"].clone()
    };
    let from_env = |cimd, port| mcp_server::metadata_documents_from_env(mcp_server::dev_issuer_config(), cimd, port);
    assert_eq!(advertised(mcp_server::dev_issuer_config()).await, false);
    assert_eq!(advertised(from_env(None, None).unwrap()).await, false);
    assert_eq!(advertised(from_env(Some("off"), None).unwrap()).await, false);
    assert_eq!(advertised(from_env(Some("on"), None).unwrap()).await, true);
    assert_eq!(advertised(from_env(Some("on"), Some("8123")).unwrap()).await, true);
    for (cimd, port) in [
        (Some("yes"), None),
        (Some("ON"), None),
        (None, Some("8123")),
        (Some("off"), Some("8123")),
        (Some("on"), Some("0")),
        (Some("on"), Some("http")),
        (Some("on"), Some("70000")),
    ] {
        assert!(from_env(cimd, port).is_err(), "{cimd:?} {port:?}");
    }
}

/// The configurations printed for Claude Code, VS Code and the Inspector name the example's
/// own URLs, and the VS Code one is the `mcp.json` shape VS Code reads.
#[test]
fn the_printed_client_configurations_name_the_examples_urls() {
    let resource = "http://127.0.0.1:3917/mcp";
    let issuer = "http://127.0.0.1:41000";
    let text = mcp_server::client_setup(resource, issuer);
    assert!(
        text.contains(&format!("claude mcp add --transport http tower-wacht {resource}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("{issuer}/oauth/authorize")), "{text}");
    assert!(text.contains(&format!("URL {resource}")), "{text}");
    assert!(!text.contains("localhost"), "{text}");
    let vscode: Value = serde_json::from_str(&mcp_server::vscode_mcp_json(resource)).unwrap();
    assert_eq!(
        vscode,
        json!({"servers": {"tower-wacht": {"type": "http", "url": resource}}})
    );
    let printed: String = text
        .lines()
        .filter(|l| l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(printed.contains("\"url\": \"http://127.0.0.1:3917/mcp\""), "{text}");
}
