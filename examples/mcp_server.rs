//! An MCP resource server: an rmcp server over Streamable HTTP at `/mcp`, protected by
//! `WachtAuthLayer`, with per-tool permissions (`McpGuardLayer`) and RFC 9728 metadata.
//!
//! ```text
//! cargo run --example mcp_server --features test-util
//! ```
//!
//! Tools:
//! * `whoami`: the authenticated client id, granted resource, scopes and permissions, read
//!   from the `Principal` the layer inserted (any valid token);
//! * `list_projects`: requires the `projects:read` permission;
//! * `archive_project`: requires `projects:write`. A token without it gets HTTP 403
//!   `insufficient_scope` naming the scope to ask for, which MCP clients use for step-up;
//! * `admin-action`: requires `projects:write` too (the tool the official MCP conformance
//!   suite's step-up scenario calls);
//! * `read_project`: requires `projects:read`, and for a private project `projects:private`,
//!   which only the tool can tell (from its arguments): it demands the scope itself
//!   (`InsufficientScope::step_up`), and the auth layer answers 403 `insufficient_scope` for
//!   it, exactly as for a guarded tool.
//!
//! Routes: `POST /mcp` (the MCP endpoint; every request needs a token) and, without
//! authentication, the metadata document at `/.well-known/oauth-protected-resource/mcp` and
//! `/.well-known/oauth-protected-resource`. Browser pages on loopback origins (the MCP
//! Inspector in direct mode, a web client under development) may call them: `McpCorsLayer`
//! answers their preflights and lets them read every answer, the 401 challenge included.
//!
//! Configuration comes from the environment: `WACHT_BACKEND_API_KEY`, `WACHT_GATEWAY_URL`,
//! `WACHT_OAUTH_ISSUER` (your OAuth app's issuer, advertised to clients as the authorization
//! server), `WACHT_RESOURCE_URL` (the public URL of the MCP endpoint, e.g.
//! `https://mcp.example.com/mcp`: tokens must have been issued for exactly it),
//! `WACHT_DEPLOYMENT_ID` and `BIND`.
//!
//! Without `WACHT_GATEWAY_URL` it runs without a Wacht account: it starts an embedded
//! `FakeGateway` and a `DevIssuer` (a loopback OAuth authorization server playing your Wacht
//! OAuth app, issuing tokens into the fake gateway), names the dev issuer in its metadata, so
//! an MCP client that knows nothing but `http://<bound address>/mcp` (Claude Code, VS Code,
//! the MCP Inspector, an SDK client) registers (dynamic registration; a client ID metadata
//! document with `MCP_CIMD=on`, and from a loopback port with `MCP_CIMD_LOOPBACK_PORT`),
//! authorizes with PKCE, gets a token and calls tools, stepping up to `projects:write` or
//! `projects:private` when a tool asks for it. It prints ready configurations for those
//! clients, and demo tokens with ready-to-paste curl commands. With `WACHT_GATEWAY_URL` set,
//! none of this runs.
//!
//! Protocol versions: rmcp 3.11 serves MCP 2026-07-28 (no `initialize`; `server/discover`,
//! the `Mcp-Method` / `Mcp-Name` headers, checked against the body by the tool guard) and the
//! earlier versions (2025-11-25 back to 2024-11-05: `initialize`, the body alone). The server
//! runs stateless: every POST stands alone and is authenticated on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse as _;
use http::request::Parts;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::json;
use tower_wacht::scopes::ScopeHierarchy;
use tower_wacht::testing::{
    DevIssuer, DevIssuerConfig, EXAMPLE_DEPLOYMENT_ID, FakeGateway, ScopeDefinition, TokenGrant, generate_token,
};
use tower_wacht::{
    ConfigError, InsufficientScope, McpCorsLayer, McpGuardLayer, Permissions, Principal, ProtectedResourceMetadata,
    WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer,
};

/// Path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// Scopes this server understands (`scopes_supported` in the metadata document).
pub const SCOPES_SUPPORTED: [&str; 3] = ["projects:read", "projects:write", "projects:private"];
/// The scope `read_project` demands for a private project.
pub const PRIVATE_SCOPE: &str = "projects:private";
/// Scopes suggested in the 401 challenge: what a client should ask for first.
pub const CHALLENGE_SCOPES: [&str; 1] = ["projects:read"];

/// Which tool needs which permission. The guard answers 403 `insufficient_scope` before the
/// tool runs; the tools check again, so removing the layer by mistake fails closed. A tool no
/// rule lists is refused (JSON-RPC `-32602`, as an unknown tool): `whoami` is open to every
/// caller with a valid token, so it says so.
pub fn tool_guard() -> McpGuardLayer {
    McpGuardLayer::new()
        .tool("whoami", Permissions::authenticated())
        .tool("list_projects", Permissions::all(["projects:read"]))
        .tool("find_project", Permissions::all(["projects:read"]))
        .tool("archive_project", Permissions::all(["projects:write"]))
        .tool("admin-action", Permissions::all(["projects:write"]))
        .tool("read_project", Permissions::all(["projects:read"]))
}

/// Browser origins that may call `/mcp` and read its answers (CORS): loopback on any port,
/// where the MCP Inspector (`http://localhost:6274`) and web clients under development run.
/// A deployment lists its web apps' origins instead: `McpCorsLayer::new(["https://app.example.com"])`.
pub fn cors() -> McpCorsLayer {
    McpCorsLayer::loopback()
}

/// The MCP server: three tools over a fake project list.
#[derive(Clone)]
pub struct ProjectsServer {
    guard: McpGuardLayer,
}

/// The example's projects: id, name, private.
pub const PROJECTS: [(&str, &str, bool); 3] = [
    ("prj_apollo", "Apollo", false),
    ("prj_gemini", "Gemini", false),
    ("prj_mercury", "Mercury", true),
];

/// Arguments of `read_project`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ReadProject {
    /// Id of the project to read (`prj_mercury` is private).
    pub project_id: String,
}

/// Arguments of `archive_project`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ArchiveProject {
    /// Id of the project to archive.
    pub project_id: String,
}

/// Arguments of `find_project`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct FindProject {
    /// Name of the project. Mirrored in the `Mcp-Param-Project-Name` header (MCP 2026-07-28,
    /// `x-mcp-header`), which gateways and load balancers may route on; the server checks
    /// that the two agree.
    #[schemars(extend("x-mcp-header" = "Project-Name"))]
    pub name: String,
}

/// The principal the auth layer inserted into the HTTP request, which rmcp hands to tools
/// as `http::request::Parts`.
fn principal(parts: &Parts) -> Result<Principal, ErrorData> {
    parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
        ErrorData::internal_error(
            "no authenticated principal: WachtAuthLayer must wrap the MCP service",
            None,
        )
    })
}

#[tool_router]
impl ProjectsServer {
    /// A server enforcing `guard` inside its tools as well.
    pub fn new(guard: McpGuardLayer) -> Self {
        ProjectsServer { guard }
    }

    /// The principal of this call, if it may call `tool`.
    fn authorize(&self, tool: &str, parts: &Parts) -> Result<Principal, ErrorData> {
        let principal = principal(parts)?;
        if let Some(required) = self.guard.required_for(tool)
            && let Err(denied) = required.check(&principal)
        {
            return Err(ErrorData::invalid_request(denied.to_string(), None));
        }
        Ok(principal)
    }

    #[tool(description = "Who is calling: the OAuth client id, the resource the user granted, scopes and permissions.")]
    async fn whoami(&self, Extension(parts): Extension<Parts>) -> Result<CallToolResult, ErrorData> {
        let p = self.authorize("whoami", &parts)?;
        Ok(CallToolResult::structured(json!({
            "client_id": p.client_id(),
            "granted_resource": p.granted_resource(),
            "scopes": p.scopes(),
            "permissions": p.permissions(),
            "audience": p.oauth_resource(),
            "issuer": p.issuer(),
            "expires_at": p.expires_at_rfc3339(),
        })))
    }

    #[tool(description = "List the projects of the granted organization (requires projects:read).")]
    async fn list_projects(&self, Extension(parts): Extension<Parts>) -> Result<CallToolResult, ErrorData> {
        let p = self.authorize("list_projects", &parts)?;
        Ok(CallToolResult::structured(json!({
            "organization": p.granted_resource(),
            "projects": [
                { "id": "prj_apollo", "name": "Apollo" },
                { "id": "prj_gemini", "name": "Gemini" },
            ],
        })))
    }

    #[tool(
        description = "Find a project by name (requires projects:read). Its name travels in the Mcp-Param-Project-Name header too."
    )]
    async fn find_project(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<FindProject>,
    ) -> Result<CallToolResult, ErrorData> {
        self.authorize("find_project", &parts)?;
        let found = [("prj_apollo", "Apollo"), ("prj_gemini", "Gemini")]
            .into_iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(&args.name));
        Ok(CallToolResult::structured(json!({
            "project": found.map(|(id, name)| json!({ "id": id, "name": name })),
        })))
    }

    #[tool(description = "Archive a project (requires projects:write).")]
    async fn archive_project(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ArchiveProject>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.authorize("archive_project", &parts)?;
        Ok(CallToolResult::structured(json!({
            "archived": args.project_id,
            "by": p.client_id(),
        })))
    }

    #[tool(
        description = "Read a project (requires projects:read; a private project, such as prj_mercury, also projects:private)."
    )]
    async fn read_project(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ReadProject>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = self.authorize("read_project", &parts)?;
        let Some((id, name, private)) = PROJECTS.into_iter().find(|(id, ..)| *id == args.project_id) else {
            return Err(ErrorData::invalid_params("no such project", None));
        };
        if private && !p.has_permission(PRIVATE_SCOPE) {
            // Only the tool knows this project is private: it asks for the scope itself. The
            // auth layer answers 403 insufficient_scope instead of this error (clients step up
            // as for a guarded tool); without the layer, the error is the answer.
            let demand = InsufficientScope::new([PRIVATE_SCOPE]);
            demand.step_up(&parts.extensions);
            return Err(ErrorData::invalid_request(demand.to_string(), None));
        }
        Ok(CallToolResult::structured(json!({
            "id": id,
            "name": name,
            "private": private,
            "organization": p.granted_resource(),
        })))
    }

    #[tool(
        name = "admin-action",
        description = "An administrative action (requires projects:write); the MCP conformance suite's step-up scenario calls it."
    )]
    async fn admin_action(&self, Extension(parts): Extension<Parts>) -> Result<CallToolResult, ErrorData> {
        let p = self.authorize("admin-action", &parts)?;
        Ok(CallToolResult::structured(json!({ "done": true, "by": p.client_id() })))
    }
}

#[tool_handler(
    name = "tower-wacht-mcp-example",
    instructions = "Demo MCP server protected by Wacht OAuth access tokens."
)]
impl ServerHandler for ProjectsServer {}

/// rmcp's Streamable HTTP settings: stateless (every request stands alone and is
/// authenticated on its own, no session to hijack), plain JSON answers (a tool's step-up
/// demand reaches the auth layer before the answer starts), `Host` values limited to loopback
/// plus the host of the resource URL, and a browser `Origin`, when one is sent, limited to the
/// CORS origins ([`cors`]) and the resource URL's own origin (the MCP transport requires
/// servers to validate `Origin`, against DNS rebinding). A request without `Origin` (any
/// non-browser client) is not affected. rmcp answers a refused origin with 403 after the
/// auth layer has checked the token.
pub fn mcp_config(resource: Option<&str>) -> StreamableHttpServerConfig {
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    // Every origin whose pages may read answers (CORS) is one rmcp serves.
    let mut origins = cors().allowed_origins();
    if let Some(uri) = resource.and_then(|r| r.parse::<http::Uri>().ok())
        && let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority())
    {
        hosts.push(authority.host().to_owned());
        origins.push(format!("{scheme}://{authority}"));
    }
    StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
}

/// The application: the MCP service at `/mcp` behind the tool guard and the auth layer, the
/// metadata document outside the layer (clients fetch it before they hold a token), and CORS
/// in front of both (preflights are answered before the auth layer, which would refuse them).
/// The server is stateless, and the guard told so: a stray `Mcp-Session-Id` is ignored.
pub fn app(auth: WachtAuthLayer) -> Router {
    let guard = tool_guard().stateless();
    let server = ProjectsServer::new(guard.clone());
    let resource = auth.resource_metadata().map(|m| m.resource().to_owned());
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(NeverSessionManager::default()),
        mcp_config(resource.as_deref()),
    );
    Router::new()
        .route_service(MCP_PATH, mcp)
        .layer(guard)
        .layer(auth.oauth_only()) // MCP clients authorize with OAuth: never an API key here
        .merge(auth.metadata_router())
        .layer(cors())
}

/// The loopback names of a loopback resource URL, its own first: `http://127.0.0.1:PORT/mcp`
/// gives it and the same URL with `localhost` and `[::1]`. Empty for any other URL. A client
/// configured with `http://localhost:PORT/mcp` checks that the metadata names exactly that
/// URL, so a development server answers for each name.
pub fn loopback_forms(resource: &str) -> Vec<String> {
    let Ok(uri) = resource.parse::<http::Uri>() else {
        return Vec::new();
    };
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Vec::new();
    };
    if !matches!(authority.host(), "127.0.0.1" | "localhost" | "[::1]") {
        return Vec::new();
    }
    let port = authority.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    let mut forms = vec![resource.to_owned()];
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        let form = format!("http://{host}{port}{path}");
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// The example for every loopback name of its URL (development only): one layer per name,
/// chosen by the request's `Host`. Each names its own URL in its metadata and challenges, and
/// takes only tokens issued for it (a token for `http://localhost:PORT/mcp` is refused when
/// sent to `127.0.0.1`). A request for another host goes to the first. A production server
/// has one canonical resource and uses [`app`].
pub fn loopback_app(layers: Vec<WachtAuthLayer>) -> Router {
    let apps: Vec<(String, Router)> = layers
        .into_iter()
        .filter_map(|auth| {
            let resource = auth.resource_metadata()?.resource().to_owned();
            let host = resource
                .parse::<http::Uri>()
                .ok()?
                .authority()?
                .as_str()
                .to_ascii_lowercase();
            Some((host, app(auth)))
        })
        .collect();
    Router::new().fallback_service(ByHost(Arc::new(apps)))
}

/// Routes a request to the app of its `Host` (see [`loopback_app`]).
#[derive(Clone)]
struct ByHost(Arc<Vec<(String, Router)>>);

impl tower::Service<axum::extract::Request> for ByHost {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        let app = self
            .0
            .iter()
            .find(|(name, _)| Some(name.as_str()) == host.as_deref())
            .or_else(|| self.0.first())
            .map(|(_, app)| app.clone());
        Box::pin(async move {
            match app {
                Some(app) => tower::ServiceExt::oneshot(app, request).await,
                None => Ok(http::StatusCode::MISDIRECTED_REQUEST.into_response()),
            }
        })
    }
}

/// Completes a layer configuration for an MCP server at `resource` whose tokens `issuer`
/// issues: the RFC 9728 document (advertised in every 401/403 challenge), the required token
/// audience and issuer, and the scopes suggested in 401 challenges.
pub fn mcp_auth_config(
    builder: WachtAuthConfigBuilder,
    resource: &str,
    issuer: &str,
) -> Result<WachtAuthConfig, ConfigError> {
    let metadata = ProtectedResourceMetadata::builder(resource)
        .authorization_server(issuer)
        .scopes_supported(SCOPES_SUPPORTED)
        .resource_name("tower-wacht example MCP server")
        .resource_documentation("https://docs.rs/tower-wacht")
        .build()?;
    builder
        .resource_metadata(metadata)
        .expected_audience(resource)
        .expected_issuer(issuer)
        .challenge_scopes(CHALLENGE_SCOPES)
        // MCP asks servers to honour scope hierarchies: write access includes read access.
        .scope_hierarchy(ScopeHierarchy::new().implies("projects:write", ["projects:read"]))
        // Tools may ask for more scope themselves (`read_project`, for a private project).
        .handler_step_up(true)
        .build()
}

/// Client id of the demo token with every scope.
pub const AGENT_CLIENT_ID: &str = "oc_demoMcpAgentAllScopes0000000001";
/// Client id of the demo token with `projects:read` only.
pub const READER_CLIENT_ID: &str = "oc_demoMcpReaderReadOnly000000002";
/// Client id of the demo token issued for another server.
pub const FOREIGN_CLIENT_ID: &str = "oc_demoMcpForeignAudience00000003";
/// The organization the demo tokens were granted for.
pub const DEMO_ORGANIZATION: &str = "urn:wacht:organization:427001234567890561";
/// The resource the foreign demo token was issued for.
pub const OTHER_RESOURCE: &str = "https://other.example.com/mcp";

/// The embedded gateway and authorization server, the configuration pointing at them, and the
/// demo tokens.
pub struct Demo {
    /// The fake gateway (stops when dropped).
    pub gateway: FakeGateway,
    /// The development authorization server the metadata names; the tokens it issues are
    /// registered in `gateway` (stops when dropped).
    pub issuer: DevIssuer,
    /// Layer configuration for `resource`, checking tokens with the fake gateway.
    pub config: WachtAuthConfig,
    /// `projects:read projects:write projects:private`, issued for this server.
    pub agent: String,
    /// `projects:read`, issued for this server.
    pub reader: String,
    /// Every scope, but issued for [`OTHER_RESOURCE`].
    pub foreign: String,
    /// The demo calls printed at start-up.
    pub calls: Vec<DemoCall>,
}

/// The development authorization server's settings: the example's scopes, tokens granted for
/// the demo organization, every requested scope approved at once (so a client asks for
/// `projects:read` first, as the 401 challenge suggests, and steps up to `projects:write`
/// when `archive_project` answers 403), client ID metadata documents off (clients register
/// dynamically; [`metadata_documents_from_env`] turns them on), and no refresh tokens: the
/// MCP Inspector and other clients on the TypeScript SDK 1.x answer a 403
/// `insufficient_scope` with a refresh, which cannot add a scope, and give up; without a
/// refresh token they authorize again with the challenged scopes, so step-up works in them
/// too. Tokens last an hour; then clients authorize again (approved at once).
pub fn dev_issuer_config() -> DevIssuerConfig {
    DevIssuerConfig::new(SCOPES_SUPPORTED)
        .granted_resource(DEMO_ORGANIZATION)
        .refresh_tokens(false)
}

/// Client ID metadata documents in the dev issuer, as asked by `MCP_CIMD` (`on` or `off`,
/// the default) and `MCP_CIMD_LOOPBACK_PORT`: with `MCP_CIMD=on` the dev issuer advertises
/// them and fetches a client's document from its `https` URL (public addresses only: Claude
/// Code's and VS Code's documents need internet access); `MCP_CIMD_LOOPBACK_PORT=<port>` also
/// accepts documents served on this machine at that one port (a client under development).
/// Off, clients that prefer documents register dynamically instead.
pub fn metadata_documents_from_env(
    config: DevIssuerConfig,
    cimd: Option<&str>,
    loopback_port: Option<&str>,
) -> Result<DevIssuerConfig, String> {
    let enabled = match cimd.map(str::trim) {
        None | Some("off") => false,
        Some("on") => true,
        Some(other) => return Err(format!("MCP_CIMD must be `on` or `off`, not `{other}`")),
    };
    let mut config = config.client_id_metadata_documents(enabled);
    if let Some(port) = loopback_port {
        if !enabled {
            return Err("MCP_CIMD_LOOPBACK_PORT needs MCP_CIMD=on".to_owned());
        }
        let port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("MCP_CIMD_LOOPBACK_PORT must be a port number, not `{port}`"))?;
        config = config.allow_loopback_metadata_document_port(port);
    }
    Ok(config)
}

/// Starts a fake gateway and a development authorization server ([`dev_issuer_config`]), and
/// registers demo tokens for the MCP server at `resource`.
pub async fn demo(resource: &str) -> std::io::Result<Demo> {
    demo_with(resource, dev_issuer_config()).await
}

/// [`demo`] with this development authorization server configuration.
pub async fn demo_with(resource: &str, issuer_config: DevIssuerConfig) -> std::io::Result<Demo> {
    let gateway = FakeGateway::start().await?;
    gateway.set_scope_definitions(vec![
        ScopeDefinition::organization("projects:read", "org:projects:read"),
        ScopeDefinition::organization("projects:write", "org:projects:write"),
        ScopeDefinition::organization(PRIVATE_SCOPE, "org:projects:private"),
    ]);
    let issuer = DevIssuer::start(gateway.clone(), issuer_config).await?;
    let issuer_url = issuer.url();
    let grant = |client: &str, scopes: &[&str], audience: &str| {
        TokenGrant::new(client)
            .scopes(scopes.iter().copied())
            .granted_resource(DEMO_ORGANIZATION)
            .oauth_resource(audience)
            .issuer(issuer_url.as_str())
            .expires_in(Duration::from_secs(3600))
    };
    let agent = generate_token();
    gateway.register(&agent, grant(AGENT_CLIENT_ID, &SCOPES_SUPPORTED, resource));
    let reader = generate_token();
    gateway.register(&reader, grant(READER_CLIENT_ID, &["projects:read"], resource));
    let foreign = generate_token();
    gateway.register(&foreign, grant(FOREIGN_CLIENT_ID, &SCOPES_SUPPORTED, OTHER_RESOURCE));

    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key("demo-backend-key")
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID);
    let config = mcp_auth_config(builder, resource, &issuer_url).map_err(std::io::Error::other)?;
    let metadata_url = config
        .resource_metadata()
        .map(|m| m.well_known_url().to_owned())
        .unwrap_or_default();
    let calls = demo_calls(resource, &metadata_url, &agent, &reader, &foreign);
    Ok(Demo {
        gateway,
        issuer,
        config,
        agent,
        reader,
        foreign,
        calls,
    })
}

impl Demo {
    /// Layer configurations for every loopback name of `resource` (see [`loopback_forms`]),
    /// its own first: the same gateway and issuer, each pinning its own URL as the audience.
    pub fn loopback_configs(&self, resource: &str) -> Result<Vec<WachtAuthConfig>, ConfigError> {
        let issuer = self.issuer.url();
        loopback_forms(resource)
            .iter()
            .map(|form| {
                let builder = WachtAuthConfig::builder()
                    .gateway_url(self.gateway.url())
                    .api_key("demo-backend-key")
                    .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID);
                mcp_auth_config(builder, form, &issuer)
            })
            .collect()
    }
}

/// One demo request: what to send and what the example promises it answers.
pub struct DemoCall {
    /// What it shows.
    pub what: &'static str,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Absolute URL.
    pub url: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// JSON-RPC body of a POST.
    pub body: Option<String>,
    /// The status it answers.
    pub expect_status: u16,
}

impl DemoCall {
    /// The request as a curl command line.
    pub fn curl(&self) -> String {
        let mut cmd = String::from("curl -i");
        if let Some(t) = &self.token {
            cmd.push_str(&format!(" -H 'Authorization: Bearer {t}'"));
        }
        if let Some(body) = &self.body {
            cmd.push_str(" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'");
            cmd.push_str(&format!(" -d '{body}'"));
        }
        cmd.push(' ');
        cmd.push_str(&self.url);
        cmd
    }
}

fn tools_call(id: u32, tool: &str, arguments: serde_json::Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
        .to_string()
}

fn demo_calls(resource: &str, metadata_url: &str, agent: &str, reader: &str, foreign: &str) -> Vec<DemoCall> {
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}},
    })
    .to_string();
    let post = |what, token: Option<&str>, body: String, expect_status| DemoCall {
        what,
        method: "POST",
        url: resource.to_owned(),
        token: token.map(str::to_owned),
        body: Some(body),
        expect_status,
    };
    vec![
        DemoCall {
            what: "protected resource metadata (RFC 9728), no token needed: 200",
            method: "GET",
            url: metadata_url.to_owned(),
            token: None,
            body: None,
            expect_status: 200,
        },
        post(
            "no token: 401 with a challenge pointing at the metadata",
            None,
            initialize.clone(),
            401,
        ),
        post("initialize with a token: 200", Some(agent), initialize.clone(), 200),
        post(
            "whoami: 200, names the client, the granted organization and the scopes",
            Some(reader),
            tools_call(2, "whoami", json!({})),
            200,
        ),
        post(
            "archive_project with projects:write: 200",
            Some(agent),
            tools_call(3, "archive_project", json!({"project_id": "prj_apollo"})),
            200,
        ),
        post(
            "archive_project without projects:write: 403 insufficient_scope, scope=\"projects:write ...\"",
            Some(reader),
            tools_call(3, "archive_project", json!({"project_id": "prj_apollo"})),
            403,
        ),
        post(
            "read_project of a private project without projects:private: the tool asks for it, 403 insufficient_scope, scope=\"projects:private ...\"",
            Some(reader),
            tools_call(4, "read_project", json!({"project_id": "prj_mercury"})),
            403,
        ),
        post(
            "read_project of a private project with projects:private: 200",
            Some(agent),
            tools_call(4, "read_project", json!({"project_id": "prj_mercury"})),
            200,
        ),
        post(
            "a token issued for another server: 401 invalid_token",
            Some(foreign),
            initialize,
            401,
        ),
    ]
}

/// VS Code's `mcp.json` (`.vscode/mcp.json` in a workspace, or the user configuration) naming
/// the server at `resource`.
pub fn vscode_mcp_json(resource: &str) -> String {
    let config = json!({"servers": {"tower-wacht": {"type": "http", "url": resource}}});
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// What the example prints in its no-account mode: how to point Claude Code, VS Code and the
/// MCP Inspector at the server at `resource`, whose dev issuer is at `issuer`, and what they
/// do then.
pub fn client_setup(resource: &str, issuer: &str) -> String {
    let vscode: String = vscode_mcp_json(resource)
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    format!(
        "Connect an MCP client to {resource} (this exact URL: tokens are issued for it).\n\
         The client gets 401, finds the dev issuer at {issuer} through the metadata, registers\n\
         (dynamic registration; its client ID metadata document instead with MCP_CIMD=on) and\n\
         opens your browser on {issuer}/oauth/authorize. There is no login form: the dev\n\
         issuer approves at once and sends the browser back to the client, which says it is\n\
         authorized. archive_project asks for projects:write: the client goes through the\n\
         browser once more.\n\
         \n\
         Claude Code:\n\
         \x20   claude mcp add --transport http tower-wacht {resource}\n\
         \x20 then, in Claude Code: /mcp, choose tower-wacht, Authenticate.\n\
         \n\
         VS Code: put this in .vscode/mcp.json (or in the user mcp.json,\n\
         \x20 \"MCP: Open User Configuration\"):\n\
         {vscode}\
         \x20 then start the server (\"Start\" above it, or \"MCP: List Servers\") and allow the sign-in.\n\
         \n\
         MCP Inspector (npx @modelcontextprotocol/inspector, Node 22.19 or later): add a server\n\
         \x20 with transport Streamable HTTP and URL {resource}, and connect (its backend calls\n\
         \x20 the server). In the 1.x Inspector (npx @modelcontextprotocol/inspector@v1-latest):\n\
         \x20 Transport Type \"Streamable HTTP\", URL {resource}, Connection Type \"Via Proxy\"\n\
         \x20 (its proxy calls the server) or \"Direct\" (your browser calls the server itself,\n\
         \x20 cross-origin), then Connect."
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_wacht=debug".into()),
        )
        .init();
    let bind: SocketAddr = std::env::var("BIND")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    // Bind first: without WACHT_RESOURCE_URL the resource URL is built from the bound address.
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let local = listener.local_addr()?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());

    let (config, demo) = if env("WACHT_GATEWAY_URL").is_some() {
        let base = WachtAuthConfig::from_env()?;
        let resource = env("WACHT_RESOURCE_URL").ok_or(ConfigError::Missing("WACHT_RESOURCE_URL"))?;
        let issuer = env("WACHT_OAUTH_ISSUER").ok_or(ConfigError::Missing("WACHT_OAUTH_ISSUER"))?;
        (mcp_auth_config(base.to_builder(), &resource, &issuer)?, None)
    } else {
        let resource = env("WACHT_RESOURCE_URL").unwrap_or_else(|| {
            let host = if local.ip().is_unspecified() {
                SocketAddr::from(([127, 0, 0, 1], local.port()))
            } else {
                local
            };
            format!("http://{host}{MCP_PATH}")
        });
        let issuer_config = metadata_documents_from_env(
            dev_issuer_config(),
            env("MCP_CIMD").as_deref(),
            env("MCP_CIMD_LOOPBACK_PORT").as_deref(),
        )?;
        let demo = demo_with(&resource, issuer_config).await?;
        (demo.config.clone(), Some(demo))
    };
    // Development: one layer per loopback name of the URL (a client may be configured with
    // `localhost` or `[::1]` as well as `127.0.0.1`); otherwise one canonical resource.
    let mut aliases = Vec::new();
    if let Some(demo) = &demo
        && let Some(resource) = config.resource_metadata().map(|m| m.resource().to_owned())
    {
        for alias in demo.loopback_configs(&resource)?.into_iter().skip(1) {
            aliases.push(WachtAuthLayer::new(alias)?);
        }
    }
    let auth = WachtAuthLayer::new(config)?;
    let (resource, metadata_url) = match auth.resource_metadata() {
        Some(m) => (m.resource().to_owned(), m.well_known_url().to_owned()),
        None => return Err("resource metadata is not configured".into()),
    };

    let public_path = resource
        .parse::<http::Uri>()
        .map(|u| u.path().trim_end_matches('/').to_owned());
    if public_path.as_deref().ok() != Some(MCP_PATH) {
        eprintln!(
            "warning: this process serves MCP at {MCP_PATH}; route the public URL {resource} to it \
             (the metadata is served at its path-aware and root well-known paths)"
        );
    }

    println!("tower-wacht MCP server listening on http://{local}");
    println!("MCP endpoint (resource URL, required token audience): {resource}");
    println!("Protected resource metadata: {metadata_url}");
    if let Some(demo) = &demo {
        println!(
            "\nNo WACHT_GATEWAY_URL set: using an embedded fake gateway at {}",
            demo.gateway.url()
        );
        println!(
            "and a development authorization server at {} (named in the metadata; it approves \
             every request at once)",
            demo.issuer.url()
        );
        println!("\n{}", client_setup(&resource, &demo.issuer.url()));
        println!("\nDemo tokens (valid for one hour):");
        println!(
            "  agent   ({}, projects:read projects:write projects:private): {}",
            AGENT_CLIENT_ID, demo.agent
        );
        println!(
            "  reader  ({}, projects:read):                                  {}",
            READER_CLIENT_ID, demo.reader
        );
        println!(
            "  foreign ({}, issued for {OTHER_RESOURCE}): {}",
            FOREIGN_CLIENT_ID, demo.foreign
        );
        println!("\nOr send a demo token yourself (`Authorization: Bearer <token>`), as in these:\n");
        for call in &demo.calls {
            println!("# {}\n{}\n", call.what, call.curl());
        }
    }
    if aliases.is_empty() {
        axum::serve(listener, app(auth).into_make_service_with_connect_info::<SocketAddr>()).await?;
        return Ok(());
    }
    let also: Vec<String> = aliases
        .iter()
        .filter_map(|a| a.resource_metadata().map(|m| m.resource().to_owned()))
        .collect();
    println!(
        "\nAlso answering as {} (each with its own metadata; a token is taken only at the URL it was issued for).",
        also.join(" and ")
    );
    let app = loopback_app(std::iter::once(auth).chain(aliases).collect());
    // `[::1]` too, when the machine has IPv6 loopback (clients may resolve `localhost` to it).
    if local.ip().is_ipv4()
        && let Ok(v6) =
            tokio::net::TcpListener::bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))).await
    {
        let app = app.clone();
        tokio::spawn(async move {
            let _ = axum::serve(v6, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
    }
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
