//! The MCP tool guard's cost per call, in one run: the auth layer alone (a request that skips
//! the guard), the guard judging a legacy request from its body, the guard on a 2026-07-28
//! request (mirrored headers read, then checked against the body), and a call the headers
//! refuse early (403 before the body is read). Every request is a cache hit of the auth layer
//! around a no-op service; the body is a typical `tools/call` (about 200 bytes).
//!
//! ```text
//! cargo bench --bench mcp_guard
//! ```
//!
//! Prints the median time per call of each case and its ratio to the auth-only case; nothing
//! is asserted.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::Criterion;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use tower_wacht::principal::{Grant, StringSet};
use tower_wacht::{McpToolGuardLayer, Permissions, WachtAuthConfig, WachtAuthLayer};

mod support;
use support::Noop;

const TOKEN: &str = "oat_2F1s22P-YJhDkOjojWARDPmrr7Y4Y6NQkbU7flSku_0";
const BODY: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_projects","arguments":{"organization":"urn:wacht:organization:427001234567890561"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// Allows every token with `projects:read`.
struct Reader;

impl Gateway for Reader {
    fn check<'a>(&'a self, _r: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        Box::pin(async {
            let mut grant = Grant::new(
                "oc_benchReader00000000000000000001",
                SystemTime::now() + Duration::from_secs(3600),
            );
            grant.scopes = StringSet::new(["projects:read"]);
            grant.permissions = StringSet::new(["projects:read"]);
            Ok(Decision::Allowed(Box::new(grant)))
        })
    }
}

fn request(modern: bool, tool: &str) -> Request<Full<Bytes>> {
    let body = BODY.replace("list_projects", tool);
    let mut req = Request::post("/mcp")
        .header(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        )
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    if modern {
        let h = req.headers_mut();
        h.insert("mcp-protocol-version", HeaderValue::from_static("2026-07-28"));
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", HeaderValue::from_str(tool).unwrap());
    }
    req
}

fn call<S, B>(svc: &mut S, modern: bool, tool: &str) -> u16
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let response = svc.call(request(modern, tool)).now_or_never();
    match response {
        Some(Ok(r)) => r.status().as_u16(),
        other => panic!(
            "the call did not complete at once: {:?}",
            other.map(|r| r.map(|r| r.status()))
        ),
    }
}

fn main() {
    let config = WachtAuthConfig::builder()
        .accept_any_deployment()
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let auth = WachtAuthLayer::with_gateway(config, Reader).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { auth.verifier().verify(TOKEN).await.unwrap() });
    let guard = McpToolGuardLayer::new()
        .tool("list_projects", Permissions::all(["projects:read"]))
        .tool("archive_project", Permissions::all(["projects:write"]));
    let mut auth_only = auth.clone().layer(Noop);
    let mut guarded = auth.clone().layer(guard.layer(Noop));

    assert_eq!(call(&mut auth_only, false, "list_projects"), 200);
    assert_eq!(call(&mut guarded, false, "list_projects"), 200);
    assert_eq!(call(&mut guarded, true, "list_projects"), 200);
    assert_eq!(call(&mut guarded, true, "archive_project"), 403);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut g = c.benchmark_group("mcp_call");
    g.bench_function("auth_only_skips_the_guard", |b| {
        b.iter(|| call(&mut auth_only, false, "list_projects"))
    });
    g.bench_function("guard_legacy_body_path", |b| {
        b.iter(|| call(&mut guarded, false, "list_projects"))
    });
    g.bench_function("guard_2026_header_and_body", |b| {
        b.iter(|| call(&mut guarded, true, "list_projects"))
    });
    g.bench_function("guard_2026_refused_from_headers", |b| {
        b.iter(|| call(&mut guarded, true, "archive_project"))
    });
    g.finish();
    c.final_summary();

    // The same four, interleaved in rounds, for ratios measured seconds apart.
    let cases: [(&str, bool, &str, bool); 4] = [
        ("auth only (skips the guard)", false, "list_projects", false),
        ("guard, legacy body path", false, "list_projects", true),
        ("guard, 2026-07-28 headers + body", true, "list_projects", true),
        ("guard, 2026-07-28 refused from headers", true, "archive_project", true),
    ];
    const ROUNDS: usize = 15;
    const CALLS: u32 = 20_000;
    let mut samples = vec![Vec::new(); cases.len()];
    for round in 0..ROUNDS {
        for i in 0..cases.len() {
            let i = if round % 2 == 0 { i } else { cases.len() - 1 - i };
            let (_, modern, tool, through_guard) = cases[i];
            let started = Instant::now();
            for _ in 0..CALLS {
                if through_guard {
                    black_box(call(&mut guarded, modern, tool));
                } else {
                    black_box(call(&mut auth_only, modern, tool));
                }
            }
            samples[i].push(started.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = samples.iter_mut().map(median).collect();
    println!("\ninterleaved: {ROUNDS} rounds of {CALLS} calls per case, median ns per call");
    for ((name, ..), m) in cases.iter().zip(&medians) {
        println!(
            "  {name:<42} {m:>8.0} ns  ({:.2}x auth only, +{:.0} ns)",
            m / medians[0],
            m - medians[0]
        );
    }
}
