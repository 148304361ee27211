//! What two threads hitting one layer at once cost each other, against one thread alone.
//!
//! ```text
//! cargo bench --bench contention
//! ```
//!
//! Every case runs a number of cache hits on one thread alone, then on two threads together
//! (one per CPU on a 2-CPU machine), in interleaved rounds; the ratio is the time per call
//! together ÷ alone, per round. A hit that writes a cache line another CPU also writes (a
//! reference count, a meter) waits for the line to move; the no-op service alone shows what
//! the machine itself charges two threads. Printed, not asserted.
//!
//! A bench of its own, with the system allocator: `hot_path` counts allocations through a
//! global counting allocator, whose shared counters would be the contention measured here.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use tower_wacht::principal::{Grant, RateLimitState};
use tower_wacht::rate_limit::{RateLimitConfig, RateLimitHeaders};
use tower_wacht::{WachtAuthConfig, WachtAuthLayer};

mod support;
use support::Noop;

/// Allows every token as one app's, with a rate-limit rule no run reaches when `rated`.
struct AllowAll {
    rated: bool,
}

impl Gateway for AllowAll {
    fn check<'a>(&'a self, _r: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        let rated = self.rated;
        Box::pin(async move {
            let mut grant = Grant::new(
                "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl",
                SystemTime::now() + Duration::from_secs(3600),
            );
            grant.deployment_id = Some(tower_wacht::principal::DeploymentId(418223109876543489));
            if rated {
                grant.rate_limits = vec![RateLimitState::new("4000000000/60s", 4_000_000_000, 3_999_999_999)];
            }
            Ok(Decision::Allowed(Box::new(grant)))
        })
    }
}

fn token(i: usize) -> HeaderValue {
    let token = format!("oat_{:0>43}", format!("{i:x}Hk-Ok_jojWARDPmrr7Y4Y6NQkbU7flSku"));
    HeaderValue::from_str(&format!("Bearer {}", &token[..47])).unwrap()
}

/// How a layer meters.
#[derive(Clone, Copy, PartialEq)]
enum Metering {
    Off,
    /// Metered, without the rate-limit headers.
    Quiet,
    /// Metered, with the `RateLimit-Policy` / `RateLimit` headers (the default).
    Headers,
}

/// A layer with both tokens cached.
fn layer(metering: Metering) -> WachtAuthLayer {
    let metered = metering != Metering::Off;
    let limits = match metering {
        Metering::Off => RateLimitConfig::default().disable_metering_unsafe(),
        Metering::Quiet => RateLimitConfig::default().headers(RateLimitHeaders::None),
        Metering::Headers => RateLimitConfig::default(),
    };
    let config = WachtAuthConfig::builder()
        .ttl(Duration::from_secs(3600))
        .expected_deployment_id(418223109876543489)
        .rate_limits(limits)
        .build()
        .unwrap();
    let layer = WachtAuthLayer::with_gateway(config, AllowAll { rated: metered }).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..2 {
            let header = token(i);
            let value = header.to_str().unwrap().trim_start_matches("Bearer ");
            layer.verifier().verify(value).await.unwrap();
        }
    });
    layer
}

fn call<S>(svc: &mut S, header: &HeaderValue)
where
    S: Service<Request<Empty<Bytes>>>,
{
    black_box(svc.call(support::request(header)).now_or_never());
}

const ROUNDS: usize = 15;
const CALLS: usize = 200_000;

/// Time per call for `CALLS` hits through `layer` (the bare service without one).
fn run(layer: Option<&WachtAuthLayer>, header: &HeaderValue) -> f64 {
    let started = Instant::now();
    match layer {
        Some(layer) => {
            let mut svc = layer.layer(Noop);
            for _ in 0..CALLS {
                call(&mut svc, header);
            }
        }
        None => {
            let mut svc = Noop;
            for _ in 0..CALLS {
                call(&mut svc, header);
            }
        }
    }
    started.elapsed().as_nanos() as f64 / CALLS as f64
}

fn main() {
    let unmetered = layer(Metering::Off);
    let metered = layer(Metering::Quiet);
    let headers = layer(Metering::Headers);
    let tokens = [token(0), token(1)];
    // (name, the layer or none for the bare service, whether both threads use one token)
    let cases: [(&str, Option<&WachtAuthLayer>, bool); 7] = [
        ("no-op service alone", None, false),
        ("unmetered layer, a token per thread", Some(&unmetered), false),
        ("unmetered layer, one token on both", Some(&unmetered), true),
        ("metered layer, a token per thread", Some(&metered), false),
        ("metered layer, one token on both", Some(&metered), true),
        ("metered + headers, a token per thread", Some(&headers), false),
        ("metered + headers, one token on both", Some(&headers), true),
    ];
    let mut ratios = vec![Vec::with_capacity(ROUNDS); cases.len()];
    let mut alone_ns = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for round in 0..ROUNDS {
        for i in (0..cases.len()).map(|k| (k + round) % cases.len()) {
            let (_, layer, shared) = cases[i];
            let alone = run(layer, &tokens[0]);
            let barrier = std::sync::Barrier::new(2);
            let together = std::thread::scope(|scope| {
                let other = &tokens[usize::from(!shared)];
                let barrier = &barrier;
                let helper = scope.spawn(move || {
                    // Its own copy of the header, made on its own thread, as a server's
                    // requests each have their own: two copies made together could share a
                    // cache line, and the test would measure that.
                    let other = HeaderValue::from_bytes(other.as_bytes()).unwrap();
                    barrier.wait();
                    run(layer, &other)
                });
                barrier.wait();
                let mine = run(layer, &tokens[0]);
                (mine + helper.join().unwrap()) / 2.0
            });
            ratios[i].push(together / alone);
            alone_ns[i].push(alone);
        }
    }
    let quartiles = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[3 * v.len() / 4])
    };
    println!(
        "contention, {ROUNDS} interleaved rounds of {CALLS} calls: time per call on two threads at once ÷ on one alone (median, middle half), and per call alone:"
    );
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let (lo, m, hi) = quartiles(ratios[i].clone());
        let (_, alone, _) = quartiles(alone_ns[i].clone());
        println!("  {name:<40} {m:>5.2}× ({lo:.2} to {hi:.2})   alone {alone:>6.1} ns");
    }
}
