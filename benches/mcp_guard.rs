//! The MCP guard's cost per call, in one run: the auth layer alone (a request that skips the
//! guard), the guard judging a `tools/call` from its body (legacy, and 2026-07-28 with its
//! mirrored headers checked against the body), a `resources/read` judged through a URI
//! template, a `prompts/get`, a refused call (403 built); and a `tools/list` answer of 20 tools
//! (about 3.6 KB, half of them hidden from the caller) through the guard without filtering and
//! with `filter_lists`, as JSON and as SSE. Every request is a cache hit of the auth layer
//! around an in-process service that answers at once; the request bodies are typical (about
//! 200 bytes); a list answer's body is read to its end, so the filtering is measured.
//!
//! ```text
//! cargo bench --bench mcp_guard
//! ```
//!
//! Prints criterion's timings, then the same cases interleaved in rounds (the ratios within a
//! run that BENCHMARKS.md records): the median time per call of each and its ratio to the
//! auth-only case, and for the list cases to the unfiltered list. Nothing is asserted.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::Criterion;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service};
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use tower_wacht::principal::{Grant, StringSet};
use tower_wacht::{McpGuardLayer, Permissions, WachtAuthConfig, WachtAuthLayer};

mod support;
use support::Noop;

const TOKEN: &str = "oat_2F1s22P-YJhDkOjojWARDPmrr7Y4Y6NQkbU7flSku_0";
const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
/// Tools in the listed answer; the caller may use the first half.
const LISTED_TOOLS: usize = 20;

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

/// What a case sends.
#[derive(Clone, Copy)]
enum Call {
    /// `tools/call` of this tool; with mirrored 2026-07-28 headers if `modern`.
    Tool { tool: &'static str, modern: bool },
    /// `resources/read` of a URI matched by a template rule.
    Resource,
    /// `prompts/get`.
    Prompt,
    /// `tools/list`.
    List,
}

fn request(call: Call) -> Request<Full<Bytes>> {
    let (method, params, name) = match call {
        Call::Tool { tool, .. } => (
            "tools/call",
            format!(
                r#"{{"name":"{tool}","arguments":{{"organization":"urn:wacht:organization:427001234567890561"}},{META}}}"#
            ),
            tool,
        ),
        Call::Resource => (
            "resources/read",
            format!(r#"{{"uri":"projects://prj_apollo/readme",{META}}}"#),
            "projects://prj_apollo/readme",
        ),
        Call::Prompt => (
            "prompts/get",
            format!(r#"{{"name":"summarize_project","arguments":{{"project_id":"prj_apollo"}},{META}}}"#),
            "summarize_project",
        ),
        Call::List => ("tools/list", format!("{{{META}}}"), ""),
    };
    let body = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{params}}}"#);
    let mut req = Request::post("/mcp")
        .header(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        )
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    if let Call::Tool { modern: true, .. } = call {
        let h = req.headers_mut();
        h.insert("mcp-protocol-version", HeaderValue::from_static("2026-07-28"));
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", HeaderValue::from_str(name).unwrap());
    }
    req
}

/// The answer to `tools/list` (id 7): `LISTED_TOOLS` tools with a description and a schema.
fn list_answer() -> String {
    let tools: Vec<String> = (0..LISTED_TOOLS)
        .map(|i| {
            format!(
                r#"{{"name":"tool_{i}","description":"Does thing number {i} to a project of the organization.","inputSchema":{{"type":"object","properties":{{"project_id":{{"type":"string"}}}},"required":["project_id"]}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"result":{{"tools":[{}],"nextCursor":"page-2"}}}}"#,
        tools.join(",")
    )
}

/// Answers every request with the list answer, as JSON or as one SSE event.
#[derive(Clone)]
struct Lister {
    body: Bytes,
    content_type: &'static str,
}

impl Lister {
    fn new(sse: bool) -> Self {
        let answer = list_answer();
        let (body, content_type) = if sse {
            (format!("event: message\ndata: {answer}\n\n"), "text/event-stream")
        } else {
            (answer, "application/json")
        };
        Lister {
            body: Bytes::from(body),
            content_type,
        }
    }
}

impl<B> Service<Request<B>> for Lister {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        black_box(&req);
        let mut response = Response::new(Full::new(self.body.clone()));
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static(self.content_type));
        ready(Ok(response))
    }
}

/// Calls once, reads the answer's body to its end; the status and the body's length.
fn call<S, B>(svc: &mut S, c: Call) -> (u16, usize)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = match svc.call(request(c)).now_or_never() {
        Some(Ok(r)) => r,
        other => panic!(
            "the call did not complete at once: {:?}",
            other.map(|r| r.map(|r| r.status()))
        ),
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .now_or_never()
        .expect("the body is ready")
        .expect("the body reads")
        .to_bytes();
    (status, body.len())
}

fn rules() -> McpGuardLayer {
    let mut guard = McpGuardLayer::new()
        .tool("list_projects", Permissions::all(["projects:read"]))
        .tool("archive_project", Permissions::all(["projects:write"]))
        .resource_template("projects://{id}/readme", Permissions::all(["projects:read"]))
        .prompt("summarize_project", Permissions::all(["projects:read"]));
    for i in 0..LISTED_TOOLS {
        let needs = if i < LISTED_TOOLS / 2 {
            "projects:read"
        } else {
            "projects:write"
        };
        guard = guard.tool(format!("tool_{i}"), Permissions::all([needs]));
    }
    guard
}

#[derive(Clone, Copy)]
enum Through {
    AuthOnly,
    Guard,
    List { filtered: bool, sse: bool },
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
    let list = |filtered: bool, sse: bool| {
        let guard = if filtered { rules().filter_lists() } else { rules() };
        auth.clone().layer(guard.layer(Lister::new(sse)))
    };
    let mut auth_only = auth.clone().layer(Noop);
    let mut guarded = auth.clone().layer(rules().layer(Noop));
    let (mut json_list, mut json_filtered) = (list(false, false), list(true, false));
    let (mut sse_list, mut sse_filtered) = (list(false, true), list(true, true));
    let mut run = |through: Through, c: Call| match through {
        Through::AuthOnly => call(&mut auth_only, c),
        Through::Guard => call(&mut guarded, c),
        Through::List {
            filtered: false,
            sse: false,
        } => call(&mut json_list, c),
        Through::List {
            filtered: true,
            sse: false,
        } => call(&mut json_filtered, c),
        Through::List {
            filtered: false,
            sse: true,
        } => call(&mut sse_list, c),
        Through::List {
            filtered: true,
            sse: true,
        } => call(&mut sse_filtered, c),
    };

    let list_projects = Call::Tool {
        tool: "list_projects",
        modern: false,
    };
    let cases: [(&str, Through, Call); 10] = [
        ("auth only (skips the guard)", Through::AuthOnly, list_projects),
        ("guard, tools/call, legacy body path", Through::Guard, list_projects),
        (
            "guard, tools/call, 2026-07-28 headers + body",
            Through::Guard,
            Call::Tool {
                tool: "list_projects",
                modern: true,
            },
        ),
        ("guard, resources/read by URI template", Through::Guard, Call::Resource),
        ("guard, prompts/get", Through::Guard, Call::Prompt),
        (
            "guard, tools/call refused (403 built)",
            Through::Guard,
            Call::Tool {
                tool: "archive_project",
                modern: false,
            },
        ),
        (
            "tools/list JSON, guard, not filtered",
            Through::List {
                filtered: false,
                sse: false,
            },
            Call::List,
        ),
        (
            "tools/list JSON, guard, filtered",
            Through::List {
                filtered: true,
                sse: false,
            },
            Call::List,
        ),
        (
            "tools/list SSE, guard, not filtered",
            Through::List {
                filtered: false,
                sse: true,
            },
            Call::List,
        ),
        (
            "tools/list SSE, guard, filtered",
            Through::List {
                filtered: true,
                sse: true,
            },
            Call::List,
        ),
    ];
    // Each case answers as it should before it is timed.
    let expected = [200, 200, 200, 200, 200, 403, 200, 200, 200, 200];
    for ((name, through, c), status) in cases.iter().zip(expected) {
        assert_eq!(run(*through, *c).0, status, "{name}");
    }
    let full = run(cases[6].1, Call::List).1;
    let shown = run(cases[7].1, Call::List).1;
    println!("tools/list answer: {full} bytes, {shown} after filtering ({LISTED_TOOLS} tools, half shown)");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut g = c.benchmark_group("mcp_call");
    for (name, through, call) in cases {
        g.bench_function(name, |b| b.iter(|| run(through, call)));
    }
    g.finish();
    c.final_summary();

    // The same cases, interleaved in rounds, for ratios measured seconds apart.
    const ROUNDS: usize = 15;
    const CALLS: u32 = 10_000;
    let mut samples = vec![Vec::new(); cases.len()];
    for round in 0..ROUNDS {
        for i in 0..cases.len() {
            let i = if round % 2 == 0 { i } else { cases.len() - 1 - i };
            let (_, through, call) = cases[i];
            let started = Instant::now();
            for _ in 0..CALLS {
                black_box(run(through, call));
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
    for (i, ((name, ..), m)) in cases.iter().zip(&medians).enumerate() {
        let against = match i {
            7 => format!(", {:.2}x unfiltered, +{:.0} ns", m / medians[6], m - medians[6]),
            9 => format!(", {:.2}x unfiltered, +{:.0} ns", m / medians[8], m - medians[8]),
            _ => String::new(),
        };
        println!(
            "  {name:<46} {m:>8.0} ns  ({:.2}x auth only, +{:.0} ns{against})",
            m / medians[0],
            m - medians[0]
        );
    }
}
