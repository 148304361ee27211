//! Micro benchmark of the cache-hit path, stage by stage, and of the whole layer around a
//! no-op service against the bare no-op service.
//!
//! ```text
//! cargo bench --bench hot_path
//! ```
//!
//! Prints, before criterion's timings: allocations per request on a hit (layer minus bare
//! service, counted by a counting global allocator) and memory per cached principal (bytes
//! requested from the allocator per entry, measured by filling a cache).
//!
//! `stream_chunk`: what one frame of a streamed response costs through the layer's watched
//! body (which ends the stream with the token) against the same body unwatched and alone, in
//! one run: a body that always has a frame ready, polled inside a Tokio runtime, in place and
//! boxed (as Axum and Tonic hold a response body).
//!
//! `credential`: a hit per credential kind, in one run: an opaque token through a layer
//! without API keys (the baseline), the same token through a layer taking `sk_live` keys, an
//! API key in `Authorization` and in `x-api-key`, and the token through `oauth_only()`; then
//! the same cases interleaved in rounds, as ratios to the baseline.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{Extensions, HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::Empty;
use http_body_util::combinators::UnsyncBoxBody;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service};
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use tower_wacht::principal::{
    ApiKeyId, ApiKeyIdentity, CredentialKind, DeploymentId, Grant, OrganizationId, RateLimitState, StringSet, UserId,
};
use tower_wacht::rate_limit::RateLimitConfig;
use tower_wacht::token::{TokenHash, bearer_from_headers};
use tower_wacht::{ResourceUrn, WachtAuthConfig, WachtAuthLayer};

mod support;
use support::Noop;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Allows every token, in process, with a realistic principal.
struct AllowAll;

fn grant(client: &str) -> Grant {
    let mut grant = Grant::new(client, SystemTime::now() + Duration::from_secs(3600));
    grant.granted_resource = Some(ResourceUrn::Organization(OrganizationId(427001234567890561)));
    grant.scopes = StringSet::new(["projects:read", "projects:write", "mcp:invoke"]);
    grant.permissions = StringSet::new([
        "mcp:invoke",
        "org:projects:read",
        "org:projects:write",
        "projects:read",
        "projects:write",
    ]);
    grant.oauth_resource = Some("https://api.example.com/mcp".into());
    grant.issuer = Some("https://auth.example.com".into());
    grant.deployment_id = Some(DeploymentId(418223109876543489));
    grant.owner_user_id = Some(UserId(432119876543210241));
    grant.request_id = Some("req_593812470012345678".into());
    grant
}

impl Gateway for AllowAll {
    fn check<'a>(&'a self, r: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        let kind = r.kind;
        Box::pin(async move {
            if kind == CredentialKind::ApiKey {
                // What the gateway answers for a key: its app, tenant and identity.
                let mut g = grant("billing-service");
                g.scopes = StringSet::default();
                g.oauth_resource = None;
                g.issuer = None;
                let mut key = ApiKeyIdentity::new(ApiKeyId(7001), "nightly export", "billing-service");
                key.organization_id = Some(OrganizationId(427001234567890561));
                g.api_key = Some(std::sync::Arc::new(key));
                return Ok(Decision::Allowed(Box::new(g)));
            }
            Ok(Decision::Allowed(Box::new(grant(
                "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl",
            ))))
        })
    }
}

/// [`AllowAll`], with Wacht's default rule in every answer at a limit no benchmark reaches:
/// every hit is counted by a meter.
struct AllowAllRated;

impl Gateway for AllowAllRated {
    fn check<'a>(&'a self, r: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        Box::pin(async move {
            match AllowAll.check(r).await {
                Ok(Decision::Allowed(mut grant)) => {
                    grant.rate_limits = vec![RateLimitState::new("4000000000/60s", 4_000_000_000, 3_999_999_999)];
                    Ok(Decision::Allowed(grant))
                }
                other => other,
            }
        })
    }
}

/// A realistic opaque token: `oat_` + 43 base64url characters.
fn token(i: usize) -> String {
    format!("oat_{:0>43}", format!("{i:x}Hk-Ok_jojWARDPmrr7Y4Y6NQkbU7flSku"))[..47].to_owned()
}

fn layer(capacity: u64) -> WachtAuthLayer {
    let config = WachtAuthConfig::builder()
        .max_capacity(capacity)
        .ttl(Duration::from_secs(3600))
        .expected_deployment_id(418223109876543489)
        .build()
        .unwrap();
    WachtAuthLayer::with_gateway(config, AllowAll).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Verifies `n` distinct tokens so the cache holds them.
fn fill(layer: &WachtAuthLayer, n: usize) {
    let rt = runtime();
    rt.block_on(async {
        for i in 0..n {
            layer.verifier().verify(&token(i)).await.unwrap();
        }
        layer.verifier().run_pending_tasks().await;
    });
}

/// An empty-bodied request with this `Authorization` header.
fn request(header: &HeaderValue) -> Request<Empty<Bytes>> {
    support::request(header)
}

fn call<S>(svc: &mut S, header: &HeaderValue)
where
    S: Service<Request<Empty<Bytes>>>,
{
    let fut = svc.call(request(header));
    black_box(fut.now_or_never());
}

/// Stands for what a router or server has already put in the extensions (Axum's Router
/// inserts `OriginalUri`, `into_make_service_with_connect_info` a `ConnectInfo`).
#[derive(Clone)]
struct Earlier(#[allow(dead_code)] u64);

fn call_with_extension<S>(svc: &mut S, header: &HeaderValue)
where
    S: Service<Request<Empty<Bytes>>>,
{
    let mut req = request(header);
    req.extensions_mut().insert(Earlier(1));
    black_box(svc.call(req).now_or_never());
}

/// A one-route Axum app: the realistic inner service for the layer wrapped around a whole
/// app (`auth.layer(router)`), where the request reaches the layer with empty extensions and
/// the Router then adds its own (`MatchedPath`, `OriginalUri`).
fn router() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "ok" }))
}

fn call_router<S>(svc: &mut S, header: &HeaderValue)
where
    S: Service<Request<axum::body::Body>>,
{
    let mut req = Request::new(axum::body::Body::empty());
    req.headers_mut().insert(http::header::AUTHORIZATION, header.clone());
    black_box(svc.call(req).now_or_never());
}

fn allocations_per_hit() {
    const N: usize = 100_000;
    let auth = layer(1_000);
    fill(&auth, 1);
    let header = HeaderValue::from_str(&format!("Bearer {}", token(0))).unwrap();
    let mut bare = Noop;
    let mut wrapped = auth.layer(Noop);
    // Warm both paths (thread-local state, lazily created structures).
    for _ in 0..1000 {
        call(&mut bare, &header);
        call(&mut wrapped, &header);
    }
    let count = |label: &str, bare_call: &mut dyn FnMut(), layer_call: &mut dyn FnMut()| {
        let allocations = |f: &mut dyn FnMut()| {
            let region = Region::new(GLOBAL);
            for _ in 0..N {
                f();
            }
            region.change().allocations as f64 / N as f64
        };
        let (bare, layer) = (allocations(bare_call), allocations(layer_call));
        println!(
            "allocations per request, {label}: bare {bare:.2}, with layer (cache hit) {layer:.2}, difference {:.2}",
            layer - bare
        );
    };
    count("empty extensions", &mut || call(&mut bare, &header), &mut || {
        call(&mut wrapped, &header)
    });
    count(
        "extensions already in use",
        &mut || call_with_extension(&mut bare, &header),
        &mut || call_with_extension(&mut wrapped, &header),
    );
    let mut bare_app = router();
    let mut wrapped_app = auth.layer(router());
    for _ in 0..1000 {
        call_router(&mut bare_app, &header);
        call_router(&mut wrapped_app, &header);
    }
    count(
        "Axum app, layer around the whole app",
        &mut || call_router(&mut bare_app, &header),
        &mut || call_router(&mut wrapped_app, &header),
    );
}

fn memory_per_entry() {
    const N: usize = 100_000;
    let auth = layer(2 * N as u64);
    // Warm-up: the first verification creates lazily built structures (runtime, interner).
    fill(&auth, 1);
    let region = Region::new(GLOBAL);
    let rt = runtime();
    rt.block_on(async {
        for i in 1..=N {
            auth.verifier().verify(&token(i)).await.unwrap();
        }
        auth.verifier().run_pending_tasks().await;
    });
    drop(rt);
    let stats = region.change();
    let per_entry = (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64) / N as f64;
    println!(
        "memory per cached principal: {per_entry:.0} bytes/entry (bytes requested from the allocator and still held, \
         moka entry + principal; {} entries cached; Grant struct {} B)",
        auth.verifier().cached_count(),
        std::mem::size_of::<Grant>(),
    );
}

fn stages(c: &mut Criterion) {
    let auth = layer(10_000);
    fill(&auth, 1);
    let tok = token(0);
    let header = HeaderValue::from_str(&format!("Bearer {tok}")).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, header.clone());
    let hash = TokenHash::of(&tok);
    let principal = auth.verifier().cached(&hash).unwrap();

    let mut g = c.benchmark_group("stage");
    g.bench_function("parse_header", |b| {
        b.iter(|| black_box(bearer_from_headers(black_box(&headers), 4096)))
    });
    g.bench_function("sha256_token", |b| b.iter(|| black_box(TokenHash::of(black_box(&tok)))));
    g.bench_function("cache_lookup", |b| {
        b.iter(|| black_box(auth.verifier().cached(black_box(&hash))))
    });
    g.bench_function("extension_insert", |b| {
        b.iter_batched(
            Extensions::new,
            |mut ext| {
                ext.insert(principal.clone());
                ext
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("request");
    let mut bare = Noop;
    g.bench_function("bare_noop_service", |b| b.iter(|| call(&mut bare, &header)));
    let mut wrapped = auth.clone().layer(Noop);
    g.bench_function("layer_cache_hit", |b| b.iter(|| call(&mut wrapped, &header)));
    // The audit trail on, to a sink nobody reads (full after one record: every later
    // record is built, offered and dropped), tracing off.
    let (sink, _records) = tower_wacht::audit::AuditSink::channel(1);
    let config = WachtAuthConfig::builder()
        .max_capacity(10_000)
        .ttl(Duration::from_secs(3600))
        .expected_deployment_id(418223109876543489)
        .audit(tower_wacht::audit::AuditConfig::new().sink(sink))
        .build()
        .unwrap();
    let audited = WachtAuthLayer::with_gateway(config, AllowAll).unwrap();
    fill(&audited, 1);
    let mut wrapped = audited.layer(Noop);
    g.bench_function("layer_cache_hit_audited", |b| b.iter(|| call(&mut wrapped, &header)));
    // Rate-limit metering: off (as before it existed); on with a rule in every answer (each
    // hit works out its route, finds its meter and counts there). `layer_cache_hit` above is
    // on with no rule in the answers (the route is worked out and looked up, nothing counted).
    let mut wrapped = metered_layer(RateLimitConfig::default().disable_metering_unsafe(), false).layer(Noop);
    g.bench_function("layer_cache_hit_unmetered", |b| b.iter(|| call(&mut wrapped, &header)));
    let mut wrapped = metered_layer(
        RateLimitConfig::default().headers(tower_wacht::rate_limit::RateLimitHeaders::None),
        true,
    )
    .layer(Noop);
    g.bench_function("layer_cache_hit_metered_rule", |b| {
        b.iter(|| call(&mut wrapped, &header))
    });
    let mut wrapped = metered_layer(RateLimitConfig::default(), true).layer(Noop);
    g.bench_function("layer_cache_hit_metered_rule_headers", |b| {
        b.iter(|| call(&mut wrapped, &header))
    });
    g.finish();
}

fn call_x_api_key<S>(svc: &mut S, key: &HeaderValue)
where
    S: Service<Request<Empty<Bytes>>>,
{
    let mut req = Request::new(Empty::new());
    req.headers_mut().insert("x-api-key", key.clone());
    black_box(svc.call(req).now_or_never());
}

/// A hit per credential kind (see the module docs), criterion then interleaved rounds.
fn credential(c: &mut Criterion) {
    const KEY: &str = "sk_live_2F1s22P-YJhDkOjojWARDPmrr7Y4Y6NQkbU7flSku_0";
    let plain = layer(10_000);
    let config = WachtAuthConfig::builder()
        .max_capacity(10_000)
        .ttl(Duration::from_secs(3600))
        .expected_deployment_id(418223109876543489)
        .api_key_prefixes(["sk_live", "sk_test"])
        .api_key_header(http::HeaderName::from_static("x-api-key"))
        .build()
        .unwrap();
    let keys = WachtAuthLayer::with_gateway(config, AllowAll).unwrap();
    // One token per layer: the per-thread front cache tags slots by token hash, so two
    // verifiers sharing a token would evict each other's slot (a bench artefact).
    let (tok, tok_keys) = (token(0), token(1));
    let rt = runtime();
    rt.block_on(async {
        plain.verifier().verify(&tok).await.unwrap();
        keys.verifier().verify(&tok_keys).await.unwrap();
        let key = keys.verifier().verify(KEY).await.unwrap();
        assert_eq!(key.credential_kind(), CredentialKind::ApiKey);
    });
    let token_header = HeaderValue::from_str(&format!("Bearer {tok}")).unwrap();
    let token_keys_header = HeaderValue::from_str(&format!("Bearer {tok_keys}")).unwrap();
    let key_header = HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap();
    let x_api_key = HeaderValue::from_static(KEY);
    let mut token_plain = plain.clone().layer(Noop);
    let mut token_keys = keys.clone().layer(Noop);
    let mut key_keys = keys.clone().layer(Noop);
    let mut key_x = keys.clone().layer(Noop);
    let mut token_oauth_only = keys.oauth_only().layer(Noop);
    type Case<'a> = (&'a str, Box<dyn FnMut() + 'a>);
    let mut cases: Vec<Case<'_>> = vec![
        (
            "token, layer without API keys (baseline)",
            Box::new(|| call(&mut token_plain, &token_header)),
        ),
        (
            "token, layer taking API keys",
            Box::new(|| call(&mut token_keys, &token_keys_header)),
        ),
        (
            "API key in Authorization",
            Box::new(|| call(&mut key_keys, &key_header)),
        ),
        (
            "API key in x-api-key",
            Box::new(|| call_x_api_key(&mut key_x, &x_api_key)),
        ),
        (
            "token, oauth_only() layer",
            Box::new(|| call(&mut token_oauth_only, &token_keys_header)),
        ),
    ];
    let mut g = c.benchmark_group("credential");
    for (name, run) in cases.iter_mut() {
        g.bench_function(*name, |b| b.iter(&mut *run));
    }
    g.finish();

    const ROUNDS: usize = 15;
    const CALLS: usize = 20_000;
    let mut samples = vec![Vec::with_capacity(ROUNDS); cases.len()];
    let n = cases.len();
    for round in 0..ROUNDS {
        // Each round starts with another case: none is always first after a pause.
        for i in (0..n).map(|k| (k + round) % n) {
            let run = &mut cases[i].1;
            let started = std::time::Instant::now();
            for _ in 0..CALLS {
                run();
            }
            samples[i].push(started.elapsed().as_nanos() as f64 / CALLS as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = samples.iter_mut().map(median).collect();
    println!(
        "\ncredential hits, {ROUNDS} interleaved rounds of {CALLS} calls (median per call, ratio to the baseline):"
    );
    for ((name, _), m) in cases.iter().zip(&medians) {
        println!("  {name:<45} {m:>7.0} ns  {:.2}", m / medians[0]);
    }
}

/// A handler's response as a real app gives it: with a content type (what Axum's `String`
/// handler sets), so the response's header map exists before the layer adds to it.
#[derive(Clone)]
struct Handler;

impl<B: Default> Service<Request<B>> for Handler {
    type Response = Response<B>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        black_box(&req);
        let mut response = Response::new(B::default());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        std::future::ready(Ok(response))
    }
}

/// A layer with these rate-limit settings whose gateway answers with a rule (`rated`: every
/// hit is counted) or without, its one token verified.
fn metered_layer(limits: RateLimitConfig, rated: bool) -> WachtAuthLayer {
    let config = WachtAuthConfig::builder()
        .max_capacity(10_000)
        .ttl(Duration::from_secs(3600))
        .expected_deployment_id(418223109876543489)
        .rate_limits(limits)
        .build()
        .unwrap();
    let layer = if rated {
        WachtAuthLayer::with_gateway(config, AllowAllRated).unwrap()
    } else {
        WachtAuthLayer::with_gateway(config, AllowAll).unwrap()
    };
    fill(&layer, 1);
    layer
}

/// What metering costs a hit, measured interleaved: every case runs in turn for 20 000
/// calls, 31 rounds, and each round's difference to the unmetered layer is taken within the
/// round (seconds apart), so that the machine's drift cancels. Printed, not asserted.
fn metering_rounds() {
    let no_headers = || RateLimitConfig::default().headers(tower_wacht::rate_limit::RateLimitHeaders::None);
    let unmetered = metered_layer(RateLimitConfig::default().disable_metering_unsafe(), false);
    let metered = metered_layer(no_headers(), true);
    let headers = metered_layer(RateLimitConfig::default(), true);
    let header = HeaderValue::from_str(&format!("Bearer {}", token(0))).unwrap();
    let (mut bare, mut bare_handler) = (Noop, Handler);
    let (mut u, mut m, mut h) = (
        unmetered.clone().layer(Noop),
        metered.clone().layer(Noop),
        headers.clone().layer(Noop),
    );
    let (mut uh, mut mh, mut hh) = (unmetered.layer(Handler), metered.layer(Handler), headers.layer(Handler));
    type Case<'a> = (&'a str, Box<dyn FnMut() + 'a>);
    let mut cases: Vec<Case<'_>> = vec![
        ("no-op service, unmetered layer", Box::new(|| call(&mut u, &header))),
        (
            "no-op service, metered (rule, no headers)",
            Box::new(|| call(&mut m, &header)),
        ),
        (
            "no-op service, metered with headers",
            Box::new(|| call(&mut h, &header)),
        ),
        ("no-op service alone", Box::new(|| call(&mut bare, &header))),
        ("handler, unmetered layer", Box::new(|| call(&mut uh, &header))),
        (
            "handler, metered (rule, no headers)",
            Box::new(|| call(&mut mh, &header)),
        ),
        ("handler, metered with headers", Box::new(|| call(&mut hh, &header))),
        ("handler alone", Box::new(|| call(&mut bare_handler, &header))),
    ];
    const ROUNDS: usize = 31;
    const CALLS: usize = 20_000;
    let n = cases.len();
    let mut per_call = vec![Vec::with_capacity(ROUNDS); n];
    for round in 0..ROUNDS {
        for i in (0..n).map(|k| (k + round) % n) {
            let run = &mut cases[i].1;
            let started = std::time::Instant::now();
            for _ in 0..CALLS {
                run();
            }
            per_call[i].push(started.elapsed().as_nanos() as f64 / CALLS as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[3 * v.len() / 4])
    };
    println!(
        "\nmetering, {ROUNDS} interleaved rounds of {CALLS} calls (per call: median, and the median of the per-round difference to the unmetered layer of the same service, with its middle half):"
    );
    for (i, (name, _)) in cases.iter().enumerate() {
        let base = if i < 4 { 0 } else { 4 };
        let (_, m, _) = median(per_call[i].clone());
        let diffs: Vec<f64> = per_call[i].iter().zip(&per_call[base]).map(|(a, b)| a - b).collect();
        let (lo, d, hi) = median(diffs);
        println!("  {name:<45} {m:>7.1} ns  {d:>+7.1} ns ({lo:+.1} to {hi:+.1})");
    }
}

/// A streamed body (unknown length) that always has a frame ready, after waiting once if
/// `wait_first` (which arms a watched body's timer).
struct Frames {
    wait_first: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.wait_first {
            self.wait_first = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"event: tick\ndata: 1\n\n")))))
    }
}

/// Answers every request with a [`Frames`] body.
#[derive(Clone)]
struct Streamer {
    wait_first: bool,
}

impl Service<Request<Empty<Bytes>>> for Streamer {
    type Response = Response<Frames>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Frames>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Empty<Bytes>>) -> Self::Future {
        ready(Ok(Response::new(Frames {
            wait_first: self.wait_first,
        })))
    }
}

/// The response body `svc` gives a request with this `Authorization` header.
fn body_of<S, B>(svc: &mut S, header: Option<&HeaderValue>) -> B
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let req = match header {
        Some(header) => request(header),
        None => Request::new(Empty::new()),
    };
    match svc.call(req).now_or_never() {
        Some(Ok(response)) => response.into_body(),
        _ => panic!("the response is ready at once"),
    }
}

/// Polls one frame out of `body`, which always has one (after its one wait), and reads its
/// length, as a server writing it would.
fn frame<B: Body<Data = Bytes> + Unpin>(body: &mut B, cx: &mut Context<'_>) {
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                black_box(frame.data_ref().map(Bytes::len));
                return;
            }
            Poll::Pending => continue,
            Poll::Ready(_) => panic!("the stream ended"),
        }
    }
}

fn stream_chunk(c: &mut Criterion) {
    let rt = runtime();
    // The watched body arms its timer inside a runtime, as under hyper or tonic.
    let _runtime = rt.enter();
    let auth = layer(1_000);
    fill(&auth, 1);
    let header = HeaderValue::from_str(&format!("Bearer {}", token(0))).unwrap();
    let optional = {
        let config = WachtAuthConfig::builder()
            .expected_deployment_id(418223109876543489)
            .optional(true)
            .build()
            .unwrap();
        WachtAuthLayer::with_gateway(config, AllowAll).unwrap()
    };
    let mut cx = Context::from_waker(Waker::noop());

    let mut bare = body_of(&mut Streamer { wait_first: false }, None);
    // The layer's body for an anonymous caller (optional mode): not watched.
    let mut unwatched = body_of(&mut optional.layer(Streamer { wait_first: false }), None);
    // A verified caller's stream that never waited: the clock against the deadline per frame.
    let mut busy = body_of(&mut auth.clone().layer(Streamer { wait_first: false }), Some(&header));
    // One that waited once, as a real stream does: its timer is armed, a frame asks the timer.
    let mut armed = body_of(&mut auth.clone().layer(Streamer { wait_first: true }), Some(&header));
    frame(&mut armed, &mut cx);

    // The same four bodies boxed, as Axum (`axum::body::Body`) and Tonic (`tonic::body::Body`)
    // hold a response body: each frame is a call through the box.
    let boxed = |body: fn(&WachtAuthLayer, &WachtAuthLayer, &HeaderValue) -> UnsyncBoxBody<Bytes, Infallible>| {
        body(&auth, &optional, &header)
    };
    let mut bare_boxed = boxed(|_, _, _| UnsyncBoxBody::new(body_of(&mut Streamer { wait_first: false }, None)));
    let mut unwatched_boxed =
        boxed(|_, optional, _| UnsyncBoxBody::new(body_of(&mut optional.layer(Streamer { wait_first: false }), None)));
    let mut busy_boxed = boxed(|auth, _, header| {
        UnsyncBoxBody::new(body_of(&mut auth.layer(Streamer { wait_first: false }), Some(header)))
    });
    let mut armed_boxed = boxed(|auth, _, header| {
        UnsyncBoxBody::new(body_of(&mut auth.layer(Streamer { wait_first: true }), Some(header)))
    });
    frame(&mut armed_boxed, &mut cx);

    let mut g = c.benchmark_group("stream_chunk");
    g.bench_function("bare_body", |b| b.iter(|| frame(&mut bare, &mut cx)));
    g.bench_function("layer_body_not_watched", |b| b.iter(|| frame(&mut unwatched, &mut cx)));
    g.bench_function("watched_never_waited", |b| b.iter(|| frame(&mut busy, &mut cx)));
    g.bench_function("watched_timer_armed", |b| b.iter(|| frame(&mut armed, &mut cx)));
    g.bench_function("boxed/bare_body", |b| b.iter(|| frame(&mut bare_boxed, &mut cx)));
    g.bench_function("boxed/layer_body_not_watched", |b| {
        b.iter(|| frame(&mut unwatched_boxed, &mut cx))
    });
    g.bench_function("boxed/watched_never_waited", |b| {
        b.iter(|| frame(&mut busy_boxed, &mut cx))
    });
    g.bench_function("boxed/watched_timer_armed", |b| {
        b.iter(|| frame(&mut armed_boxed, &mut cx))
    });
    g.finish();
}

fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("hit_by_cache_size");
    for n in [1_000usize, 100_000, 1_000_000] {
        let auth = layer(2 * n as u64);
        fill(&auth, n);
        let headers: Vec<HeaderValue> = (0..1024)
            .map(|i| HeaderValue::from_str(&format!("Bearer {}", token(i * (n / 1024)))).unwrap())
            .collect();
        let mut svc = auth.layer(Noop);
        // One hot token (what a busy client looks like) ...
        g.bench_function(format!("hot_token/{n}"), |b| b.iter(|| call(&mut svc, &headers[0])));
        // ... and 1024 tokens spread over the whole cache in turn.
        let mut i = 0usize;
        g.bench_function(format!("rotating_1024_tokens/{n}"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                call(&mut svc, &headers[i])
            })
        });
        drop(svc);
    }
    g.finish();
}

/// `HOT_PATH_PROFILE=layer|unmetered|metered|headers|bare|miss cargo bench --bench hot_path`: run 100k requests of one
/// kind and exit, for `valgrind --tool=callgrind` (instruction counts do not depend on machine
/// noise). `miss`: 100k distinct tokens, each a cache miss answered by an in-process gateway
/// (what the layer adds to a gateway call, without the network).
fn profile(kind: &str) {
    const N: usize = 100_000;
    if kind == "miss" {
        let auth = layer(N as u64);
        let mut wrapped = auth.layer(Noop);
        let rt = runtime();
        rt.block_on(async {
            for i in 0..N {
                let header = HeaderValue::from_str(&format!("Bearer {}", token(i))).unwrap();
                let response = wrapped.call(request(&header)).await;
                black_box(response.is_ok());
            }
        });
        return;
    }
    // `layer`: metering on, no rule in the answers; `unmetered`: off; `metered`: on, with a
    // rule counted on every hit (no headers); `headers`: the same with the default headers.
    let limits = match kind {
        "unmetered" => RateLimitConfig::default().disable_metering_unsafe(),
        "headers" => RateLimitConfig::default(),
        _ => RateLimitConfig::default().headers(tower_wacht::rate_limit::RateLimitHeaders::None),
    };
    let auth = metered_layer(limits, kind == "metered" || kind == "headers");
    let header = HeaderValue::from_str(&format!("Bearer {}", token(0))).unwrap();
    let mut bare = Noop;
    let mut wrapped = auth.layer(Noop);
    for _ in 0..N {
        if kind == "bare" {
            call(&mut bare, &header);
        } else {
            call(&mut wrapped, &header);
        }
    }
}

fn main() {
    if let Ok(kind) = std::env::var("HOT_PATH_PROFILE") {
        profile(&kind);
        return;
    }
    if std::env::var("HOT_PATH_METERING").is_ok() {
        metering_rounds();
        return;
    }
    allocations_per_hit();
    memory_per_entry();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    stages(&mut c);
    credential(&mut c);
    stream_chunk(&mut c);
    scaling(&mut c);
    c.final_summary();
}
