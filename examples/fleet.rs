//! Fleet mode: the quickstart's routes served by a replica that shares its decision cache and
//! its invalidations with every other replica through Redis, plus an operator listener.
//!
//! ```text
//! redis-server --port 6379 &
//! export WACHT_REDIS_URL=redis://127.0.0.1:6379
//! export WACHT_FLEET_SECRET=$(openssl rand -hex 32)   # once: every replica needs the same one
//! cargo run --example fleet --features test-util,redis,metrics
//! ```
//!
//! Start more replicas from the same shell (so they have the same secret) with the command
//! the first one prints. A replica started with another secret shares nothing with the
//! others; each replica logs an error when it finds one.
//!
//! Routes on `BIND` (default `127.0.0.1:3000`): `GET /public`, `GET /whoami`,
//! `POST /tools/invoke` (needs `mcp:invoke`), as in the quickstart.
//!
//! Operator listener on `ADMIN_BIND` (default `127.0.0.1:3100`, loopback: never expose it).
//! Each route answers with what became of the change ([`answer`]): 204 when it is in force
//! on every replica (written to the fleet's change log), 202 when Redis has not taken it yet
//! (in force here and on the replicas listening; the body says why; written as soon as Redis
//! takes it), 409 for an allow that lifts a denial no longer current, 503 when refused.
//! * `POST /invalidate` with `{"token": "..."}`: drop one token's decision on every replica;
//! * `POST /invalidate-all`;
//! * `POST /clients/{id}/invalidate`, `POST /clients/{id}/deny`, `POST /clients/{id}/allow`;
//! * `POST /sessions/{sid}/deny`, `POST /token-ids/{jti}/deny`: refuse the JWT access tokens of
//!   a Wacht session, or one token (Wacht cannot revoke a JWT early; with `WACHT_JWT=on`);
//! * `POST /users/{id}/invalidate`, `POST /api-keys/{id}/invalidate`,
//!   `POST /organizations/{id}/invalidate`, `POST /workspaces/{id}/invalidate`: drop every
//!   cached answer of a Wacht user (their tokens and API keys), of one API key, or granted for
//!   a tenant (400 for an id that is not a decimal Wacht id);
//! * `GET /fleet`: this replica's standing with the fleet;
//! * `GET /metrics`: this replica's metrics (`tower_wacht::telemetry`) in Prometheus' text
//!   format, for a scrape job; `dashboards/tower-wacht.json` is a Grafana dashboard of them.
//!   The gateway latency histogram has buckets ([`GATEWAY_LATENCY_BUCKETS`]), so the
//!   `_bucket` series exist for `histogram_quantile`.
//!
//! Wacht's webhooks, with `WACHT_WEBHOOK_SECRET` set (the app's signing secret, `whsec_...`;
//! two separated by a space or a comma while rotating it): `POST /webhooks/wacht` on `BIND`,
//! outside the auth layer (Wacht signs its deliveries, it sends no token; the route must be
//! reachable by Wacht, the operator listener must not). A delivery received by any replica
//! ends access on every replica: `user.deleted` drops the user's tokens and keys everywhere,
//! `session.deleted` refuses the session's JWTs, and so on (see `WachtWebhooks`); it is
//! answered 200 once written to the fleet's log, 503 while Redis does not take it (Wacht
//! delivers it again).
//!
//! Configuration: like the quickstart (`WACHT_GATEWAY_URL`, `WACHT_BACKEND_API_KEY`,
//! `WACHT_DEPLOYMENT_ID`, `WACHT_OAUTH_ISSUER`, ...) plus `WACHT_REDIS_URL` and
//! `WACHT_FLEET_SECRET` (at least 32 bytes, the same on every replica). Without
//! `WACHT_GATEWAY_URL` the first replica starts an embedded `FakeGateway` with demo tokens and
//! prints its URL: start more replicas with `WACHT_GATEWAY_URL` set to it (and other `BIND` /
//! `ADMIN_BIND`), so that they share one gateway and one Redis.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tower_wacht::change::RefusalReason;
use tower_wacht::principal::{ApiKeyId, OrganizationId, UserId, WorkspaceId};
use tower_wacht::telemetry::names;
use tower_wacht::testing::{
    EXAMPLE_DEPLOYMENT_ID, EXAMPLE_ISSUER, FakeGateway, ScopeDefinition, TokenGrant, generate_token,
};
use tower_wacht::{ChangeOutcome, Principal, RequirePermissionsLayer, WachtAuthConfig, WachtAuthLayer, WachtWebhooks};

/// The application: the quickstart's three routes behind one auth layer.
pub fn app(auth: WachtAuthLayer) -> Router {
    Router::new()
        .route(
            "/tools/invoke",
            post(|p: Principal| async move { Json(json!({ "invoked": true, "by": p.client_id() })) }),
        )
        .route_layer(RequirePermissionsLayer::all(["mcp:invoke"]))
        .route(
            "/whoami",
            get(|p: Principal| async move {
                Json(json!({
                    "client_id": p.client_id(),
                    "granted_resource": p.granted_resource(),
                    "scopes": p.scopes(),
                    "permissions": p.permissions(),
                    "expires_at": p.expires_at_rfc3339(),
                }))
            }),
        )
        .route(
            "/public",
            get(|p: Option<Principal>| async move {
                match p {
                    Some(p) => format!("Hello, {}! This route is public.\n", p.client_id()),
                    None => "Hello, anonymous caller! This route is public.\n".to_owned(),
                }
            }),
        )
        .layer(auth)
}

/// Bucket bounds, in seconds, of `wacht_gateway_request_duration_seconds`: from a loopback
/// answer to the gateway's request timeout. With buckets the exporter renders the histogram as
/// a Prometheus histogram (`_bucket`, `_sum`, `_count`), which the dashboard aggregates across
/// replicas with `histogram_quantile`; without them it would render a per-replica summary.
pub const GATEWAY_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The Prometheus recorder this example installs (tests/dashboard.rs installs the same one).
pub fn prometheus() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Full(names::GATEWAY_DURATION.to_owned()),
        GATEWAY_LATENCY_BUCKETS,
    )
}

/// `GET /metrics`: the recorder's metrics in Prometheus' text exposition format.
pub fn metrics_route(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    )
}

/// The operator listener: invalidations and denials, applied to every replica. Each route
/// answers with what became of the change ([`answer`]). With a metrics handle, `GET /metrics`
/// too.
pub fn admin(auth: WachtAuthLayer, metrics: Option<PrometheusHandle>) -> Router {
    #[derive(serde::Deserialize)]
    struct Token {
        token: String,
    }
    type Auth = State<WachtAuthLayer>;
    Router::new()
        .route(
            "/invalidate",
            post(
                |State(auth): Auth, Json(body): Json<Token>| async move { answer(auth.invalidate(&body.token).await) },
            ),
        )
        .route(
            "/invalidate-all",
            post(|State(auth): Auth| async move { answer(auth.invalidate_all().await) }),
        )
        .route(
            "/clients/{id}/invalidate",
            post(|State(auth): Auth, Path(id): Path<String>| async move { answer(auth.invalidate_client(&id).await) }),
        )
        .route(
            "/clients/{id}/deny",
            post(|State(auth): Auth, Path(id): Path<String>| async move { answer(auth.deny_client(&id).await) }),
        )
        .route(
            "/clients/{id}/allow",
            post(|State(auth): Auth, Path(id): Path<String>| async move { answer(auth.allow_client(&id).await) }),
        )
        .route(
            "/sessions/{id}/deny",
            post(|State(auth): Auth, Path(sid): Path<String>| async move {
                answer(auth.verifier().deny_session(&sid).await)
            }),
        )
        .route(
            "/token-ids/{id}/deny",
            post(|State(auth): Auth, Path(jti): Path<String>| async move {
                answer(auth.verifier().deny_token_id(&jti).await)
            }),
        )
        .route(
            "/users/{id}/invalidate",
            post(|State(auth): Auth, Path(id): Path<String>| async move {
                match id.parse::<UserId>() {
                    Ok(id) => answer(auth.invalidate_user(id).await),
                    Err(_) => not_an_id(),
                }
            }),
        )
        .route(
            "/api-keys/{id}/invalidate",
            post(|State(auth): Auth, Path(id): Path<String>| async move {
                match id.parse::<ApiKeyId>() {
                    Ok(id) => answer(auth.invalidate_api_key(id).await),
                    Err(_) => not_an_id(),
                }
            }),
        )
        .route(
            "/organizations/{id}/invalidate",
            post(|State(auth): Auth, Path(id): Path<String>| async move {
                match id.parse::<OrganizationId>() {
                    Ok(id) => answer(auth.invalidate_organization(id).await),
                    Err(_) => not_an_id(),
                }
            }),
        )
        .route(
            "/workspaces/{id}/invalidate",
            post(|State(auth): Auth, Path(id): Path<String>| async move {
                match id.parse::<WorkspaceId>() {
                    Ok(id) => answer(auth.invalidate_workspace(id).await),
                    Err(_) => not_an_id(),
                }
            }),
        )
        .route(
            "/fleet",
            get(|State(auth): Auth| async move { format!("{:?}\n", auth.verifier().fleet_status()) }),
        )
        .with_state(auth)
        .merge(metrics.map(metrics_route).unwrap_or_default())
}

/// 400 for a path id that is not a decimal Wacht id.
fn not_an_id() -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, "not a Wacht id (decimal digits)\n".to_owned())
}

/// The receiver of Wacht's webhooks (`POST /webhooks/wacht`), if `secrets` (from
/// `WACHT_WEBHOOK_SECRET`: one signing secret, or two separated by a space or a comma while
/// rotating it) names any.
pub fn webhooks(auth: &WachtAuthLayer, secrets: Option<&str>) -> Result<Option<Router>, tower_wacht::ConfigError> {
    let Some(secrets) = secrets else {
        return Ok(None);
    };
    let secrets: Vec<&str> = secrets.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    Ok(Some(WachtWebhooks::new(auth, secrets)?.router("/webhooks/wacht")))
}

/// The truth about a change, for an operator:
/// * 204: in force everywhere (written to the fleet's change log; or nothing to change);
/// * 202: in force here and on the replicas listening now, queued for Redis, which does not
///   take it yet (the body says why); it is written as soon as Redis does;
/// * 409: an allow that lifts a denial that is no longer the current one, or not yet written;
/// * 503: refused (too many changes waiting for Redis on this replica);
/// * 507: refused (the deny list is full).
pub fn answer(outcome: ChangeOutcome) -> (StatusCode, String) {
    let status = match outcome {
        ChangeOutcome::Applied | ChangeOutcome::Durable | ChangeOutcome::Unchanged => StatusCode::NO_CONTENT,
        ChangeOutcome::Queued(_) => StatusCode::ACCEPTED,
        ChangeOutcome::Refused(
            RefusalReason::NewerDenial | RefusalReason::PendingDenial | RefusalReason::ConfiguredDenial,
        ) => StatusCode::CONFLICT,
        ChangeOutcome::Refused(RefusalReason::DenyListFull) => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = if status == StatusCode::NO_CONTENT {
        String::new()
    } else {
        format!("{outcome}\n")
    };
    (status, body)
}

/// A fake gateway with two demo tokens; the configuration pointing at it.
async fn demo() -> Result<(FakeGateway, Vec<(&'static str, String)>), Box<dyn std::error::Error>> {
    let gateway = FakeGateway::start().await?;
    gateway.set_scope_definitions(vec![ScopeDefinition::organization(
        "projects:read",
        "org:projects:read",
    )]);
    let grant = |client: &str, scopes: &[&str]| {
        TokenGrant::new(client)
            .scopes(scopes.iter().copied())
            .granted_resource("urn:wacht:organization:427001234567890561")
            .expires_in(Duration::from_secs(3600))
    };
    let agent = generate_token();
    gateway.register(&agent, grant("oc_demoFleetAgentInvoke00000000001", &["mcp:invoke"]));
    let reader = generate_token();
    gateway.register(&reader, grant("oc_demoFleetReader0000000000000002", &["projects:read"]));
    Ok((gateway, vec![("agent (mcp:invoke)", agent), ("reader", reader)]))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_wacht=debug".into()),
        )
        .init();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let bind: SocketAddr = env("BIND").unwrap_or_else(|| "127.0.0.1:3000".into()).parse()?;
    let admin_bind: SocketAddr = env("ADMIN_BIND").unwrap_or_else(|| "127.0.0.1:3100".into()).parse()?;
    if env("WACHT_REDIS_URL").is_none() {
        return Err("the fleet example needs WACHT_REDIS_URL (and WACHT_FLEET_SECRET)".into());
    }
    // Before the layer is built: it registers its hot-path counters at construction.
    let metrics = prometheus()?.install_recorder()?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        // The exporter drains histogram samples on render; without an HTTP listener of its own
        // it leaves the periodic upkeep to its caller.
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let (config, demo) = if env("WACHT_GATEWAY_URL").is_some() {
        (WachtAuthConfig::from_env()?, None)
    } else {
        let (gateway, tokens) = demo().await?;
        let lookup = |name: &str| match name {
            "WACHT_GATEWAY_URL" => Some(gateway.url()),
            "WACHT_BACKEND_API_KEY" => Some("demo-backend-key".to_owned()),
            "WACHT_DEPLOYMENT_ID" => Some(EXAMPLE_DEPLOYMENT_ID.to_string()),
            "WACHT_OAUTH_ISSUER" => Some(EXAMPLE_ISSUER.to_owned()),
            other => std::env::var(other).ok(),
        };
        (WachtAuthConfig::from_lookup(lookup)?, Some((gateway, tokens)))
    };
    let auth = WachtAuthLayer::new(config.to_builder().optional(true).build()?)?;

    let listener = tokio::net::TcpListener::bind(bind).await?;
    let admin_listener = tokio::net::TcpListener::bind(admin_bind).await?;
    println!(
        "tower-wacht fleet replica listening on http://{}",
        listener.local_addr()?
    );
    println!(
        "operator listener on http://{0} (Prometheus metrics: http://{0}/metrics)",
        admin_listener.local_addr()?
    );
    if let Some((gateway, tokens)) = &demo {
        println!(
            "No WACHT_GATEWAY_URL set: embedded fake gateway at {url}. Start more replicas from this shell \
             (same WACHT_REDIS_URL and WACHT_FLEET_SECRET, so that they share) with:\n  \
             BIND=127.0.0.1:3001 ADMIN_BIND=127.0.0.1:3101 WACHT_GATEWAY_URL={url} WACHT_BACKEND_API_KEY=demo-backend-key \
             WACHT_DEPLOYMENT_ID={EXAMPLE_DEPLOYMENT_ID} WACHT_OAUTH_ISSUER={EXAMPLE_ISSUER} cargo run --example fleet --features test-util,redis,metrics",
            url = gateway.url(),
        );
        for (who, token) in tokens {
            println!("demo token, {who}: {token}");
        }
    }
    let webhooks = webhooks(&auth, env("WACHT_WEBHOOK_SECRET").as_deref())?;
    if webhooks.is_some() {
        println!("Wacht webhooks on http://{}/webhooks/wacht", listener.local_addr()?);
    }
    let admin_app = admin(auth.clone(), Some(metrics));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(admin_listener, admin_app).await {
            eprintln!("operator listener failed: {error}");
        }
    });
    let routes = match webhooks {
        // Outside the auth layer: Wacht signs its deliveries, it sends no token.
        Some(webhooks) => app(auth).merge(webhooks),
        None => app(auth),
    };
    axum::serve(listener, routes.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
