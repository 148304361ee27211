//! Quickstart: an Axum service protected by `WachtAuthLayer`.
//!
//! ```text
//! cargo run --example quickstart --features test-util
//! ```
//!
//! Routes:
//! * `GET /public`: anonymous callers allowed; says who is calling if a token is sent;
//! * `GET /whoami`: the caller's principal as JSON (token required);
//! * `POST /tools/invoke`: requires the `mcp:invoke` permission;
//! * `GET /events`: server-sent events, one a second, for as long as the caller's token stands
//!   (token required): the stream ends when the token expires, or within `stream_recheck`
//!   (5 s) after it is revoked here (`invalidate`) or its client is denied (`deny_client`).
//!
//! * `POST /webhooks/wacht`: Wacht's webhooks (`WachtWebhooks`, outside the auth layer: Wacht
//!   signs its deliveries and sends no token), with the signing secret in
//!   `WACHT_WEBHOOK_SECRET` (`whsec_...`). A `session.deleted` refuses that session's JWTs, a
//!   `user.deleted` drops the user's cached tokens and API keys, and so on.
//!
//! Configuration comes from the environment (`WACHT_BACKEND_API_KEY`, `WACHT_GATEWAY_URL`,
//! `WACHT_DEPLOYMENT_ID`, `WACHT_OAUTH_ISSUER`, `WACHT_RESOURCE_URL`, `WACHT_JWT`,
//! `WACHT_WEBHOOK_SECRET`, `BIND`). Without `WACHT_GATEWAY_URL` it starts an embedded
//! `FakeGateway` (opaque tokens) and a `JwksIssuer` (JWT access tokens, verified locally) with
//! demo tokens and prints ready-to-paste curl commands, so it runs without a Wacht account. In
//! that demo mode it also serves `POST /demo/revoke`, which revokes the demo stream token (at
//! the fake gateway, and here with `invalidate`) so you can watch its stream end, and prints a
//! correctly signed `session.deleted` webhook (signed with `WACHT_WEBHOOK_SECRET`, or a secret
//! made up at start) that ends a demo JWT's access.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde_json::json;
use tower_wacht::jwt::JwtConfig;
use tower_wacht::testing::{
    AccessTokenClaims, ApiKeyGrant, EXAMPLE_DEPLOYMENT_ID, FakeGateway, JwksIssuer, ScopeDefinition, TokenGrant,
    WebhookSigner, generate_api_key, generate_token,
};
use tower_wacht::{Principal, RequirePermissionsLayer, WachtAuthConfig, WachtAuthLayer, WachtWebhooks};

/// The application: four routes behind one auth layer (optional auth, so `/public` also
/// serves anonymous callers; the other routes still require a token).
pub fn app(auth: WachtAuthLayer) -> Router {
    Router::new()
        .route("/tools/invoke", post(invoke))
        .route_layer(RequirePermissionsLayer::all(["mcp:invoke"]))
        .route("/whoami", get(whoami))
        .route("/events", get(events))
        .route("/public", get(public))
        .layer(auth)
}

/// One event a second, for as long as the layer lets the stream run. The handler knows nothing
/// about expiry or revocation: the layer ends the response body when the caller's token
/// expires or is revoked (an SSE client sees the stream end; reconnecting gets the 401 that
/// says why).
async fn events(principal: Principal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = futures_util::stream::unfold(0u64, move |n| {
        let principal = principal.clone();
        async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let data = json!({
                "n": n + 1,
                "client_id": principal.client_id(),
                "expires_at": principal.expires_at_rfc3339(),
            });
            Some((Ok(Event::default().event("tick").data(data.to_string())), n + 1))
        }
    });
    Sse::new(ticks).keep_alive(KeepAlive::default())
}

async fn public(principal: Option<Principal>) -> String {
    match principal {
        Some(p) => format!("Hello, {}! This route is public.\n", p.client_id()),
        None => "Hello, anonymous caller! This route is public.\n".to_owned(),
    }
}

async fn whoami(principal: Principal) -> Json<serde_json::Value> {
    Json(json!({
        "client_id": principal.client_id(),
        "granted_resource": principal.granted_resource(),
        "scopes": principal.scopes(),
        "permissions": principal.permissions(),
        "expires_at": principal.expires_at_rfc3339(),
        "verified_by": principal.verified_by().as_str(),
        "credential_kind": principal.credential_kind().as_str(),
        "api_key": principal.api_key(),
    }))
}

async fn invoke(principal: Principal) -> Json<serde_json::Value> {
    Json(json!({ "invoked": true, "by": principal.client_id() }))
}

/// One demo request: what to send and what the quickstart promises it answers.
pub struct DemoCall {
    pub what: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub token: Option<String>,
    /// The header the credential goes in: `Authorization` (as `Bearer`), or the API-key
    /// header.
    pub header: &'static str,
    pub expect_status: u16,
}

impl DemoCall {
    pub fn curl(&self, base: &str) -> String {
        let method = if self.method == "GET" {
            String::new()
        } else {
            format!("-X {} ", self.method)
        };
        let auth = match (&self.token, self.header) {
            (Some(t), "Authorization") => format!("-H 'Authorization: Bearer {t}' "),
            (Some(t), header) => format!("-H '{header}: {t}' "),
            (None, _) => String::new(),
        };
        format!("curl -i {method}{auth}{base}{}", self.path)
    }

    /// The same for a stream: `curl -N` prints each event as it arrives.
    pub fn curl_stream(&self, base: &str) -> String {
        self.curl(base).replacen("curl -i ", "curl -N -i ", 1)
    }
}

/// Where Wacht's webhooks are received.
pub const WEBHOOK_PATH: &str = "/webhooks/wacht";

/// The webhook receiver for `auth`, signed with `secret` (one `whsec_...` secret, or two
/// separated by a space or a comma while rotating it).
pub fn webhooks(auth: &WachtAuthLayer, secret: &str) -> Result<Router, tower_wacht::ConfigError> {
    let secrets = secret.split([' ', ',']).filter(|s| !s.is_empty());
    Ok(WachtWebhooks::new(auth, secrets)?.router(WEBHOOK_PATH))
}

/// A signed webhook delivery the quickstart prints, and what it does.
pub struct DemoWebhook {
    pub what: &'static str,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    pub headers: [(&'static str, String); 3],
    /// The raw body (JSON, without single quotes).
    pub body: String,
}

impl DemoWebhook {
    /// A delivery of `event` with `data`, signed by `signer` now.
    pub fn signed(what: &'static str, signer: &WebhookSigner, id: &str, event: &str, data: serde_json::Value) -> Self {
        let body = WebhookSigner::event(event, data);
        let headers = signer.sign_now(id, body.as_bytes());
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        DemoWebhook {
            what,
            headers: [
                ("webhook-id", value("webhook-id")),
                ("webhook-timestamp", value("webhook-timestamp")),
                ("webhook-signature", value("webhook-signature")),
            ],
            body,
        }
    }

    pub fn curl(&self, base: &str) -> String {
        let headers: String = self
            .headers
            .iter()
            .map(|(name, value)| format!("-H '{name}: {value}' "))
            .collect();
        format!(
            "curl -i -X POST {headers}-H 'content-type: application/json' -d '{}' {base}{WEBHOOK_PATH}",
            self.body
        )
    }
}

/// The embedded Wacht stand-ins and what the quickstart prints.
pub struct Demo {
    /// Verifies the opaque demo tokens.
    pub gateway: FakeGateway,
    /// The OAuth app's issuer: serves the JWKS the JWT demo token verifies against.
    pub issuer: JwksIssuer,
    /// The layer configuration pointing at both.
    pub config: WachtAuthConfig,
    /// The demo requests.
    pub calls: Vec<DemoCall>,
    /// The API-key demo requests.
    pub api_keys: Vec<DemoCall>,
    /// Streams to watch end: with a token that expires soon, and with one to revoke.
    pub streams: Vec<DemoCall>,
    /// Revokes the second stream's token (`POST /demo/revoke`, see [`Demo::router`]).
    pub revoke: DemoCall,
    /// The token `POST /demo/revoke` revokes (the second stream's).
    pub revocable: String,
    /// Signs the demo webhook (the receiver takes its secret).
    pub signer: WebhookSigner,
    /// A JWT of a session, before and after `webhook`.
    pub session_jwt: DemoCall,
    /// Wacht saying that session was deleted.
    pub webhook: DemoWebhook,
    /// The same JWT, refused now.
    pub session_jwt_after: DemoCall,
}

impl Demo {
    /// `POST /demo/revoke`, outside the auth layer: revokes the demo stream token at the fake
    /// gateway (so its next request gets 401) and tells the layer (`invalidate`), so that its
    /// open stream ends. Demo only: a real server keeps such operator routes on a listener
    /// of their own, behind their own protection (see `examples/fleet.rs`).
    pub fn router(&self, auth: WachtAuthLayer) -> Router {
        let state = (self.gateway.clone(), auth, self.revocable.clone());
        Router::new().route("/demo/revoke", post(revoke)).with_state(state)
    }
}

async fn revoke(State((gateway, auth, token)): State<(FakeGateway, WachtAuthLayer, String)>) -> StatusCode {
    gateway.revoke(&token);
    auth.invalidate(&token).await;
    StatusCode::NO_CONTENT
}

/// How long after the start the short-lived demo stream token expires.
pub const SHORT_LIVED: Duration = Duration::from_secs(120);

/// Starts the embedded fake gateway and JWT issuer with demo tokens; the demo webhook is
/// signed with a secret made up now.
pub async fn demo() -> std::io::Result<Demo> {
    demo_with(SHORT_LIVED, WebhookSigner::generate()).await
}

/// [`demo`], with the short-lived stream token expiring `short_lived` after the start, and the
/// demo webhook signed by `signer`.
pub async fn demo_with(short_lived: Duration, signer: WebhookSigner) -> std::io::Result<Demo> {
    let gateway = FakeGateway::start().await?;
    let issuer = JwksIssuer::start().await?;
    let definitions = vec![ScopeDefinition::organization("projects:read", "org:projects:read")];
    gateway.set_scope_definitions(definitions.clone());
    let grant = |client: &str, scopes: &[&str]| {
        TokenGrant::new(client)
            .issuer(issuer.url())
            .scopes(scopes.iter().copied())
            .granted_resource("urn:wacht:organization:427001234567890561")
            .expires_in(Duration::from_secs(3600))
    };
    let agent = generate_token();
    gateway.register(
        &agent,
        grant("oc_demoAgentWithInvokeScope00000001", &["mcp:invoke", "projects:read"]),
    );
    let reader = generate_token();
    gateway.register(&reader, grant("oc_demoReaderWithoutInvoke00000002", &["projects:read"]));
    // Two tokens of the agent for the streams: one that expires soon, one to revoke.
    let short = generate_token();
    gateway.register(
        &short,
        grant("oc_demoAgentWithInvokeScope00000001", &["mcp:invoke", "projects:read"]).expires_in(short_lived),
    );
    let revocable = generate_token();
    gateway.register(
        &revocable,
        grant("oc_demoAgentWithInvokeScope00000001", &["mcp:invoke", "projects:read"]),
    );
    // The same agent, its OAuth client set to issue JWT access tokens.
    let jwt = issuer
        .mint(&AccessTokenClaims::new("oc_demoAgentWithInvokeScope00000001").scopes(["mcp:invoke", "projects:read"]));
    // A JWT naming the issuer but signed by another key.
    let forged = JwksIssuer::start().await?.mint(
        &AccessTokenClaims::new("oc_demoAgentWithInvokeScope00000001")
            .scopes(["mcp:invoke"])
            .claim("iss", serde_json::Value::String(issuer.url())),
    );

    // An API key of the demo's billing service (an API-auth app), for its organization.
    let api_key = generate_api_key("sk_live");
    gateway.register_api_key(
        &api_key,
        ApiKeyGrant::new("billing-service")
            .key_name("nightly export")
            .organization(427001234567890561, 7)
            .permissions(["mcp:invoke"]),
    );

    let config = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key("demo-backend-key")
        // Wacht API keys of these prefixes, in Authorization or x-api-key.
        .api_key_prefixes(["sk_live", "sk_test"])
        .api_key_header(http::HeaderName::from_static("x-api-key"))
        // The demo tenant: tokens of any other deployment or issuer are refused.
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .expected_issuer(issuer.url())
        // JWT access tokens of that issuer are verified here, against its JWKS.
        .jwt(JwtConfig::new().scope_definitions(definitions))
        .realm("quickstart")
        .challenge_scopes(["mcp:invoke"])
        .optional(true)
        .build()
        .map_err(std::io::Error::other)?;
    let calls = vec![
        DemoCall {
            what: "anonymous call to the public route: 200",
            method: "GET",
            path: "/public",
            token: None,
            header: "Authorization",
            expect_status: 200,
        },
        DemoCall {
            what: "the same with a token: 200, names the client",
            method: "GET",
            path: "/public",
            token: Some(agent.clone()),
            header: "Authorization",
            expect_status: 200,
        },
        DemoCall {
            what: "who am I: 200 with the principal as JSON",
            method: "GET",
            path: "/whoami",
            token: Some(agent.clone()),
            header: "Authorization",
            expect_status: 200,
        },
        DemoCall {
            what: "no token on a protected route: 401 with a Bearer challenge",
            method: "GET",
            path: "/whoami",
            token: None,
            header: "Authorization",
            expect_status: 401,
        },
        DemoCall {
            what: "unknown token: 401 invalid_token",
            method: "GET",
            path: "/whoami",
            token: Some(generate_token()),
            header: "Authorization",
            expect_status: 401,
        },
        DemoCall {
            what: "invoke a tool with mcp:invoke: 200",
            method: "POST",
            path: "/tools/invoke",
            token: Some(agent),
            header: "Authorization",
            expect_status: 200,
        },
        DemoCall {
            what: "invoke without mcp:invoke: 403 insufficient_scope",
            method: "POST",
            path: "/tools/invoke",
            token: Some(reader),
            header: "Authorization",
            expect_status: 403,
        },
        DemoCall {
            what: "who am I with a JWT access token (verified here against the issuer's JWKS, no gateway call): 200",
            method: "GET",
            path: "/whoami",
            token: Some(jwt),
            header: "Authorization",
            expect_status: 200,
        },
        DemoCall {
            what: "a JWT signed by a key the issuer never published: 401 invalid_token",
            method: "GET",
            path: "/whoami",
            token: Some(forged),
            header: "Authorization",
            expect_status: 401,
        },
    ];
    let api_keys = vec![
        DemoCall {
            what: "who am I with an API key (checked by the gateway as an api_key): 200, credential_kind api_key",
            method: "GET",
            path: "/whoami",
            token: Some(api_key.clone()),
            header: "Authorization",
            expect_status: 200,
        },
        DemoCall {
            what: "the same key in x-api-key: 200, from the cache",
            method: "POST",
            path: "/tools/invoke",
            token: Some(api_key),
            header: "x-api-key",
            expect_status: 200,
        },
        DemoCall {
            what: "an unknown API key: 401 invalid_token (the gateway's Invalid API key)",
            method: "GET",
            path: "/whoami",
            token: Some(generate_api_key("sk_test")),
            header: "x-api-key",
            expect_status: 401,
        },
    ];
    let streams = vec![
        DemoCall {
            what: "events from a token that expires soon: one a second, then the stream ends when the token does",
            method: "GET",
            path: "/events",
            token: Some(short),
            header: "Authorization",
            expect_status: 200,
        },
        DemoCall {
            what: "events from a token to revoke: keep this running and revoke the token with the next command; the stream ends within 5 s (and curl-ing it again gets 401)",
            method: "GET",
            path: "/events",
            token: Some(revocable.clone()),
            header: "Authorization",
            expect_status: 200,
        },
    ];
    let revoke = DemoCall {
        what: "revoke that token: the fake gateway forgets it and the layer invalidates it (204)",
        method: "POST",
        path: "/demo/revoke",
        token: None,
        header: "Authorization",
        expect_status: 204,
    };
    // A JWT of one Wacht session, and Wacht's webhook saying the session was deleted.
    let session = AccessTokenClaims::new("oc_demoAgentWithInvokeScope00000001").scopes(["mcp:invoke"]);
    let sid = session.sid().unwrap_or_default().to_owned();
    let session_token = issuer.mint(&session);
    let session_jwt = DemoCall {
        what: "who am I with a JWT of a Wacht session: 200",
        method: "GET",
        path: "/whoami",
        token: Some(session_token.clone()),
        header: "Authorization",
        expect_status: 200,
    };
    let webhook = DemoWebhook::signed(
        "Wacht's webhook that the session was deleted, signed as Wacht signs them (valid for 5 minutes after the start: the replay window): 200, and the session's JWTs are refused from now on",
        &signer,
        "msg_quickstart_session_deleted",
        "session.deleted",
        json!({ "entity_id": sid, "entity_type": "session" }),
    );
    let session_jwt_after = DemoCall {
        what: "the same JWT after the webhook: 401 invalid_token (its session is denied; still validly signed)",
        method: "GET",
        path: "/whoami",
        token: Some(session_token),
        header: "Authorization",
        expect_status: 401,
    };
    Ok(Demo {
        gateway,
        issuer,
        config,
        calls,
        api_keys,
        streams,
        revoke,
        revocable,
        signer,
        session_jwt,
        webhook,
        session_jwt_after,
    })
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

    let secret = std::env::var("WACHT_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (config, demo) = if std::env::var_os("WACHT_GATEWAY_URL").is_some() {
        let config = WachtAuthConfig::from_env()?;
        (config.to_builder().optional(true).build()?, None)
    } else {
        // The demo webhook is signed with the configured secret (the first, while rotating),
        // or one made up now.
        let first = secret
            .as_deref()
            .and_then(|s| s.split([' ', ',']).find(|s| !s.is_empty()));
        let signer = match first {
            Some(secret) => WebhookSigner::new(secret).ok_or("WACHT_WEBHOOK_SECRET is not whsec_ and base64")?,
            None => WebhookSigner::generate(),
        };
        let demo = demo_with(SHORT_LIVED, signer).await?;
        (demo.config.clone(), Some(demo))
    };
    let auth = WachtAuthLayer::new(config)?;
    let secret = secret.or_else(|| demo.as_ref().map(|d| d.signer.secret().to_owned()));
    let webhooks = secret.map(|secret| webhooks(&auth, &secret)).transpose()?;
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let base = format!("http://{}", listener.local_addr()?);

    println!("tower-wacht quickstart listening on {base}");
    if let Some(demo) = &demo {
        println!(
            "No WACHT_GATEWAY_URL set: using an embedded fake gateway at {} and a JWT issuer at {}\n",
            demo.gateway.url(),
            demo.issuer.url()
        );
        println!("Try these:\n");
        for call in &demo.calls {
            println!("# {}\n{}\n", call.what, call.curl(&base));
        }
        println!(
            "Watch a stream end with its token (the first token expires {} s after the start):\n",
            SHORT_LIVED.as_secs()
        );
        for call in &demo.streams {
            println!("# {}\n{}\n", call.what, call.curl_stream(&base));
        }
        println!("# {}\n{}\n", demo.revoke.what, demo.revoke.curl(&base));
        println!("API keys (prefixes sk_live, sk_test; in Authorization or x-api-key):\n");
        for call in &demo.api_keys {
            println!("# {}\n{}\n", call.what, call.curl(&base));
        }
        println!("Wacht's webhooks end access too (POST {WEBHOOK_PATH}):\n");
        println!("# {}\n{}\n", demo.session_jwt.what, demo.session_jwt.curl(&base));
        println!("# {}\n{}\n", demo.webhook.what, demo.webhook.curl(&base));
        println!(
            "# {}\n{}\n",
            demo.session_jwt_after.what,
            demo.session_jwt_after.curl(&base)
        );
    } else if webhooks.is_some() {
        println!("Wacht webhooks on {base}{WEBHOOK_PATH}");
    }
    let mut app = match &demo {
        Some(demo) => app(auth.clone()).merge(demo.router(auth)),
        None => app(auth),
    };
    if let Some(webhooks) = webhooks {
        // Outside the auth layer: Wacht signs its deliveries, it sends no token.
        app = app.merge(webhooks);
    }
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
