//! The MCP example end to end: a real rmcp client over Streamable HTTP against the example's
//! router on loopback, plus raw HTTP (reqwest) wherever a status code or header must be seen
//! exactly. The metadata document and the challenges are checked field by field against
//! RFC 9728 and RFC 6750.

#[allow(dead_code, clippy::module_inception)]
#[path = "../../examples/mcp_server.rs"]
mod mcp_server;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{InsufficientScopeError, StreamableHttpClientTransportConfig};
use rmcp::{ServiceError, ServiceExt};
use serde_json::{Value, json};
use tower_wacht::testing::{DevIssuerConfig, TokenGrant, generate_token};
use tower_wacht::{WachtAuthConfig, WachtAuthLayer};

use mcp_server::{AGENT_CLIENT_ID, DEMO_ORGANIZATION, Demo, READER_CLIENT_ID, SCOPES_SUPPORTED};

/// Upper bound for any single client operation: a hang fails the test instead of blocking it.
const LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

/// The example served on 127.0.0.1, with its resource URL built from the bound address.
struct Server {
    addr: SocketAddr,
    /// `http://127.0.0.1:<port>/mcp`: the URL clients connect to, the metadata `resource` and
    /// the audience tokens must have.
    resource: String,
    demo: Demo,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        Self::start_with_issuer(None).await
    }

    /// The demo, advertising `issuer` (instead of the demo issuer) as authorization server.
    async fn start_with_issuer(issuer: Option<&str>) -> Server {
        Self::start_with(issuer, mcp_server::dev_issuer_config()).await
    }

    /// The demo with this dev issuer configuration, advertising `issuer` (instead of the demo
    /// issuer) as authorization server.
    async fn start_with(issuer: Option<&str>, issuer_config: DevIssuerConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let resource = format!("http://{addr}/mcp");
        let demo = mcp_server::demo_with(&resource, issuer_config)
            .await
            .expect("demo gateway starts");
        let config = match issuer {
            None => demo.config.clone(),
            Some(issuer) => {
                let builder = WachtAuthConfig::builder()
                    .gateway_url(demo.gateway.url())
                    .api_key("demo-backend-key");
                mcp_server::mcp_auth_config(builder, &resource, issuer).expect("config")
            }
        };
        let auth = WachtAuthLayer::new(config).expect("layer builds");
        let app = mcp_server::app(auth);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        Server {
            addr,
            resource,
            demo,
            http: reqwest::Client::new(),
        }
    }

    /// The example for every loopback name of its URL ([`mcp_server::loopback_app`]), with
    /// `resource` the URL a client configured with `name` (`localhost`, `127.0.0.1`) uses.
    async fn start_loopback(name: &str) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let canonical = format!("http://{addr}/mcp");
        let demo = mcp_server::demo(&canonical).await.expect("demo gateway starts");
        let layers = demo
            .loopback_configs(&canonical)
            .expect("configs")
            .into_iter()
            .map(|config| WachtAuthLayer::new(config).expect("layer builds"))
            .collect();
        let app = mcp_server::loopback_app(layers);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        Server {
            addr,
            resource: format!("http://{name}:{}/mcp", addr.port()),
            demo,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// RFC 9728 §3.1, computed independently of the library: insert the well-known segment
    /// between the host and the path of the resource identifier.
    fn metadata_url(&self) -> String {
        format!("http://{}/.well-known/oauth-protected-resource/mcp", self.addr)
    }

    /// A token for this server's resource, registered with the demo gateway.
    fn token(&self, client_id: &str, scopes: &[&str], audience: Option<&str>) -> String {
        let token = generate_token();
        let mut grant = TokenGrant::new(client_id)
            .scopes(scopes.iter().copied())
            .granted_resource(DEMO_ORGANIZATION)
            .issuer(self.demo.issuer.url());
        if let Some(audience) = audience {
            grant = grant.oauth_resource(audience);
        }
        self.demo.gateway.register(&token, grant);
        token
    }

    async fn connect(
        &self,
        token: Option<&str>,
    ) -> Result<RunningService<RoleClient, ()>, rmcp::service::ClientInitializeError> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.resource.as_str());
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        bounded(
            "MCP initialize",
            ().serve(StreamableHttpClientTransport::from_config(config)),
        )
        .await
    }

    /// A raw JSON-RPC POST to the MCP endpoint, as an MCP client sends it.
    async fn post(&self, token: Option<&str>, body: &Value) -> reqwest::Response {
        self.post_from(None, token, body).await
    }

    /// The same POST as a browser page on `origin` sends it (with an `Origin` header).
    async fn post_from(&self, origin: Option<&str>, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.resource)
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        bounded("raw POST", req.send()).await.expect("request completes")
    }

    /// The challenge for a request without a token.
    fn no_token_challenge(&self) -> String {
        format!(
            "Bearer resource_metadata=\"{}\", scope=\"projects:read\"",
            self.metadata_url()
        )
    }
}

fn initialize_body() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    })
}

fn call_body(id: u32, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

fn challenge(resp: &reqwest::Response) -> String {
    let values: Vec<_> = resp.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(values.len(), 1, "exactly one WWW-Authenticate field");
    values[0].to_str().expect("ASCII challenge").to_owned()
}

fn structured(result: &CallToolResult) -> &Value {
    assert_eq!(result.is_error, Some(false), "{result:?}");
    result.structured_content.as_ref().expect("structured content")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    bounded(
        "tools/call",
        client.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)),
    )
    .await
}

/// The first error of type `T` in the source chain of `error`.
fn find_source<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}

#[tokio::test]
async fn valid_token_initializes_lists_tools_and_calls_whoami() {
    let server = Server::start().await;
    let client = server
        .connect(Some(&server.demo.agent))
        .await
        .expect("initialize succeeds");

    let info = client.peer_info().expect("server info after initialize");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("tower-wacht-mcp-example")
    );
    assert!(info.capabilities.tools.is_some(), "tools capability advertised");

    let tools = bounded("tools/list", client.list_all_tools())
        .await
        .expect("tools/list succeeds");
    let names: BTreeSet<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "admin-action".to_owned(),
            "archive_project".to_owned(),
            "find_project".to_owned(),
            "list_projects".to_owned(),
            "read_project".to_owned(),
            "whoami".to_owned()
        ])
    );

    let whoami = call(&client, "whoami", json!({})).await.expect("whoami succeeds");
    let who = structured(&whoami);
    assert_eq!(who["client_id"], AGENT_CLIENT_ID);
    assert_eq!(who["granted_resource"], DEMO_ORGANIZATION);
    // Every scope, sorted.
    assert_eq!(
        who["scopes"],
        json!(["projects:private", "projects:read", "projects:write"])
    );
    assert_eq!(
        who["permissions"],
        json!([
            "org:projects:private",
            "org:projects:read",
            "org:projects:write",
            "projects:private",
            "projects:read",
            "projects:write"
        ])
    );
    assert_eq!(who["audience"], server.resource);
    assert_eq!(who["issuer"], server.demo.issuer.url());

    // The guarded tools run for a token holding their permissions.
    let listed = call(&client, "list_projects", json!({}))
        .await
        .expect("list_projects succeeds");
    assert_eq!(structured(&listed)["organization"], DEMO_ORGANIZATION);
    let archived = call(&client, "archive_project", json!({"project_id": "prj_gemini"}))
        .await
        .expect("archive_project succeeds");
    assert_eq!(
        structured(&archived),
        &json!({"archived": "prj_gemini", "by": AGENT_CLIENT_ID})
    );

    // Every HTTP request was authenticated; the gateway was asked once, the cache did the rest.
    assert_eq!(server.demo.gateway.calls(), 1);
    let _ = bounded("client shutdown", client.cancel()).await;
}

#[tokio::test]
async fn browser_origins_other_than_this_server_and_loopback_are_refused() {
    let server = Server::start().await;
    let token = Some(server.demo.agent.as_str());
    let body = initialize_body();
    // A page on another site, with a valid token in hand: refused (DNS rebinding defence).
    let foreign = server.post_from(Some("https://evil.example"), token, &body).await;
    assert_eq!(foreign.status(), 403);
    // This server's own origin, a loopback origin on another port, and no Origin at all
    // (non-browser clients) are served.
    let own = format!("http://{}", server.addr);
    for origin in [Some(own.as_str()), Some("http://localhost:6274"), None] {
        let resp = server.post_from(origin, token, &body).await;
        assert_eq!(resp.status(), 200, "origin {origin:?}");
    }
    // Without a token the auth layer answers first, whatever the origin.
    let anonymous = server.post_from(Some("https://evil.example"), None, &body).await;
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn whoami_reports_each_callers_own_principal() {
    let server = Server::start().await;
    let agent = server.connect(Some(&server.demo.agent)).await.expect("agent connects");
    let reader = server
        .connect(Some(&server.demo.reader))
        .await
        .expect("reader connects");
    for _ in 0..2 {
        let a = call(&agent, "whoami", json!({})).await.expect("agent whoami");
        let r = call(&reader, "whoami", json!({})).await.expect("reader whoami");
        assert_eq!(structured(&a)["client_id"], AGENT_CLIENT_ID);
        assert_eq!(structured(&r)["client_id"], READER_CLIENT_ID);
        assert_eq!(structured(&r)["scopes"], json!(["projects:read"]));
    }
}

#[tokio::test]
async fn no_token_gets_401_with_a_resource_metadata_challenge_naming_this_server() {
    let server = Server::start().await;

    // The MCP client: initialize fails with the server's challenge.
    let error = server
        .connect(None)
        .await
        .expect_err("initialize without a token fails");
    assert!(error.is_authorization_required(), "{error:?}");
    assert_eq!(error.auth_challenge(), Some(server.no_token_challenge().as_str()));

    // The same request on the wire: 401, the challenge, no `error` (RFC 6750 §3.1).
    let resp = server.post(None, &initialize_body()).await;
    assert_eq!(resp.status(), 401);
    let header = challenge(&resp);
    assert_eq!(header, server.no_token_challenge());
    assert!(!header.contains("error"), "{header}");
    assert_eq!(resp.headers().get("content-type").unwrap(), "application/problem+json");

    // Following the challenge leads to a document whose `resource` is the URL the client
    // connected to, exactly (RFC 9728 §3.3, §7.3).
    let params = parse_challenge(&header);
    let metadata_url = param(&params, "resource_metadata").expect("resource_metadata");
    assert_eq!(metadata_url, server.metadata_url());
    let doc: Value = server
        .http
        .get(metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"].as_str(), Some(server.resource.as_str()));

    // Every method on the endpoint needs a token, not only POST.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let resp = server
            .http
            .request(method.clone(), &server.resource)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method}");
        assert_eq!(challenge(&resp), server.no_token_challenge(), "{method}");
    }
    assert_eq!(server.demo.gateway.calls(), 0, "no token, no gateway call");
}

#[tokio::test]
async fn token_without_the_tools_permission_gets_403_insufficient_scope() {
    let server = Server::start().await;
    let expected = format!(
        "Bearer resource_metadata=\"{}\", scope=\"projects:write projects:read\", error=\"insufficient_scope\", \
         error_description=\"The access token lacks a permission this operation requires.\"",
        server.metadata_url()
    );

    // The MCP client: the session works, the unguarded and permitted tools run...
    let client = server
        .connect(Some(&server.demo.reader))
        .await
        .expect("initialize succeeds");
    let who = call(&client, "whoami", json!({})).await.expect("whoami succeeds");
    assert_eq!(structured(&who)["client_id"], READER_CLIENT_ID);
    call(&client, "list_projects", json!({}))
        .await
        .expect("list_projects succeeds");

    // ...and the tool needing projects:write is refused with a step-up challenge.
    let error = call(&client, "archive_project", json!({"project_id": "prj_apollo"}))
        .await
        .expect_err("archive_project needs projects:write");
    assert_eq!(error.auth_challenge(), Some(expected.as_str()), "{error:?}");
    let insufficient = find_source::<InsufficientScopeError>(&error).expect("an insufficient-scope error");
    assert_eq!(insufficient.get_required_scope(), Some("projects:write projects:read"));

    // A refused call does not break the client.
    call(&client, "whoami", json!({})).await.expect("whoami still succeeds");

    // On the wire: 403 with the challenge and a problem body.
    let resp = server
        .post(
            Some(&server.demo.reader),
            &call_body(7, "archive_project", json!({"project_id": "prj_apollo"})),
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(challenge(&resp), expected);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 403);
    assert_eq!(body["error"], "insufficient_scope");
}

#[tokio::test]
async fn json_rpc_batches_are_checked_call_by_call() {
    let server = Server::start().await;
    let batch = json!([
        call_body(1, "whoami", json!({})),
        call_body(2, "archive_project", json!({"project_id": "prj_apollo"})),
    ]);
    let resp = server.post(Some(&server.demo.reader), &batch).await;
    assert_eq!(resp.status(), 403, "one forbidden call refuses the whole batch");
    assert!(challenge(&resp).contains("scope=\"projects:write projects:read\""));

    // With the permissions the guard lets the batch through; what happens next is rmcp's
    // business (3.11 answers 415: it does not accept batches), but it is no auth refusal.
    let resp = server.post(Some(&server.demo.agent), &batch).await;
    assert!(![401, 403].contains(&resp.status().as_u16()), "{}", resp.status());
}

#[tokio::test]
async fn duplicate_keys_cannot_smuggle_a_guarded_call_past_the_guard() {
    // The guard reads JSON like serde_json (the last duplicate key wins); if the MCP server
    // read the first one instead, `archive_project` would run unchecked. Whatever the answer,
    // the guarded tool must not have run.
    let server = Server::start().await;
    let smuggled = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"archive_project","name":"whoami","arguments":{"project_id":"prj_apollo"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"archive_project","arguments":{"project_id":"prj_apollo"}},"params":{"name":"whoami"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"archive_project","arguments":{"project_id":"prj_apollo"}}}"#,
    ];
    for body in smuggled {
        let resp = bounded(
            "raw POST",
            server
                .http
                .post(&server.resource)
                .bearer_auth(&server.demo.reader)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body)
                .send(),
        )
        .await
        .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains("archived"),
            "{body} ran the guarded tool: {status} {text}"
        );
        assert!(status != 200 || text.contains("\"error\""), "{body}: {status} {text}");
    }
}

#[tokio::test]
async fn token_issued_for_another_resource_gets_401_invalid_token() {
    let server = Server::start().await;
    let expected = format!(
        "Bearer resource_metadata=\"{}\", scope=\"projects:read\", error=\"invalid_token\", \
         error_description=\"The access token was not issued for this resource.\"",
        server.metadata_url()
    );

    let error = server
        .connect(Some(&server.demo.foreign))
        .await
        .expect_err("initialize with a foreign token fails");
    assert!(error.is_authorization_required(), "{error:?}");
    assert_eq!(error.auth_challenge(), Some(expected.as_str()));

    let resp = server.post(Some(&server.demo.foreign), &initialize_body()).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp), expected);

    // Other audiences that are not exactly this server: another path on the same origin,
    // another port, no audience at all. Each is a live token with every scope.
    let port = server.addr.port();
    let other_port = if port == 65535 { port - 1 } else { port + 1 };
    for audience in [
        Some(format!("http://127.0.0.1:{port}/other")),
        Some(format!("http://127.0.0.1:{other_port}/mcp")),
        Some(format!("https://127.0.0.1:{port}/mcp")),
        None,
    ] {
        let token = server.token(
            "oc_otherAudience000000000000000001",
            &SCOPES_SUPPORTED,
            audience.as_deref(),
        );
        let resp = server.post(Some(&token), &initialize_body()).await;
        assert_eq!(resp.status(), 401, "{audience:?}");
        assert_eq!(challenge(&resp), expected, "{audience:?}");
    }

    // Scheme and host compare case-insensitively (MCP canonical server URI).
    let token = server.token(
        "oc_upperCaseAudience0000000000001",
        &["projects:read"],
        Some(&format!("HTTP://127.0.0.1:{port}/mcp")),
    );
    let client = server.connect(Some(&token)).await.expect("same resource, other case");
    call(&client, "whoami", json!({})).await.expect("whoami succeeds");
}

#[tokio::test]
async fn metadata_document_follows_rfc_9728() {
    let server = Server::start().await;
    let path_aware = server.metadata_url();
    let root = server.url("/.well-known/oauth-protected-resource");

    let mut bodies = Vec::new();
    for url in [&path_aware, &root] {
        // GET without authentication, and also with a bad token: the document is public.
        for token in [None, Some("not-a-real-token")] {
            let mut req = server.http.get(url.as_str());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}");
            let h = resp.headers();
            assert_eq!(h.get("content-type").unwrap(), "application/json", "{url}");
            assert_eq!(h.get("access-control-allow-origin").unwrap(), "*", "{url}");
            let cache = h.get("cache-control").unwrap().to_str().unwrap();
            let max_age = cache
                .split(',')
                .filter_map(|d| d.trim().strip_prefix("max-age="))
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no max-age in {cache:?}"));
            assert!(max_age > 0, "{cache}");
            assert!(h.get("www-authenticate").is_none());
            bodies.push(resp.text().await.unwrap());
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every form serves the same document"
    );

    let doc: Value = serde_json::from_str(&bodies[0]).expect("a JSON object");
    let obj = doc.as_object().expect("a JSON object");
    let keys: BTreeSet<_> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "resource",
            "authorization_servers",
            "scopes_supported",
            "bearer_methods_supported",
            "resource_name",
            "resource_documentation",
        ])
    );
    // Exact code-point equality with the URL clients use (RFC 9728 §3.3, §6).
    assert_eq!(obj["resource"], json!(server.resource));
    assert_eq!(obj["authorization_servers"], json!([server.demo.issuer.url()]));
    assert_eq!(obj["scopes_supported"], json!(SCOPES_SUPPORTED));
    assert_eq!(obj["bearer_methods_supported"], json!(["header"]));
    assert_eq!(obj["resource_name"], "tower-wacht example MCP server");
    assert_eq!(obj["resource_documentation"], "https://docs.rs/tower-wacht");
    // Zero-valued parameters are omitted (§3.2): no nulls, empty strings or empty arrays.
    for (key, value) in obj {
        let empty =
            value.is_null() || value.as_str().is_some_and(str::is_empty) || value.as_array().is_some_and(Vec::is_empty);
        assert!(!empty, "{key} is empty");
    }

    // A browser-based client's CORS preflight is answered.
    let resp = server
        .http
        .request(reqwest::Method::OPTIONS, path_aware.as_str())
        .header("origin", "https://inspector.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "mcp-protocol-version")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers().get("access-control-allow-origin").unwrap(), "*");
    let methods = resp
        .headers()
        .get("access-control-allow-methods")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(methods.split(',').any(|m| m.trim() == "GET"), "{methods}");
    let allowed = resp
        .headers()
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        allowed
            .split(',')
            .any(|h| h.trim().eq_ignore_ascii_case("mcp-protocol-version")),
        "{allowed}"
    );

    assert_eq!(server.demo.gateway.calls(), 0, "metadata never touches the gateway");
}

/// One auth-param of a challenge, unescaped.
type Params = Vec<(String, String)>;

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A strict RFC 9110 §11.6.1 parser for one `Bearer` challenge whose auth-params are all
/// quoted-strings (what this crate promises). Panics on anything else.
fn parse_challenge(header: &str) -> Params {
    let rest = header
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("scheme Bearer then one space: {header:?}"));
    assert!(!rest.starts_with(' '), "exactly one space after the scheme: {header:?}");
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let name: String = std::iter::from_fn(|| chars.next_if(|&c| is_tchar(c))).collect();
        assert!(!name.is_empty(), "auth-param name expected in {header:?}");
        assert_eq!(chars.next(), Some('='), "no spaces around '=' in {header:?}");
        assert_eq!(chars.next(), Some('"'), "{name} is a quoted-string in {header:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => value.push(chars.next().expect("quoted-pair")),
                Some(c) if c == '\t' || c == ' ' || ('!'..='~').contains(&c) => value.push(c),
                other => panic!("bad character {other:?} in {header:?}"),
            }
        }
        params.push((name, value));
        match chars.next() {
            None => break,
            Some(',') => {
                assert_eq!(chars.next(), Some(' '), "', ' between params in {header:?}");
            }
            other => panic!("unexpected {other:?} after a param in {header:?}"),
        }
    }
    params
}

/// How the official MCP TypeScript SDK reads a parameter: `name=` then `"([^"]+)"`, no
/// unescaping, first match anywhere in the header.
fn ts_sdk_param(header: &str, name: &str) -> Option<String> {
    let at = header.find(&format!("{name}=\""))?;
    let value = &header[at + name.len() + 2..];
    let end = value.find('"')?;
    (end > 0).then(|| value[..end].to_owned())
}

#[tokio::test]
async fn challenges_follow_rfc_6750_and_read_the_same_in_mcp_clients() {
    let server = Server::start().await;
    let no_token = server.post(None, &initialize_body()).await;
    let foreign = server.post(Some(&server.demo.foreign), &initialize_body()).await;
    let insufficient = server
        .post(
            Some(&server.demo.reader),
            &call_body(2, "archive_project", json!({"project_id": "x"})),
        )
        .await;
    let cases = [
        (no_token, 401, None, "projects:read"),
        (foreign, 401, Some("invalid_token"), "projects:read"),
        (
            insufficient,
            403,
            Some("insufficient_scope"),
            "projects:write projects:read",
        ),
    ];
    for (resp, status, error, scope) in cases {
        assert_eq!(resp.status().as_u16(), status);
        let header = challenge(&resp);
        let params = parse_challenge(&header);

        // Each parameter at most once (names are case-insensitive).
        let names: Vec<String> = params.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        let unique: BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{header}");
        // The order MCP clients parse best: resource_metadata, scope, error, error_description.
        let expected: Vec<&str> = match error {
            None => vec!["resource_metadata", "scope"],
            Some(_) => vec!["resource_metadata", "scope", "error", "error_description"],
        };
        assert_eq!(names, expected, "{header}");

        assert_eq!(
            param(&params, "resource_metadata"),
            Some(server.metadata_url().as_str())
        );
        assert_eq!(param(&params, "scope"), Some(scope));
        assert_eq!(param(&params, "error"), error);
        // RFC 6750 §3 character sets: scope tokens are %x21 / %x23-5B / %x5D-7E separated
        // by single spaces; error and error_description are %x20-21 / %x23-5B / %x5D-7E.
        for token in scope.split(' ') {
            assert!(!token.is_empty(), "{header}");
            assert!(
                token
                    .chars()
                    .all(|c| c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c))
            );
        }
        for name in ["error", "error_description"] {
            if let Some(v) = param(&params, name) {
                assert!(
                    v.chars()
                        .all(|c| c == ' ' || c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c))
                );
            }
        }
        // Nothing needed escaping, so a client that does not unescape reads the same values.
        assert!(!header.contains('\\'), "{header}");
        let ts_scheme = header.split(' ').next().unwrap();
        assert!(ts_scheme.eq_ignore_ascii_case("bearer"));
        for name in ["resource_metadata", "scope", "error"] {
            assert_eq!(
                ts_sdk_param(&header, name).as_deref(),
                param(&params, name),
                "{name} in {header}"
            );
        }
    }
}

#[tokio::test]
async fn every_printed_demo_call_answers_as_documented() {
    let server = Server::start().await;
    let calls = &server.demo.calls;
    assert_eq!(calls.len(), 9);
    for call in calls {
        let curl = call.curl();
        assert!(curl.starts_with("curl -i") && curl.ends_with(&call.url), "{curl}");
        assert!(
            call.url.starts_with(&format!("http://{}/", server.addr)),
            "{}",
            call.url
        );
        let mut req = server.http.request(call.method.parse().unwrap(), call.url.as_str());
        if let Some(t) = &call.token {
            assert!(curl.contains(&format!("-H 'Authorization: Bearer {t}'")), "{curl}");
            req = req.bearer_auth(t);
        }
        if let Some(body) = &call.body {
            assert!(curl.contains(&format!("-d '{body}'")) && !body.contains('\''), "{curl}");
            req = req
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body.clone());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), call.expect_status, "{}: {curl}", call.what);
        let header = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap();
        match call.expect_status {
            200 if call.body.is_none() => assert_eq!(body["resource"], json!(server.resource)),
            200 => {
                assert!(body.get("error").is_none(), "{}: {body}", call.what);
                if let Some(content) = body["result"].get("structuredContent") {
                    if call.what.starts_with("whoami") {
                        assert_eq!(content["client_id"], READER_CLIENT_ID);
                        assert_eq!(content["granted_resource"], DEMO_ORGANIZATION);
                        assert_eq!(content["scopes"], json!(["projects:read"]));
                    } else if call.what.starts_with("read_project") {
                        assert_eq!(content["id"], "prj_mercury");
                        assert_eq!(content["private"], true);
                    } else {
                        assert_eq!(content["archived"], "prj_apollo");
                    }
                } else {
                    assert_eq!(body["result"]["serverInfo"]["name"], "tower-wacht-mcp-example");
                }
            }
            401 | 403 => {
                let header = header.expect("a challenge");
                assert!(header.contains(&format!("resource_metadata=\"{}\"", server.metadata_url())));
                let expected_error = match (call.expect_status, call.token.is_some()) {
                    (401, false) => None,
                    (401, true) => Some("invalid_token"),
                    _ => Some("insufficient_scope"),
                };
                assert_eq!(ts_sdk_param(&header, "error").as_deref(), expected_error, "{header}");
            }
            other => panic!("unexpected status {other} promised"),
        }
    }
}

#[tokio::test]
async fn tools_fail_closed_without_the_auth_layer() {
    // The MCP service mounted without WachtAuthLayer (a wiring mistake): the tools find no
    // principal and refuse rather than serve anonymous callers.
    let server = mcp_server::ProjectsServer::new(mcp_server::tool_guard());
    let service = rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(server.clone()),
        std::sync::Arc::new(rmcp::transport::streamable_http_server::session::never::NeverSessionManager::default()),
        mcp_server::mcp_config(None),
    );
    let app = axum::Router::new().route_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&call_body(1, "whoami", json!({})))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert!(body.get("result").is_none(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no authenticated principal"),
        "{body}"
    );
}

#[test]
fn env_mode_configuration_needs_resource_and_issuer() {
    // The configuration `main` builds from the environment.
    let base = WachtAuthConfig::from_lookup(|name| match name {
        "WACHT_BACKEND_API_KEY" => Some("sk_test_key".into()),
        "WACHT_GATEWAY_URL" => Some("http://127.0.0.1:9".into()),
        "WACHT_RESOURCE_URL" => Some("https://mcp.example.com/mcp".into()),
        "WACHT_OAUTH_ISSUER" => Some("https://auth.example.com".into()),
        _ => None,
    })
    .unwrap();
    let config = mcp_server::mcp_auth_config(
        base.to_builder(),
        "https://mcp.example.com/mcp",
        "https://auth.example.com",
    )
    .unwrap();
    assert_eq!(config.expected_audience(), Some("https://mcp.example.com/mcp"));
    assert_eq!(config.expected_issuer(), Some("https://auth.example.com"));
    let auth = WachtAuthLayer::new(config).unwrap();
    let metadata = auth.resource_metadata().expect("metadata configured");
    assert_eq!(
        metadata.well_known_url(),
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert!(mcp_server::mcp_auth_config(WachtAuthConfig::builder(), "not a url", "https://auth.example.com").is_err());
}

/// A stand-in for the Wacht OAuth issuer: just its RFC 8414 metadata document.
async fn start_authorization_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "registration_endpoint": format!("{issuer}/oauth/register"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES_SUPPORTED,
    });
    let app = axum::Router::new().route(
        "/.well-known/oauth-authorization-server",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    issuer
}

#[tokio::test]
async fn rmcp_oauth_discovery_follows_the_challenge_to_the_issuer_and_asks_for_this_resource() {
    use rmcp::transport::auth::{AuthorizationManager, AuthorizationMetadataSource, WWWAuthenticateParams};

    let issuer = start_authorization_server().await;
    let server = Server::start_with_issuer(Some(&issuer)).await;
    let base = reqwest::Url::parse(&server.resource).unwrap();

    // The 401 the MCP client gets, read with rmcp's own challenge parser.
    let error = server.connect(None).await.expect_err("no token, no session");
    let unauthorized = error.auth_challenge().expect("a challenge").to_owned();
    let params = WWWAuthenticateParams::parse(&unauthorized, &base);
    assert_eq!(
        params.resource_metadata_url.as_ref().map(|u| u.as_str()),
        Some(server.metadata_url().as_str())
    );
    assert_eq!(params.scope.as_deref(), Some("projects:read"));
    assert_eq!(params.error, None);

    // Reactive discovery: challenge -> RFC 9728 document (its `resource` validated against
    // the server URL) -> `authorization_servers` -> RFC 8414 metadata of the issuer.
    let mut manager = bounded(
        "AuthorizationManager",
        AuthorizationManager::new(server.resource.as_str()),
    )
    .await
    .unwrap();
    let resolution = bounded(
        "discovery",
        manager.resolve_metadata_from_challenge(Some(&unauthorized)),
    )
    .await
    .expect("discovery succeeds");
    assert_eq!(
        resolution.source,
        AuthorizationMetadataSource::ProtectedResourceMetadata
    );
    assert_eq!(resolution.metadata.issuer.as_deref(), Some(issuer.as_str()));
    assert_eq!(
        resolution.metadata.authorization_endpoint,
        format!("{issuer}/oauth/authorize")
    );
    manager.set_metadata(resolution.metadata);
    manager.configure_client_id("oc_inspectorClient00000000000001").unwrap();

    // The client asks for the challenge's scope, for exactly this resource (RFC 8707), which
    // is the audience the layer demands.
    let scopes = manager.select_initial_scopes(&[]).await;
    assert_eq!(scopes, ["projects:read"]);
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let url = reqwest::Url::parse(&manager.get_authorization_url(&scope_refs).await.unwrap()).unwrap();
    assert!(url.as_str().starts_with(&format!("{issuer}/oauth/authorize?")), "{url}");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query.get("resource"), Some(&server.resource), "{url}");
    assert_eq!(query.get("scope").map(String::as_str), Some("projects:read"), "{url}");

    // Proactive discovery without a challenge finds the same issuer through the well-known
    // URLs.
    let manager = bounded(
        "AuthorizationManager",
        AuthorizationManager::new(server.resource.as_str()),
    )
    .await
    .unwrap();
    let resolution = bounded("discovery", manager.resolve_metadata())
        .await
        .expect("discovery succeeds");
    assert_eq!(
        resolution.source,
        AuthorizationMetadataSource::ProtectedResourceMetadata
    );
    assert_eq!(resolution.metadata.issuer.as_deref(), Some(issuer.as_str()));

    // Step-up: the 403 challenge read by rmcp names the scope to add. (The demo tokens carry
    // the demo issuer, which this server does not accept: it pins the issuer it advertises.)
    let demo_token = server.post(Some(&server.demo.reader), &initialize_body()).await;
    assert_eq!(demo_token.status(), 401);
    assert!(challenge(&demo_token).contains("error=\"invalid_token\""));
    let reader = generate_token();
    server.demo.gateway.register(
        &reader,
        TokenGrant::new(READER_CLIENT_ID)
            .scopes(["projects:read"])
            .granted_resource(DEMO_ORGANIZATION)
            .oauth_resource(server.resource.as_str())
            .issuer(issuer.as_str()),
    );
    let client = server.connect(Some(&reader)).await.expect("reader connects");
    let error = call(&client, "archive_project", json!({"project_id": "prj_apollo"}))
        .await
        .expect_err("needs projects:write");
    let params = WWWAuthenticateParams::parse(error.auth_challenge().expect("a challenge"), &base);
    assert!(params.is_insufficient_scope());
    assert_eq!(params.scope.as_deref(), Some("projects:write projects:read"));
    assert_eq!(
        params.resource_metadata_url.as_ref().map(|u| u.as_str()),
        Some(server.metadata_url().as_str())
    );
}

/// A client on the 2026-07-28 protocol: `server/discover`, then every request with mirrored
/// headers (`Mcp-Method`, `Mcp-Name`) and per-request `_meta`.
async fn connect_modern(server: &Server, token: &str) -> RunningService<RoleClient, ()> {
    use rmcp::ClientServiceExt as _;
    use rmcp::model::ProtocolVersion;
    use rmcp::service::ClientLifecycleMode;
    let config = StreamableHttpClientTransportConfig::with_uri(server.resource.as_str()).auth_header(token);
    bounded(
        "MCP server/discover",
        ().serve_with_lifecycle(
            StreamableHttpClientTransport::from_config(config),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        ),
    )
    .await
    .expect("server/discover succeeds")
}

#[tokio::test]
async fn a_2026_07_28_client_is_judged_by_headers_and_body_and_gets_the_same_step_up() {
    let server = Server::start().await;
    let reader = connect_modern(&server, &server.demo.reader).await;
    let who = call(&reader, "whoami", json!({})).await.expect("whoami succeeds");
    assert_eq!(structured(&who)["client_id"], READER_CLIENT_ID);
    let error = call(&reader, "archive_project", json!({"project_id": "prj_apollo"}))
        .await
        .expect_err("archive_project needs projects:write");
    let insufficient = find_source::<InsufficientScopeError>(&error).expect("an insufficient-scope error");
    assert_eq!(insufficient.get_required_scope(), Some("projects:write projects:read"));
    let agent = connect_modern(&server, &server.demo.agent).await;
    let archived = call(&agent, "archive_project", json!({"project_id": "prj_gemini"}))
        .await
        .expect("archive_project succeeds with projects:write");
    assert_eq!(structured(&archived)["archived"], "prj_gemini");
    let _ = bounded("client shutdown", reader.cancel()).await;
    let _ = bounded("client shutdown", agent.cancel()).await;
}

#[tokio::test]
async fn a_2026_07_28_tool_call_reports_the_tool_to_the_gateway() {
    let server = Server::start().await;
    let token = server.token(READER_CLIENT_ID, &["projects:read"], Some(&server.resource));
    let headers = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "whoami"),
    ];
    let resp = post_modern(&server, &token, &headers, &modern_call("whoami", json!({}))).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(READER_CLIENT_ID));
    let requests = server.demo.gateway.requests();
    let last = requests.last().expect("the miss asked the gateway");
    assert_eq!(
        (last.method.as_str(), last.resource.as_str()),
        ("POST", "/mcp/tools/call/whoami"),
        "the endpoint's route, the MCP method, the tool"
    );
    // A legacy request (no mirrored headers) reports the endpoint alone: the body is not read.
    let legacy = server.token(READER_CLIENT_ID, &["projects:read"], Some(&server.resource));
    let resp = server.post(Some(&legacy), &call_body(1, "whoami", json!({}))).await;
    assert_eq!(resp.status(), 200);
    let requests = server.demo.gateway.requests();
    let last = requests.last().expect("the miss asked the gateway");
    assert_eq!((last.method.as_str(), last.resource.as_str()), ("POST", "/mcp"));
}

/// A raw 2026-07-28 POST with the given mirrored headers (repeated when listed twice).
async fn post_modern(server: &Server, token: &str, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let mut req = server
        .http
        .post(&server.resource)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    bounded("raw POST", req.send()).await.expect("request completes")
}

fn modern_call(tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    }})
}

async fn assert_header_mismatch(resp: reqwest::Response, what: &str) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    assert_eq!(body["error"]["code"], -32020, "{what}: {text}");
    // JSON-RPC 2.0 §5: the error answers the request's id (`modern_call` sends 9).
    assert_eq!(body["id"], 9, "{what}: {text}");
    assert!(!text.contains("archived"), "{what}: the guarded tool ran");
}

#[tokio::test]
async fn mirrored_headers_that_disagree_with_the_body_are_refused_with_header_mismatch_even_on_a_guarded_tool() {
    let server = Server::start().await;
    let reader = server.demo.reader.clone();
    let v = ("MCP-Protocol-Version", "2026-07-28");
    let archive = modern_call("archive_project", json!({"project_id": "prj_apollo"}));
    // The headers name an unguarded tool; the body calls the guarded one.
    let lying = post_modern(
        &server,
        &reader,
        &[v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "whoami")],
        &archive,
    )
    .await;
    assert_header_mismatch(lying, "Mcp-Name whoami over an archive_project body").await;
    for (what, headers) in [
        (
            "method differs",
            vec![v, ("Mcp-Method", "tools/list"), ("Mcp-Name", "archive_project")],
        ),
        ("no Mcp-Method", vec![v, ("Mcp-Name", "archive_project")]),
        ("no Mcp-Name", vec![v, ("Mcp-Method", "tools/call")]),
        (
            "bad base64 sentinel",
            vec![v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "=?base64?d2hvYW1p!?=")],
        ),
        (
            "repeated Mcp-Name",
            vec![
                v,
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "whoami"),
                ("Mcp-Name", "whoami"),
            ],
        ),
        (
            "repeated Mcp-Method",
            vec![
                v,
                ("Mcp-Method", "tools/call"),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "whoami"),
            ],
        ),
        (
            "repeated MCP-Protocol-Version",
            vec![
                v,
                ("MCP-Protocol-Version", "2025-06-18"),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "whoami"),
            ],
        ),
    ] {
        let whoami = modern_call("whoami", json!({}));
        let body = if what == "method differs" { &archive } else { &whoami };
        assert_header_mismatch(post_modern(&server, &reader, &headers, body).await, what).await;
    }
    // Headers naming a guarded tool the caller may not call over a body calling another:
    // a mismatch (400 -32020), not a step-up the client would chase in vain.
    let guarded_header = post_modern(
        &server,
        &reader,
        &[
            v,
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "=?base64?YXJjaGl2ZV9wcm9qZWN0?="),
        ],
        &modern_call("whoami", json!({})),
    )
    .await;
    assert!(guarded_header.headers().get("www-authenticate").is_none());
    assert_header_mismatch(guarded_header, "Mcp-Name archive_project over a whoami body").await;
    // A sentinel-encoded name that matches the body passes the guard (rmcp answers).
    let ok = post_modern(
        &server,
        &reader,
        &[v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "=?base64?d2hvYW1p?=")],
        &modern_call("whoami", json!({})),
    )
    .await;
    let status = ok.status();
    let text = ok.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(READER_CLIENT_ID), "{text}");
    // A legacy request (no version header) is judged from its body: the lying header is
    // ignored, the body's guarded call refused.
    let legacy = post_modern(
        &server,
        &reader,
        &[("Mcp-Method", "tools/call"), ("Mcp-Name", "whoami")],
        &call_body(3, "archive_project", json!({"project_id": "prj_apollo"})),
    )
    .await;
    assert_eq!(legacy.status(), 403);
}

#[tokio::test]
async fn server_discover_needs_a_token_like_every_request() {
    let server = Server::start().await;
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }}});
    let resp = server.post(None, &discover).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp), server.no_token_challenge());
    let resp = post_modern(
        &server,
        &server.demo.reader,
        &[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "server/discover"),
        ],
        &discover,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_guard_answers_header_mismatches_itself_whatever_server_is_behind_it() {
    // Behind the guard, a server that checks nothing and counts what reaches it.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reached);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resource = format!("http://{addr}/mcp");
    let demo = mcp_server::demo(&resource).await.unwrap();
    let auth = WachtAuthLayer::new(demo.config.clone()).unwrap();
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "ran" }
            }),
        )
        .layer(mcp_server::tool_guard())
        .layer(auth);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    let server = Server {
        addr,
        resource,
        demo,
        http: reqwest::Client::new(),
    };
    let v = ("MCP-Protocol-Version", "2026-07-28");
    let agent = server.demo.agent.clone();
    for (what, headers) in [
        (
            "name differs",
            vec![v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "whoami")],
        ),
        (
            "method differs",
            vec![v, ("Mcp-Method", "tools/list"), ("Mcp-Name", "archive_project")],
        ),
        (
            "bad sentinel",
            vec![v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "=?base64?***?=")],
        ),
        (
            "repeated name",
            vec![
                v,
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "archive_project"),
                ("Mcp-Name", "archive_project"),
            ],
        ),
    ] {
        let resp = post_modern(&server, &agent, &headers, &modern_call("archive_project", json!({}))).await;
        assert_header_mismatch(resp, what).await;
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "no mismatched request reached the server"
    );
    let matching = post_modern(
        &server,
        &agent,
        &[v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "archive_project")],
        &modern_call("archive_project", json!({})),
    )
    .await;
    assert_eq!(matching.status(), 200);
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_broader_scope_satisfies_a_narrower_tool_through_the_hierarchy() {
    let server = Server::start().await;
    // projects:write only (no projects:read): the example's hierarchy says write implies read.
    let writer = server.token(
        "oc_writerOnly000000000000000000001",
        &["projects:write"],
        Some(&server.resource.clone()),
    );
    let client = server.connect(Some(&writer)).await.expect("initialize succeeds");
    call(&client, "list_projects", json!({}))
        .await
        .expect("list_projects (projects:read) with projects:write");
    call(&client, "archive_project", json!({"project_id": "prj_apollo"}))
        .await
        .expect("archive_project (projects:write)");
    let _ = bounded("client shutdown", client.cancel()).await;
}

/// The example's server in rmcp's legacy session mode (sessions handed out on `initialize`),
/// guarded at `/mcp`; `/unguarded` serves the same sessions without the tool guard, as a
/// server the guard did not see create a session would.
async fn legacy_session_server() -> Server {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resource = format!("http://{addr}/mcp");
    let demo = mcp_server::demo(&resource).await.unwrap();
    let auth = WachtAuthLayer::new(demo.config.clone()).unwrap();
    let guard = mcp_server::tool_guard();
    let tools = mcp_server::ProjectsServer::new(guard.clone());
    let sessions = Arc::new(LocalSessionManager::default());
    let service = |sessions: Arc<LocalSessionManager>| {
        let tools = tools.clone();
        rmcp::transport::StreamableHttpService::new(
            move || Ok(tools.clone()),
            sessions,
            mcp_server::mcp_config(Some(&resource))
                .with_legacy_session_mode(true)
                .with_json_response(true),
        )
    };
    let app = axum::Router::new()
        .route_service("/mcp", service(Arc::clone(&sessions)))
        .layer(guard)
        .route_service("/unguarded", service(sessions))
        .layer(auth);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Server {
        addr,
        resource,
        demo,
        http: reqwest::Client::new(),
    }
}

impl Server {
    /// A raw JSON POST to `url` with `token` and, if given, an `Mcp-Session-Id`.
    async fn post_in_session(&self, url: &str, token: &str, session: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = session {
            req = req.header("mcp-session-id", session);
        }
        bounded("raw POST", req.send()).await.expect("request completes")
    }

    /// Starts a legacy session at `url` with `token`: `initialize`, then `initialized`.
    async fn start_session(&self, url: &str, token: &str) -> String {
        let created = self.post_in_session(url, token, None, initialize_body()).await;
        assert_eq!(created.status(), 200);
        let session = created
            .headers()
            .get("mcp-session-id")
            .expect("legacy mode hands out a session")
            .to_str()
            .unwrap()
            .to_owned();
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let acknowledged = self.post_in_session(url, token, Some(&session), initialized).await;
        assert!(acknowledged.status().is_success());
        session
    }
}

#[tokio::test]
async fn a_legacy_session_cannot_be_used_with_another_principals_token() {
    let server = legacy_session_server().await;
    let (agent, reader) = (server.demo.agent.clone(), server.demo.reader.clone());
    let session = server.start_session(&server.resource, &agent).await;

    // Another principal presents the session: refused as if it did not exist.
    let hijack = server
        .post_in_session(
            &server.resource,
            &reader,
            Some(&session),
            call_body(2, "whoami", json!({})),
        )
        .await;
    assert_eq!(hijack.status(), 404);
    let body: Value = hijack.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Session not found");
    // Also for GET (the SSE stream) and DELETE.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let resp = server
            .http
            .request(method.clone(), &server.resource)
            .bearer_auth(&reader)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method}");
    }
    // The owner keeps using it.
    let own = server
        .post_in_session(
            &server.resource,
            &agent,
            Some(&session),
            call_body(3, "whoami", json!({})),
        )
        .await;
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains(AGENT_CLIENT_ID));
}

/// Attack: a live session the guard holds no binding for (made where it did not see, forgotten
/// when an attacker filled its table, or from before a restart) is presented with the
/// attacker's own valid token. The guard fails closed: 404, and the server never sees it.
#[tokio::test]
async fn a_session_the_guard_never_bound_is_refused_even_with_a_valid_token() {
    let server = legacy_session_server().await;
    let unguarded = format!("http://{}/unguarded", server.addr);
    let session = server.start_session(&unguarded, &server.demo.agent).await;
    // rmcp knows the session: through the unguarded route it serves it.
    let served = server
        .post_in_session(
            &unguarded,
            &server.demo.reader,
            Some(&session),
            call_body(2, "whoami", json!({})),
        )
        .await;
    assert_eq!(served.status(), 200);

    let refused = server
        .post_in_session(
            &server.resource,
            &server.demo.reader,
            Some(&session),
            call_body(3, "whoami", json!({})),
        )
        .await;
    assert_eq!(refused.status(), 404);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Session not found");
}

mod cors;
mod guard;
mod handler_step_up;
mod oauth;

/// A client configured with `http://localhost:PORT/mcp` (the example's URL says
/// `127.0.0.1`): the metadata and the challenge it gets name the `localhost` URL, so the
/// SDKs' resource check passes; a token issued for one name is taken only at that name.
#[tokio::test]
async fn every_loopback_name_is_served_and_tokens_stay_bound_to_theirs() {
    let server = Server::start_loopback("localhost").await;
    let port = server.addr.port();
    let at = |host: &str, path: &str| format!("http://{host}:{port}{path}");
    let localhost = server.resource.clone();
    let numeric = format!("http://127.0.0.1:{port}/mcp");
    for (host, resource) in [("localhost", &localhost), ("127.0.0.1", &numeric)] {
        let metadata: Value = server
            .http
            .get(at(host, "/.well-known/oauth-protected-resource/mcp"))
            .send()
            .await
            .expect("metadata")
            .json()
            .await
            .expect("json");
        assert_eq!(metadata["resource"], json!(resource), "{host}");
        let refused = server
            .http
            .post(at(host, "/mcp"))
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .expect("answers");
        assert_eq!(refused.status(), 401);
        let challenge = refused.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            challenge.contains(&format!(
                "resource_metadata=\"http://{host}:{port}/.well-known/oauth-protected-resource/mcp\""
            )),
            "{challenge}"
        );
    }
    let for_localhost = server.token(AGENT_CLIENT_ID, &["projects:read"], Some(&localhost));
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let ask = |host: &str, token: &str| {
        server
            .http
            .post(at(host, "/mcp"))
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&list)
            .send()
    };
    assert_eq!(ask("localhost", &for_localhost).await.expect("answers").status(), 200);
    assert_eq!(
        ask("127.0.0.1", &for_localhost).await.expect("answers").status(),
        401,
        "a token for localhost taken at 127.0.0.1"
    );
}
