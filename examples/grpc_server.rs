//! gRPC: a Tonic greeter protected by `WachtAuthLayer`, with one method guarded by a permission.
//!
//! ```text
//! cargo run --example grpc_server --features test-util
//! ```
//!
//! The service is `greeter.v1.Greeter` from `proto/greeter/v1/greeter.proto`, so any gRPC
//! client in any language can call it:
//! * `SayHello`: any caller with a valid access token; the reply names the caller's client id;
//! * `Shout`: additionally requires the `greeter:shout` permission (PERMISSION_DENIED otherwise);
//! * `Whisper`: any caller, but a `secret` whisper also requires `greeter:secret`, which only
//!   the method can tell from the request: it asks for the permission itself
//!   (`InsufficientScope::step_up`), and the layer answers PERMISSION_DENIED with the challenge
//!   naming it in `www-authenticate` metadata, as for a guarded method;
//! * `Ticks`: server streaming, one tick a second for any caller with a valid token, until the
//!   requested count, or until the token expires or is revoked on this server: the layer ends
//!   the stream with UNAUTHENTICATED in its trailers (the handler knows nothing about it).
//!
//! Refusals are gRPC statuses, never bare HTTP errors: UNAUTHENTICATED (no or bad token),
//! PERMISSION_DENIED, RESOURCE_EXHAUSTED (gateway rate limit), UNAVAILABLE (gateway down).
//!
//! Configuration comes from the environment like the quickstart (`WACHT_BACKEND_API_KEY`,
//! `WACHT_GATEWAY_URL`, ..., and `BIND`, default `127.0.0.1:50051`). Without
//! `WACHT_GATEWAY_URL` it starts an embedded `FakeGateway` with demo tokens and prints
//! ready-to-paste `grpcurl` commands, so it runs without a Wacht account.
//!
//! The Rust code for the proto is generated once, in pure Rust (protox + tonic-prost-build,
//! no `protoc`), and committed in `examples/generated/`; `tests/grpc_codegen.rs` checks it is
//! current (`UPDATE_GENERATED=1 cargo test --all-features --test grpc_codegen` regenerates it).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use tonic::transport::Server;
use tonic::transport::server::{Router, TcpConnectInfo, TcpIncoming};
use tonic::{Code, Request, Response, Status};
use tower::layer::util::{Identity, Stack};
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, EXAMPLE_ISSUER, FakeGateway, TokenGrant, generate_token};
use tower_wacht::{
    InsufficientScope, Permissions, Principal, RequireMethodPermissionsLayer, WachtAuthConfig, WachtAuthConfigBuilder,
    WachtAuthLayer,
};

/// Generated from `proto/greeter/v1/greeter.proto` (see the module docs).
pub mod pb {
    include!("generated/greeter.v1.rs");
}

use pb::greeter_server::{Greeter, GreeterServer};
use pb::{HelloReply, HelloRequest, Tick, TicksRequest, WhisperRequest};

/// The permission the guarded method requires.
pub const SHOUT_PERMISSION: &str = "greeter:shout";
/// The permission a secret `Whisper` requires (asked for by the method itself).
pub const SECRET_PERMISSION: &str = "greeter:secret";
/// Full gRPC path of the guarded method.
pub const SHOUT_PATH: &str = "/greeter.v1.Greeter/Shout";
/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:50051";
/// The proto file, relative to the crate root (what `grpcurl -import-path proto` needs).
pub const PROTO_FILE: &str = "greeter/v1/greeter.proto";
/// How often `Ticks` sends a tick.
pub const TICK_EVERY: Duration = Duration::from_secs(1);

/// The greeter: both methods reply with the verified caller's client id and permissions.
#[derive(Debug, Default, Clone, Copy)]
pub struct GreeterService;

#[tonic::async_trait]
impl Greeter for GreeterService {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        greet(&request, "Hello")
    }

    async fn shout(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        greet(&request, "HELLO").map(|mut reply| {
            reply.get_mut().message.make_ascii_uppercase();
            reply
        })
    }

    type TicksStream = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send>>;

    /// One tick every [`TICK_EVERY`], the first at once, until `count` (0: no limit). Nothing
    /// here watches the token: the auth layer ends the response when it expires or is revoked.
    async fn ticks(&self, request: Request<TicksRequest>) -> Result<Response<Self::TicksStream>, Status> {
        let Some(principal) = request.extensions().get::<Principal>().cloned() else {
            return Err(Status::unauthenticated("no verified caller"));
        };
        let count = u64::from(request.get_ref().count);
        let ticks = futures_util::stream::unfold(0u64, move |sent| {
            let principal = principal.clone();
            async move {
                if count != 0 && sent >= count {
                    return None;
                }
                if sent > 0 {
                    tokio::time::sleep(TICK_EVERY).await;
                }
                let tick = Tick {
                    seq: sent + 1,
                    client_id: principal.client_id().to_string(),
                    expires_at: principal.expires_at_rfc3339(),
                };
                Some((Ok(tick), sent + 1))
            }
        });
        Ok(Response::new(Box::pin(ticks)))
    }

    /// A whisper; a secret one needs [`SECRET_PERMISSION`], which no method guard can see (it
    /// depends on the request): the method asks for it, and the auth layer (with
    /// `handler_step_up(true)`) answers PERMISSION_DENIED with its challenge for it.
    async fn whisper(&self, request: Request<WhisperRequest>) -> Result<Response<HelloReply>, Status> {
        let Some(principal) = request.extensions().get::<Principal>() else {
            return Err(Status::unauthenticated("no verified caller"));
        };
        if request.get_ref().secret && !principal.has_permission(SECRET_PERMISSION) {
            let demand = InsufficientScope::new([SECRET_PERMISSION]);
            demand.step_up(request.extensions());
            // The layer replaces this status with its own; without the layer it is the answer.
            return Err(Status::permission_denied(demand.to_string()));
        }
        let name = match request.get_ref().name.as_str() {
            "" => "world",
            name => name,
        };
        Ok(Response::new(HelloReply {
            message: format!("psst, {name}. You are {}.", principal.client_id()),
            client_id: principal.client_id().to_string(),
            permissions: principal.permissions().iter().map(str::to_owned).collect(),
        }))
    }
}

fn greet(request: &Request<HelloRequest>, greeting: &str) -> Result<Response<HelloReply>, Status> {
    // The auth layer put the verified caller into the request extensions.
    let Some(principal) = request.extensions().get::<Principal>() else {
        return Err(Status::unauthenticated("no verified caller"));
    };
    let name = match request.get_ref().name.as_str() {
        "" => "world",
        name => name,
    };
    Ok(Response::new(HelloReply {
        message: format!("{greeting}, {name}! You are {}.", principal.client_id()),
        client_id: principal.client_id().to_string(),
        permissions: principal.permissions().iter().map(str::to_owned).collect(),
    }))
}

/// Per-method permissions: `Shout` needs [`SHOUT_PERMISSION`]. Methods no rule names (here
/// `SayHello`) are open to any caller with a valid token, the default of
/// [`RequireMethodPermissionsLayer`]; call `.deny_unmapped()` to refuse them instead.
pub fn method_guard() -> RequireMethodPermissionsLayer {
    RequireMethodPermissionsLayer::new().route(SHOUT_PATH, Permissions::all([SHOUT_PERMISSION]))
}

/// The router [`server`] builds: auth, then the method guard, then the greeter.
pub type GreeterRouter = Router<Stack<RequireMethodPermissionsLayer, Stack<WachtAuthLayer, Identity>>>;

/// The server: `Server::builder().layer(auth).layer(guard).add_service(greeter)`. Layers run
/// in the order they are added.
pub fn server(auth: WachtAuthLayer) -> GreeterRouter {
    Server::builder()
        .layer(auth)
        .layer(method_guard())
        .add_service(GreeterServer::new(GreeterService))
}

/// Lets the layer find the caller's address in what Tonic records per connection, so the
/// gateway's audit log and per-IP limits see the caller (optional; the layer works without it).
pub fn with_client_ip(config: WachtAuthConfigBuilder) -> WachtAuthConfigBuilder {
    config.client_ip(|_headers, extensions| extensions.get::<TcpConnectInfo>()?.remote_addr().map(|addr| addr.ip()))
}

/// Serves the protected greeter on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    auth: WachtAuthLayer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    server(auth)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}

/// One demo call: what to send and the status the example promises.
#[derive(Debug, Clone)]
pub struct DemoCall {
    /// What the call shows.
    pub what: &'static str,
    /// Method name in `greeter.v1.Greeter`.
    pub method: &'static str,
    /// The request message, as grpcurl's JSON.
    pub data: &'static str,
    /// Bearer token to send, if any.
    pub token: Option<String>,
    /// The gRPC status the call gets.
    pub expect: Code,
}

impl DemoCall {
    /// Ready-to-paste `grpcurl` command (run from the crate root, where `proto/` is).
    pub fn grpcurl(&self, addr: &str) -> String {
        let auth = match &self.token {
            Some(t) => format!("-H 'authorization: Bearer {t}' "),
            None => String::new(),
        };
        format!(
            "grpcurl -plaintext -import-path proto -proto {PROTO_FILE} {auth}-d '{}' {addr} greeter.v1.Greeter/{}",
            self.data, self.method
        )
    }
}

/// The `SayHello` and `Shout` demo request.
const HELLO: &str = r#"{"name":"Ada"}"#;
/// The secret `Whisper` demo request.
const SECRET: &str = r#"{"name":"Ada","secret":true}"#;

/// Client id of the demo token that holds `greeter:shout` and `greeter:secret`.
pub const DEMO_SHOUTER: &str = "oc_demoShouterWithGreeterShout0001";
/// Client id of the demo token that lacks `greeter:shout`.
pub const DEMO_GREETER: &str = "oc_demoGreeterWithoutShout00000002";

/// How long after the start the short-lived demo token (the one whose `Ticks` stream ends
/// with it) expires.
pub const SHORT_LIVED: Duration = Duration::from_secs(120);

/// Starts the embedded fake gateway with the demo tokens; returns it, the layer
/// configuration pointing at it, and the demo calls.
pub async fn demo() -> std::io::Result<(FakeGateway, WachtAuthConfig, Vec<DemoCall>)> {
    demo_with(SHORT_LIVED).await
}

/// [`demo`], with the short-lived token expiring `short_lived` after the start.
pub async fn demo_with(short_lived: Duration) -> std::io::Result<(FakeGateway, WachtAuthConfig, Vec<DemoCall>)> {
    let gateway = FakeGateway::start().await?;
    let grant = |client: &str, scopes: &[&str]| {
        TokenGrant::new(client)
            .scopes(scopes.iter().copied())
            .granted_resource("urn:wacht:organization:427001234567890561")
            .expires_in(Duration::from_secs(3600))
    };
    let shouter = generate_token();
    gateway.register(&shouter, grant(DEMO_SHOUTER, &[SHOUT_PERMISSION, SECRET_PERMISSION]));
    let greeter = generate_token();
    gateway.register(&greeter, grant(DEMO_GREETER, &[]));
    let short = generate_token();
    gateway.register(&short, grant(DEMO_GREETER, &[]).expires_in(short_lived));

    let config = with_client_ip(WachtAuthConfig::builder())
        .gateway_url(gateway.url())
        .api_key("demo-backend-key")
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .expected_issuer(EXAMPLE_ISSUER)
        .realm("grpc_server")
        // `Whisper` asks for `greeter:secret` itself.
        .handler_step_up(true)
        .build()
        .map_err(std::io::Error::other)?;
    let calls = vec![
        DemoCall {
            what: "SayHello with a valid token: OK, the reply names the client",
            method: "SayHello",
            data: HELLO,
            token: Some(greeter.clone()),
            expect: Code::Ok,
        },
        DemoCall {
            what: "Shout with the greeter:shout permission: OK",
            method: "Shout",
            data: HELLO,
            token: Some(shouter.clone()),
            expect: Code::Ok,
        },
        DemoCall {
            what: "Shout without greeter:shout: PermissionDenied",
            method: "Shout",
            data: HELLO,
            token: Some(greeter.clone()),
            expect: Code::PermissionDenied,
        },
        DemoCall {
            what: "a secret Whisper with greeter:secret: OK",
            method: "Whisper",
            data: SECRET,
            token: Some(shouter),
            expect: Code::Ok,
        },
        DemoCall {
            what: "a secret Whisper without greeter:secret: PermissionDenied (the method asks for it)",
            method: "Whisper",
            data: SECRET,
            token: Some(greeter.clone()),
            expect: Code::PermissionDenied,
        },
        DemoCall {
            what: "no token: Unauthenticated",
            method: "SayHello",
            data: HELLO,
            token: None,
            expect: Code::Unauthenticated,
        },
        DemoCall {
            what: "unknown token: Unauthenticated",
            method: "SayHello",
            data: HELLO,
            token: Some(generate_token()),
            expect: Code::Unauthenticated,
        },
        DemoCall {
            what: "Ticks, three of them, one a second: OK",
            method: "Ticks",
            data: r#"{"count":3}"#,
            token: Some(greeter),
            expect: Code::Ok,
        },
        DemoCall {
            what: "Ticks with a token that expires soon: one a second until it does, then Unauthenticated",
            method: "Ticks",
            data: "{}",
            token: Some(short),
            expect: Code::Unauthenticated,
        },
    ];
    Ok((gateway, config, calls))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_wacht=debug".into()),
        )
        .init();
    let bind: SocketAddr = std::env::var("BIND").unwrap_or_else(|_| DEFAULT_BIND.into()).parse()?;

    let (config, demo) = if std::env::var_os("WACHT_GATEWAY_URL").is_some() {
        let from_env = WachtAuthConfig::from_env()?;
        (from_env.to_builder().handler_step_up(true).build()?, None)
    } else {
        let (gateway, config, calls) = demo().await?;
        (config, Some((gateway, calls)))
    };
    let auth = WachtAuthLayer::new(config)?;
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?.to_string();

    println!("tower-wacht gRPC example: greeter.v1.Greeter on {addr} (plaintext HTTP/2)");
    println!(
        "Shout requires the {SHOUT_PERMISSION} permission, a secret Whisper {SECRET_PERMISSION}; SayHello and Ticks \
         any valid token. A Ticks stream ends with UNAUTHENTICATED when its token expires (the short-lived demo \
         token: {} s after the start).",
        SHORT_LIVED.as_secs()
    );
    if let Some((gateway, calls)) = &demo {
        println!(
            "No WACHT_GATEWAY_URL set: using an embedded fake gateway at {}\n",
            gateway.url()
        );
        println!("Try these from the tower-wacht directory (grpcurl reads proto/{PROTO_FILE}):\n");
        for call in calls {
            println!("# {}\n{}\n", call.what, call.grpcurl(&addr));
        }
    }
    serve(listener, auth, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
