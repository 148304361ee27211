//! Memory stays bounded by the cache capacities under a flood of junk tokens, and the flood
//! cannot evict verified tokens.
//!
//! 1,000,000 distinct random (never valid) tokens go through `Verifier::verify` from several
//! concurrent tasks, with small `max_capacity` and `negative_max_capacity`, while a set of
//! valid tokens is cached and keeps being used. A fast in-process `Gateway` answers (every
//! junk token is a miss, then `InvalidToken`, then a negative-cache insert), so the run takes
//! seconds rather than the minutes a loopback gateway would.
//!
//! Asserted: every junk token is rejected with `invalid_token` after exactly one gateway call;
//! every valid token is served throughout and afterwards without a single new gateway call
//! (the negative traffic evicted none of them); `cached_count()` stays within `max_capacity`;
//! the negative cache really evicts (early junk tokens are asked again, so it is bounded by
//! count and not by time); and the process RSS grows by less than `RSS_GROWTH_LIMIT_MB`.
//!
//! This file holds a single test so that nothing else runs in the process while RSS is read.

#[allow(dead_code)]
#[path = "common/split_mix.rs"]
mod split_mix;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use split_mix::SplitMix;
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use tower_wacht::principal::{DeploymentId, Grant, StringSet};
use tower_wacht::{AuthError, WachtAuthConfig, WachtAuthLayer};

const JUNK_TOKENS: usize = 1_000_000;
const FEEDERS: usize = 4;
const VALID_TOKENS: usize = 500;
const MAX_CAPACITY: u64 = 1_000;
const NEGATIVE_MAX_CAPACITY: u64 = 1_000;
/// Allowed growth of the resident set from before the flood to its peak during and after it.
///
/// What the flood may legitimately cost: two moka caches of 1,000 entries each (well under
/// 1 MB with their frequency sketches), transient per-task futures, allocator fragmentation
/// and arenas of the two runtime threads (a few MB each). What it would cost if the negative
/// cache were not bounded by count: 1,000,000 entries of a 32-byte key plus moka's per-entry
/// node, deque and map overhead (measured: +374 MB with `negative_max_capacity(2_000_000)`,
/// about 390 bytes per entry; measured with the real capacity: +5 MB). 64 MB sits well clear
/// of both.
const RSS_GROWTH_LIMIT_MB: u64 = 64;

/// Valid tokens start with `oat_V`, junk with `oat_j`: junk can never be valid.
const VALID_MARK: u8 = b'V';
const JUNK_MARK: u8 = b'j';

/// In-process gateway: allows the registered valid tokens, rejects everything else.
struct FastGateway {
    valid: HashMap<String, String>,
    valid_calls: AtomicUsize,
    invalid_calls: AtomicUsize,
}

impl Gateway for FastGateway {
    fn check<'a>(&'a self, request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        let token = request.token.expose();
        let decision = match self.valid.get(token) {
            Some(client) if token.as_bytes()[4] == VALID_MARK => {
                self.valid_calls.fetch_add(1, Ordering::Relaxed);
                let mut grant = Grant::new(client.as_str(), SystemTime::now() + Duration::from_secs(3600));
                grant.scopes = StringSet::new(["projects:read"]);
                grant.permissions = StringSet::new(["projects:read"]);
                grant.deployment_id = Some(DeploymentId(1));
                grant.request_id = Some("req_memory".into());
                Decision::Allowed(Box::new(grant))
            }
            _ => {
                self.invalid_calls.fetch_add(1, Ordering::Relaxed);
                Decision::InvalidToken
            }
        };
        Box::pin(async move { Ok(decision) })
    }
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_junk_tokens_neither_grow_memory_nor_evict_valid_tokens() {
    let mut rng = SplitMix(0x5EED_0F50_AC00);
    let valid: Vec<(String, String)> = (0..VALID_TOKENS)
        .map(|i| (rng.token(VALID_MARK), format!("oc_memoryBoundClient{i:013}")))
        .collect();
    let gateway = Arc::new(FastGateway {
        valid: valid.iter().cloned().collect(),
        valid_calls: AtomicUsize::new(0),
        invalid_calls: AtomicUsize::new(0),
    });

    struct Shared(Arc<FastGateway>);
    impl Gateway for Shared {
        fn check<'a>(&'a self, request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
            self.0.check(request)
        }
    }
    let config = WachtAuthConfig::builder()
        .expected_deployment_id(1)
        .ttl(Duration::from_secs(600))
        .negative_ttl(Duration::from_secs(600))
        .max_capacity(MAX_CAPACITY)
        .negative_max_capacity(NEGATIVE_MAX_CAPACITY)
        .build()
        .expect("valid config");
    let layer = WachtAuthLayer::with_gateway(config, Shared(Arc::clone(&gateway))).expect("layer builds");
    let verifier = layer.verifier();

    // Cache the valid tokens.
    for (token, client) in &valid {
        let p = verifier.verify(token).await.expect("valid token verifies");
        assert_eq!(p.client_id().as_str(), client);
    }
    verifier.run_pending_tasks().await;
    assert_eq!(gateway.valid_calls.load(Ordering::SeqCst), VALID_TOKENS);
    assert_eq!(verifier.cached_count(), VALID_TOKENS as u64);

    // Warm the allocator and the runtime with a small flood first, so the baseline is taken
    // in steady state, then sample RSS from a plain thread during the real flood.
    for _ in 0..10_000 {
        let junk = rng.token(JUNK_MARK);
        assert!(verifier.verify(&junk).await.is_err());
    }
    verifier.run_pending_tasks().await;
    let early_junk: Vec<String> = (0..200).map(|_| rng.token(JUNK_MARK)).collect();
    for junk in &early_junk {
        assert!(verifier.verify(junk).await.is_err());
    }
    let calls_before = gateway.invalid_calls.load(Ordering::SeqCst);
    let baseline_kb = rss_kb();
    let peak_kb = Arc::new(AtomicU64::new(baseline_kb));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak_kb, stop) = (Arc::clone(&peak_kb), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_kb.fetch_max(rss_kb(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let started = Instant::now();
    let wrong = Arc::new(AtomicUsize::new(0));
    let mut feeders = Vec::new();
    for f in 0..FEEDERS {
        let layer = layer.clone();
        let valid = valid.clone();
        let wrong = Arc::clone(&wrong);
        feeders.push(tokio::spawn(async move {
            let mut rng = SplitMix(0xF00D_0000 + f as u64);
            for i in 0..JUNK_TOKENS / FEEDERS {
                let junk = rng.token(JUNK_MARK);
                match layer.verifier().verify(&junk).await {
                    Err(AuthError::InvalidToken(_)) => {}
                    other => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("junk token answered {other:?}");
                    }
                }
                // Keep using the valid tokens during the flood: they must stay cached.
                if i.is_multiple_of(500) {
                    let (token, client) = &valid[(i / 500 + f) % valid.len()];
                    match layer.verifier().verify(token).await {
                        Ok(p) if p.client_id().as_str() == client => {}
                        other => {
                            wrong.fetch_add(1, Ordering::Relaxed);
                            eprintln!("valid token answered {other:?}");
                        }
                    }
                }
            }
        }));
    }
    for feeder in feeders {
        feeder.await.expect("feeder finished");
    }
    let feed_time = started.elapsed();
    verifier.run_pending_tasks().await;
    peak_kb.fetch_max(rss_kb(), Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler thread");
    let end_kb = rss_kb();
    let peak_kb = peak_kb.load(Ordering::Relaxed);

    let junk_calls = gateway.invalid_calls.load(Ordering::SeqCst) - calls_before;
    let cached_after_flood = verifier.cached_count();
    // No valid token was evicted: all served again without a gateway call.
    let valid_calls_before = gateway.valid_calls.load(Ordering::SeqCst);
    for (token, client) in &valid {
        let p = verifier.verify(token).await.expect("valid token still verifies");
        assert_eq!(p.client_id().as_str(), client);
    }
    let valid_calls_after = gateway.valid_calls.load(Ordering::SeqCst);
    // The negative cache is bounded by count (its ttl is 10 minutes): tokens rejected before
    // the flood have been evicted and are asked again.
    let before = gateway.invalid_calls.load(Ordering::SeqCst);
    for junk in &early_junk {
        assert!(matches!(verifier.verify(junk).await, Err(AuthError::InvalidToken(_))));
    }
    let asked_again = gateway.invalid_calls.load(Ordering::SeqCst) - before;
    let growth_mb = peak_kb.saturating_sub(baseline_kb) / 1024;
    eprintln!(
        "memory_bound: {JUNK_TOKENS} junk tokens in {feed_time:.2?} ({:.0}/s) from {FEEDERS} tasks; \
         RSS baseline {} MB, peak {} MB (+{growth_mb} MB), end {} MB; cached {cached_after_flood} \
         (valid {VALID_TOKENS}, gateway calls for valid tokens {valid_calls_before} then {valid_calls_after}); \
         early junk asked again {asked_again}/{}",
        JUNK_TOKENS as f64 / feed_time.as_secs_f64(),
        baseline_kb / 1024,
        peak_kb / 1024,
        end_kb / 1024,
        early_junk.len(),
    );

    assert_eq!(wrong.load(Ordering::SeqCst), 0, "wrong decisions during the flood");
    // Junk served from the cache would mean a junk token was mistaken for another: each one
    // is distinct, so each costs exactly one gateway call.
    assert_eq!(junk_calls, JUNK_TOKENS, "every distinct junk token is asked once");
    assert!(
        cached_after_flood <= MAX_CAPACITY,
        "positive cache holds {cached_after_flood} > {MAX_CAPACITY}"
    );
    assert_eq!(
        cached_after_flood, VALID_TOKENS as u64,
        "the flood evicted valid tokens"
    );
    assert_eq!(
        valid_calls_after, VALID_TOKENS,
        "valid tokens were asked again: negative traffic evicted positive entries"
    );
    assert!(
        asked_again >= early_junk.len() * 9 / 10,
        "only {asked_again} of {} early junk tokens were evicted from the negative cache",
        early_junk.len()
    );
    assert!(
        growth_mb < RSS_GROWTH_LIMIT_MB,
        "RSS grew by {growth_mb} MB (baseline {} MB, peak {} MB) while flooding junk tokens",
        baseline_kb / 1024,
        peak_kb / 1024
    );
}
