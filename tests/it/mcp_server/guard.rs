//! The MCP guard over every primitive, through real HTTP: an rmcp server with tools,
//! resources, resource templates and prompts behind `McpGuardLayer` and the example's auth
//! layer (demo gateway and tokens), driven by rmcp's own client where it can say what is
//! asked, and by raw requests wherever a status, a header or a byte must be seen exactly.
//! Also the transport rules the guard applies (which mirrored headers are required, batches,
//! malformed protocol versions, stray session ids).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::{
    CallToolResult, GetPromptRequestParams, GetPromptResponse, GetPromptResult, GetTaskParams, GetTaskResult,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    Prompt, PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleClient, RoleServer, RunningService};
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_client::InsufficientScopeError;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::{ErrorData, ServerHandler, ServiceError, tool, tool_handler, tool_router};
use serde_json::{Value, json};
use tower_wacht::{McpGuardLayer, Permissions, WachtAuthLayer};

use super::mcp_server::{self, SCOPES_SUPPORTED};
use super::{Server, bounded, call, challenge, find_source, post_modern, structured};

/// A server with one of everything the guard judges.
#[derive(Clone)]
struct Catalog;

#[tool_router]
impl Catalog {
    #[tool(description = "Open to every caller with a valid token.")]
    async fn ping(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::structured(json!({"ran": "ping"})))
    }

    #[tool(description = "Needs projects:write or projects:admin.")]
    async fn deploy(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::structured(json!({"ran": "deploy"})))
    }

    #[tool(description = "No rule lists it.")]
    async fn forgotten(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::structured(json!({"ran": "forgotten"})))
    }
}

const RESOURCES: [&str; 4] = [
    "docs://guide",
    "projects://apollo/readme",
    "secret://plans",
    "docs://unlisted",
];
const TEMPLATES: [&str; 3] = ["projects://{id}/readme", "secret://{name}", "unlisted://{x}"];
const PROMPTS: [&str; 3] = ["summarize", "plan_release", "unlisted_prompt"];

#[tool_handler]
impl ServerHandler for Catalog {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_completions()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("guard-catalog", "1"))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(
            RESOURCES.iter().map(|uri| Resource::new(*uri, *uri)).collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            TEMPLATES.iter().map(|t| ResourceTemplate::new(*t, *t)).collect(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let text = format!("contents of {}", request.uri);
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(
            PROMPTS.iter().map(|p| Prompt::new(*p, None::<&str>, None)).collect(),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let message = PromptMessage::new_text(Role::User, format!("prompt {}", request.name));
        Ok(GetPromptResult::new(vec![message]).into())
    }

    async fn get_task(
        &self,
        _request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        Err(ErrorData::invalid_params("no such task", None))
    }
}

/// The catalog's rules: every primitive, an any-of rule, exact resources and templates.
fn rules() -> McpGuardLayer {
    McpGuardLayer::new()
        .tool("ping", Permissions::authenticated())
        .tool("deploy", Permissions::any(["projects:write", "projects:admin"]))
        .resource("docs://guide", Permissions::authenticated())
        .resource_template("projects://{id}/readme", Permissions::all(["projects:read"]))
        .resource("secret://plans", Permissions::all(["secrets:read"]))
        .resource_template("secret://{name}", Permissions::all(["secrets:read"]))
        .prompt("summarize", Permissions::all(["projects:read"]))
        .prompt("plan_release", Permissions::all(["projects:write"]))
        .tasks(Permissions::all(["projects:write"]))
        .stateless()
}

/// The catalog behind `guard` and the example's auth layer; answers in JSON, or in SSE when
/// `json` is false.
async fn catalog_server(guard: McpGuardLayer, json: bool) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resource = format!("http://{addr}/mcp");
    let demo = mcp_server::demo(&resource).await.unwrap();
    let auth = WachtAuthLayer::new(demo.config.clone()).unwrap();
    let service = StreamableHttpService::new(
        || Ok(Catalog),
        Arc::new(NeverSessionManager::default()),
        mcp_server::mcp_config(Some(&resource)).with_json_response(json),
    );
    let app = axum::Router::new()
        .route_service("/mcp", service)
        .layer(guard)
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
    fn token_with(&self, scopes: &[&str]) -> String {
        self.token(
            "oc_guardCatalogCaller000000000001",
            scopes,
            Some(&self.resource.clone()),
        )
    }
}

/// The scope a 403 refusal of `error` asks for.
fn asked_scope(error: &ServiceError) -> String {
    let insufficient = find_source::<InsufficientScopeError>(error).unwrap_or_else(|| panic!("a 403: {error:?}"));
    insufficient.get_required_scope().expect("a scope").to_owned()
}

/// The JSON-RPC error code of a refused request.
fn rpc_code(error: &ServiceError) -> i32 {
    match error {
        ServiceError::McpError(data) => data.code.0,
        other => panic!("a JSON-RPC error: {other:?}"),
    }
}

async fn read(client: &RunningService<RoleClient, ()>, uri: &str) -> Result<String, ServiceError> {
    let result = bounded(
        "resources/read",
        client.read_resource(ReadResourceRequestParams::new(uri)),
    )
    .await?;
    Ok(serde_json::to_value(&result.contents).unwrap()[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn prompt(client: &RunningService<RoleClient, ()>, name: &str) -> Result<(), ServiceError> {
    bounded("prompts/get", client.get_prompt(GetPromptRequestParams::new(name)))
        .await
        .map(|_| ())
}

fn legacy(id: u32, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[tokio::test]
async fn every_primitive_is_guarded_by_its_rule() {
    let server = catalog_server(rules(), true).await;
    let reader = server
        .connect(Some(&server.demo.reader))
        .await
        .expect("reader connects");

    // Allowed with the permission (projects:read), whatever the primitive.
    call(&reader, "ping", json!({})).await.expect("ping: any caller");
    assert_eq!(read(&reader, "docs://guide").await.unwrap(), "contents of docs://guide");
    assert_eq!(
        read(&reader, "projects://gemini/readme").await.unwrap(),
        "contents of projects://gemini/readme",
        "by template"
    );
    prompt(&reader, "summarize")
        .await
        .expect("summarize needs projects:read");

    // Refused without it, with a 403 asking for exactly the missing scope (then the granted).
    for uri in ["secret://plans", "secret://other"] {
        let error = read(&reader, uri).await.expect_err("needs secrets:read");
        assert_eq!(asked_scope(&error), "secrets:read projects:read", "{uri}");
    }
    let error = prompt(&reader, "plan_release").await.expect_err("needs projects:write");
    assert_eq!(asked_scope(&error), "projects:write projects:read");
    // The template does not cover more than one path segment, nor what it does not list.
    let error = read(&reader, "projects://a/b/readme").await.expect_err("unlisted");
    assert_eq!(rpc_code(&error), -32602);

    // The same rules for every other way in: subscriptions, completions, tasks.
    let reader_token = server.demo.reader.clone();
    for (what, body, scope) in [
        (
            "resources/subscribe",
            legacy(5, "resources/subscribe", json!({"uri": "secret://plans"})),
            "secrets:read projects:read",
        ),
        (
            "resources/unsubscribe",
            legacy(5, "resources/unsubscribe", json!({"uri": "secret://x"})),
            "secrets:read projects:read",
        ),
        (
            "completion of a prompt",
            legacy(
                5,
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "plan_release"}, "argument": {"name": "a", "value": ""}}),
            ),
            "projects:write projects:read",
        ),
        (
            "completion of a resource template",
            legacy(
                5,
                "completion/complete",
                json!({"ref": {"type": "ref/resource", "uri": "secret://{name}"}, "argument": {"name": "name", "value": ""}}),
            ),
            "secrets:read projects:read",
        ),
        (
            "subscriptions/listen",
            legacy(
                5,
                "subscriptions/listen",
                json!({"notifications": {"resourceSubscriptions": ["docs://guide", "secret://plans"]}}),
            ),
            "secrets:read projects:read",
        ),
        (
            "tasks/get",
            legacy(5, "tasks/get", json!({"taskId": "t1"})),
            "projects:write projects:read",
        ),
    ] {
        let resp = server.post(Some(&reader_token), &body).await;
        assert_eq!(resp.status(), 403, "{what}");
        let header = challenge(&resp);
        assert!(header.contains(&format!("scope=\"{scope}\"")), "{what}: {header}");
        assert!(header.contains("error=\"insufficient_scope\""), "{what}: {header}");
    }

    // With the permissions, the same requests reach the server.
    let agent = server.token_with(&["projects:read", "projects:write", "secrets:read"]);
    let client = server.connect(Some(&agent)).await.expect("agent connects");
    assert_eq!(
        read(&client, "secret://plans").await.unwrap(),
        "contents of secret://plans"
    );
    assert_eq!(
        read(&client, "secret://other").await.unwrap(),
        "contents of secret://other"
    );
    prompt(&client, "plan_release")
        .await
        .expect("plan_release with projects:write");
    let task = post_modern(
        &server,
        &agent,
        &[V, ("Mcp-Method", "tasks/get"), ("Mcp-Name", "t1")],
        &{
            let mut get = modern("tasks/get", Some(6), json!({"taskId": "t1"}));
            get["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
                json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
            get
        },
    )
    .await;
    assert_eq!(task.status(), 200, "tasks/get reaches the server");
    let answer: Value = task.json().await.unwrap();
    assert_eq!(answer["error"]["message"], "no such task", "{answer}");
}

#[tokio::test]
async fn unlisted_names_are_refused_by_default_and_open_with_allow_unlisted() {
    let server = catalog_server(rules(), true).await;
    let agent = server.token_with(&SCOPES_SUPPORTED);
    let client = server.connect(Some(&agent)).await.expect("connects");
    // rmcp's client reads the refusal as the server's answer for a name it does not have.
    let error = call(&client, "forgotten", json!({})).await.expect_err("unlisted tool");
    assert_eq!(rpc_code(&error), -32602);
    assert_eq!(rpc_code(&read(&client, "docs://unlisted").await.unwrap_err()), -32602);
    assert_eq!(rpc_code(&prompt(&client, "unlisted_prompt").await.unwrap_err()), -32602);
    // On the wire: 200, a JSON-RPC error for the request's id, no challenge (no scope opens
    // it: a 403 would send the client into a pointless re-authorization).
    let resp = server
        .post(Some(&agent), &super::call_body(41, "forgotten", json!({})))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("www-authenticate").is_none());
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 41);
    assert_eq!(body["error"]["code"], -32602);
    assert!(!body.to_string().contains("ran"), "{body}");
    // Tasks without a tasks rule are unlisted too.
    let no_tasks = catalog_server(McpGuardLayer::new().stateless(), true).await;
    let resp = no_tasks
        .post(
            Some(&no_tasks.demo.agent),
            &legacy(7, "tasks/get", json!({"taskId": "t1"})),
        )
        .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert_eq!(body["id"], 7);

    // The weakening option opens them again.
    let open = catalog_server(rules().allow_unlisted(), true).await;
    let agent = open.token_with(&SCOPES_SUPPORTED);
    let client = open.connect(Some(&agent)).await.expect("connects");
    let ran = call(&client, "forgotten", json!({})).await.expect("open");
    assert_eq!(structured(&ran)["ran"], "forgotten");
    assert_eq!(
        read(&client, "docs://unlisted").await.unwrap(),
        "contents of docs://unlisted"
    );
    prompt(&client, "unlisted_prompt").await.expect("open");
    // Listed names keep their rules.
    let reader = open.connect(Some(&open.demo.reader)).await.expect("connects");
    let error = read(&reader, "secret://plans").await.expect_err("still guarded");
    assert_eq!(asked_scope(&error), "secrets:read projects:read");
}

#[tokio::test]
async fn an_any_of_rule_challenges_for_its_first_alternative() {
    let server = catalog_server(rules(), true).await;
    let reader = server.connect(Some(&server.demo.reader)).await.expect("connects");
    let error = call(&reader, "deploy", json!({}))
        .await
        .expect_err("needs write or admin");
    // Not "projects:write projects:admin projects:read": one alternative is enough.
    assert_eq!(asked_scope(&error), "projects:write projects:read");
    // Either alternative opens it.
    for scopes in [&["projects:write"][..], &["projects:admin"]] {
        let token = server.token_with(scopes);
        let client = server.connect(Some(&token)).await.expect("connects");
        call(&client, "deploy", json!({})).await.expect("deploy");
    }
}

/// The names a list answer shows, with rmcp's client.
async fn listed(client: &RunningService<RoleClient, ()>) -> [Vec<String>; 4] {
    let tools = bounded("tools/list", client.list_all_tools()).await.unwrap();
    let resources = bounded("resources/list", client.list_all_resources()).await.unwrap();
    let templates = bounded("resources/templates/list", client.list_all_resource_templates())
        .await
        .unwrap();
    let prompts = bounded("prompts/list", client.list_all_prompts()).await.unwrap();
    [
        tools.iter().map(|t| t.name.to_string()).collect(),
        resources.iter().map(|r| r.uri.clone()).collect(),
        templates.iter().map(|t| t.uri_template.clone()).collect(),
        prompts.iter().map(|p| p.name.clone()).collect(),
    ]
}

#[tokio::test]
async fn lists_are_filtered_to_what_the_caller_may_use_in_json_and_in_sse() {
    for json_answers in [true, false] {
        let server = catalog_server(rules().filter_lists(), json_answers).await;
        let reader = server.connect(Some(&server.demo.reader)).await.expect("connects");
        let [tools, resources, templates, prompts] = listed(&reader).await;
        assert_eq!(tools, ["ping"], "json {json_answers}");
        assert_eq!(
            resources,
            ["docs://guide", "projects://apollo/readme"],
            "json {json_answers}"
        );
        assert_eq!(templates, ["projects://{id}/readme"], "json {json_answers}");
        assert_eq!(prompts, ["summarize"], "json {json_answers}");

        let all = server.token_with(&["projects:read", "projects:write", "secrets:read"]);
        let client = server.connect(Some(&all)).await.expect("connects");
        let [tools, resources, templates, prompts] = listed(&client).await;
        assert_eq!(tools, ["deploy", "ping"], "unlisted stay hidden; json {json_answers}");
        assert_eq!(resources, &RESOURCES[..3]);
        assert_eq!(templates, &TEMPLATES[..2]);
        assert_eq!(prompts, &PROMPTS[..2]);
    }

    // On the wire: the SSE answer is still an event stream, the id and every other field
    // kept; with allow_unlisted the unlisted names show again.
    let server = catalog_server(rules().filter_lists().allow_unlisted(), false).await;
    let resp = server
        .post(Some(&server.demo.reader), &legacy(77, "tools/list", json!({})))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        resp.headers()
    );
    assert!(resp.headers().get("content-length").is_none());
    let text = resp.text().await.unwrap();
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    let answer = data.iter().find(|m| m["id"] == 77).unwrap_or_else(|| panic!("{text}"));
    let names: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["forgotten", "ping"], "{text}");
    assert_eq!(answer["jsonrpc"], "2.0");
    let ping = &answer["result"]["tools"][1];
    assert_eq!(ping["description"], "Open to every caller with a valid token.");
    assert!(ping["inputSchema"].is_object(), "{ping}");
}

/// A server behind the guard that checks nothing and counts what reaches it.
async fn counting_server(guard: McpGuardLayer) -> (Server, Arc<AtomicUsize>) {
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
        .layer(guard)
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
    (server, reached)
}

fn modern(method: &str, id: Option<u32>, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut message = json!({"jsonrpc": "2.0", "method": method, "params": params});
    if let Some(id) = id {
        message["id"] = json!(id);
    }
    message
}

const V: (&str, &str) = ("MCP-Protocol-Version", "2026-07-28");

async fn rpc_error(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn mcp_name_is_required_only_where_the_transport_requires_it() {
    let guard = McpGuardLayer::new()
        .tool("ping", Permissions::authenticated())
        .resource("docs://guide", Permissions::authenticated())
        .tasks(Permissions::authenticated());
    let (server, reached) = counting_server(guard).await;
    let agent = server.demo.agent.clone();
    for (what, headers, body) in [
        (
            "resources/subscribe without Mcp-Name",
            vec![V, ("Mcp-Method", "resources/subscribe")],
            modern("resources/subscribe", Some(1), json!({"uri": "docs://guide"})),
        ),
        (
            "resources/unsubscribe without Mcp-Name",
            vec![V, ("Mcp-Method", "resources/unsubscribe")],
            modern("resources/unsubscribe", Some(1), json!({"uri": "docs://guide"})),
        ),
        (
            "tasks/get without Mcp-Name",
            vec![V, ("Mcp-Method", "tasks/get")],
            modern("tasks/get", Some(1), json!({"taskId": "t1"})),
        ),
        (
            "tasks/cancel without Mcp-Name",
            vec![V, ("Mcp-Method", "tasks/cancel")],
            modern("tasks/cancel", Some(1), json!({"taskId": "t1"})),
        ),
        (
            "a notification without Mcp-Method",
            vec![V],
            modern("notifications/cancelled", None, json!({"requestId": 1})),
        ),
    ] {
        let before = reached.load(Ordering::SeqCst);
        let resp = post_modern(&server, &agent, &headers, &body).await;
        let (status, body) = rpc_error(resp).await;
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(reached.load(Ordering::SeqCst), before + 1, "{what} reached the server");
    }
    // Where the transport requires them, or where a header is sent, they must match.
    for (what, headers, body) in [
        (
            "tools/call without Mcp-Name",
            vec![V, ("Mcp-Method", "tools/call")],
            modern("tools/call", Some(1), json!({"name": "ping"})),
        ),
        (
            "resources/read without Mcp-Name",
            vec![V, ("Mcp-Method", "resources/read")],
            modern("resources/read", Some(1), json!({"uri": "docs://guide"})),
        ),
        (
            "a request without Mcp-Method",
            vec![V],
            modern("tools/list", Some(1), json!({})),
        ),
        (
            "resources/subscribe with another Mcp-Name",
            vec![V, ("Mcp-Method", "resources/subscribe"), ("Mcp-Name", "docs://other")],
            modern("resources/subscribe", Some(1), json!({"uri": "docs://guide"})),
        ),
        (
            "a notification with another Mcp-Method",
            vec![V, ("Mcp-Method", "notifications/progress")],
            modern("notifications/cancelled", None, json!({"requestId": 1})),
        ),
    ] {
        let before = reached.load(Ordering::SeqCst);
        let (status, body) = rpc_error(post_modern(&server, &agent, &headers, &body).await).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!(-32020)),
            "{what}: {body}"
        );
        assert_eq!(
            reached.load(Ordering::SeqCst),
            before,
            "{what} never reached the server"
        );
    }
}

#[tokio::test]
async fn a_batch_on_2026_07_28_is_an_invalid_request() {
    let (server, reached) = counting_server(McpGuardLayer::new().tool("ping", Permissions::authenticated())).await;
    let batch = json!([
        modern("tools/call", Some(1), json!({"name": "ping"})),
        modern("tools/call", Some(2), json!({"name": "ping"})),
    ]);
    let headers = [V, ("Mcp-Method", "tools/call"), ("Mcp-Name", "ping")];
    let (status, body) = rpc_error(post_modern(&server, &server.demo.agent, &headers, &batch).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], -32600, "not a header mismatch: {body}");
    assert_eq!(body["id"], Value::Null);
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_malformed_protocol_version_is_reported_as_such() {
    let (server, reached) = counting_server(McpGuardLayer::new().tool("ping", Permissions::authenticated())).await;
    let call = modern("tools/call", Some(9), json!({"name": "ping"}));
    for version in ["not-a-version", "2026-7-28", "caf\u{e9}"] {
        let mut req = server
            .http
            .post(&server.resource)
            .bearer_auth(&server.demo.agent)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "ping")
            .json(&call);
        req = req.header(
            "mcp-protocol-version",
            reqwest::header::HeaderValue::from_bytes(version.as_bytes()).unwrap(),
        );
        let (status, body) = rpc_error(bounded("raw POST", req.send()).await.unwrap()).await;
        assert_eq!(status, 400, "{version}: {body}");
        assert_eq!(body["error"]["code"], -32020, "{version}: {body}");
        assert_eq!(body["id"], 9, "{version}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("MCP-Protocol-Version is malformed"),
            "{version}: {message}"
        );
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stray_session_id_is_ignored_on_the_stateless_example_and_on_2026_requests() {
    // The example runs stateless: a session id a client carries over from elsewhere is
    // ignored, on a legacy request and on a 2026-07-28 one alike.
    let example = Server::start().await;
    let reader = example.demo.reader.clone();
    let stray = "0d5c9a1e-stray-session";
    let legacy = example
        .post_in_session(
            &example.resource,
            &reader,
            Some(stray),
            super::call_body(1, "whoami", json!({})),
        )
        .await;
    assert_eq!(legacy.status(), 200, "legacy request on the stateless example");
    assert!(legacy.text().await.unwrap().contains(mcp_server::READER_CLIENT_ID));
    let resp = post_modern(
        &example,
        &reader,
        &[
            V,
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "whoami"),
            ("Mcp-Session-Id", stray),
        ],
        &super::modern_call("whoami", json!({})),
    )
    .await;
    assert_eq!(resp.status(), 200, "2026-07-28 request on the stateless example");

    // A server with legacy sessions: on a 2026-07-28 request the id is ignored too, while a
    // legacy request presenting a session the guard never bound still fails closed.
    let stateful = super::legacy_session_server().await;
    let reader = stateful.demo.reader.clone();
    let resp = post_modern(
        &stateful,
        &reader,
        &[
            V,
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "whoami"),
            ("Mcp-Session-Id", stray),
        ],
        &super::modern_call("whoami", json!({})),
    )
    .await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(mcp_server::READER_CLIENT_ID), "{text}");
    let refused = stateful
        .post_in_session(
            &stateful.resource,
            &reader,
            Some(stray),
            super::call_body(2, "whoami", json!({})),
        )
        .await;
    assert_eq!(refused.status(), 404, "a legacy request keeps the session binding");
    let versioned = post_modern(
        &stateful,
        &reader,
        &[("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Session-Id", stray)],
        &super::call_body(3, "whoami", json!({})),
    )
    .await;
    assert_eq!(versioned.status(), 404, "2025-11-25 has sessions: still bound");
}
