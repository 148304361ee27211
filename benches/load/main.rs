//! Loopback load benchmark: the same Axum app served four ways (and four more with JWT access
//! tokens), measured in one run.
//!
//! ```text
//! cargo bench --bench load --features test-util
//! ```
//!
//! 1. `baseline`: the handler with no auth layer (the limit);
//! 2. `hit`: `WachtAuthLayer` applied with `Router::layer`, every token already verified
//!    (cache hits); `hit-app`: the same, the layer wrapped around the whole app instead;
//! 3. `cold`: `WachtAuthLayer`, every request a new token (one gateway call each);
//! 4. `uncached`: an Axum middleware that calls the gateway with reqwest on every request and
//!    caches nothing, the model the official Wacht SDKs document;
//!
//! and `floor`, not tower-wacht: a layer that only inserts a fixed `Principal` into the
//! request extensions, the cost any extension-based auth layer pays before it does any work;
//! plus a stampede: many concurrent requests with one new token, which must cause exactly one
//! gateway call.
//!
//! JWT access tokens (`LOAD_ONLY=jwt,jwt-cold`; a `JwksIssuer` in the server process, on the
//! gateway's thread, mints the tokens and serves the keys):
//!
//! * `hit-jwt`: `WachtAuthLayer` with JWT verification on (`Router::layer`), every JWT
//!   verified before the first request, so requests are cache hits;
//! * `jwt-every-request`: an Axum middleware that verifies the JWT in full on every request
//!   (`StaticJwtVerifier::verify`: parse, RS256, claims; keys fetched once, nothing cached)
//!   and inserts the `Principal`, as `jwt-authorizer` and most JWT middlewares do;
//! * `baseline-jwt`: no auth layer, the requests carrying the same JWTs (the cost of the
//!   larger header alone);
//! * `jwt-cold`: `WachtAuthLayer` with JWT verification on, a new JWT on every request (the
//!   first-sight cost: parse, RS256 verify, claims, cache insert).
//!
//! Layout: this binary is the orchestrator and the load generator. For every run it starts a
//! fresh copy of itself as the server (`--load-serve <mode> ...`) and talks to it over
//! 127.0.0.1. When `taskset` works and two CPUs are allowed, the server is pinned to one CPU
//! and the generator to the other; the FakeGateway runs in the server process on its own
//! thread, pinned to the generator's CPU (the gateway is remote in production, so its CPU is
//! not charged to the app). The generator is a minimal HTTP/1.1 keep-alive client over N
//! connections on one tokio `current_thread` runtime (one request in flight per connection).
//!
//! Knobs (environment): `LOAD_RATE_LIMITS` (`headers`, default: metered with the rate-limit
//! headers; `metered`: no headers; `off`: not metered; the `limits` set's modes set their
//! own), `LOAD_SECS` (5), `LOAD_WARMUP_SECS` (1), `LOAD_CONNS` (64),
//! `LOAD_REPS` (20 interleaved rounds of baseline, floor, hit and hit-app), `LOAD_SLICE_MS`
//! (1000: length of one measured slice in a round), `LOAD_GENERATOR` (`spin`, default: the
//! interleaved runs use a busy-polling generator thread; `epoll`: tokio tasks that sleep in
//! epoll, see `generator::spin` for the difference), `LOAD_SLOW_REPS` (1 run each of cold and
//! uncached at 0 ms), `LOAD_GATEWAY_LATENCIES_MS` ("5,20": extra uncached runs),
//! `LOAD_STAMPEDE` (1000 requests, 0 skips), `LOAD_STAMPEDE_LATENCY_MS` (5),
//! `LOAD_COLD_TOKENS` (default: sized from the uncached run), `LOAD_JWT_COLD_TOKENS` (150000
//! JWTs minted for each `jwt-cold` run, at about a millisecond of CPU each; the run ends early
//! when they run out), `LOAD_PIN` (1; 0 disables
//! taskset), `LOAD_SERVER_CPU` / `LOAD_CLIENT_CPU` (first two allowed CPUs),
//! `LOAD_GATEWAY_CPU` (`client`, default, or `server`), `LOAD_BASELINE_TOKEN` (1: the baseline
//! requests carry the same `Authorization` header as the others), `LOAD_MAX_OTHER_LOAD` (10:
//! a run during which other programs used more than this percentage of the server's CPU is
//! discarded and repeated, as is a baseline or hit run that kept the server's CPU less than
//! 97% busy; the same threshold on either CPU, sampled for 0.4 s, holds each run back until
//! other programs quiet down), `LOAD_QUIET_WAIT` (30: longest such wait, in
//! seconds), `LOAD_RETRIES` (4 repeats in total), `LOAD_ONLY` (comma list of `pairs`, `slow`,
//! `latency`, `stampede`, `limits` (interleaved: baseline, hit-unmetered, hit-metered, hit:
//! what rate-limit metering and its headers cost), `jwt` (interleaved: baseline, baseline-jwt,
//! hit, hit-jwt, jwt-every-request), `jwt-cold` (separate runs of hit-jwt and jwt-cold);
//! default all).
//!
//! Baseline, the hit modes and the JWT modes but `jwt-cold` are measured interleaved, in three
//! sets (`pairs`, `limits` and `jwt`), one server per mode stays up with
//! its connections open, and every round drives each server alone for one slice, in an order
//! that reverses every round. Each round gives a ratio to the baseline measured seconds
//! earlier or later; the reported ratio is the median over rounds (see `Bench::interleaved`).
//! The other modes run one at a time for `LOAD_SECS`.
//!
//! Nothing here asserts on timing; it prints what it measured.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, Instant};

use bench::{Bench, RunResult};
use cpu::plan_pinning;
use interleaved::Set;
use report::{JwtResults, LimitsResults, loadavg, machine_info, pairs_of, print_run, report};

mod bench;
mod cpu;
mod generator;
mod interleaved;
mod process;
mod report;
mod server;
mod stampede;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// First argument of the server child process.
const SERVE_ARG: &str = "--load-serve";
/// Route served in every mode.
const PATH: &str = "/whoami";
/// OAuth client id of every benchmark token (35 characters, like Wacht's).
const CLIENT_ID: &str = "oc_loadBenchClient00000000000000001";
/// What the handler reports without a principal: same length as [`CLIENT_ID`], so every mode
/// sends an identical response size.
const ANONYMOUS_ID: &str = "anonymous________________________01";
/// Digits in a generated token: `oat_` + kind letter + 42 digits = 47 bytes, the length of a
/// Wacht access token.
const TOKEN_DIGITS: usize = 42;
/// The child exits on its own after this long, whatever happens to the parent.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(600);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == SERVE_ARG) {
        if let Err(err) = server::main(&args[pos + 1..]) {
            eprintln!("load server: {err}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: stay out of test runs.
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("LOAD_FORCE").is_none() {
        println!("load benchmark skipped: run it with `cargo bench --bench load --features test-util`");
        return;
    }
    if let Err(err) = orchestrate() {
        eprintln!("load benchmark failed: {err}");
        std::process::exit(1);
    }
}

/// The four app modes, the JWT modes, plus the stampede (the `hit` app with one unverified
/// token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Baseline,
    Hit,
    HitApp,
    /// `hit` with metering off (`disable_metering_unsafe`), in the `limits` set.
    HitUnmetered,
    /// `hit` metered, without the rate-limit headers, in the `limits` set.
    HitMetered,
    Floor,
    Cold,
    Uncached,
    Stampede,
    BaselineJwt,
    HitJwt,
    JwtEveryRequest,
    JwtCold,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Hit => "hit",
            Mode::HitApp => "hit-app",
            Mode::HitUnmetered => "hit-unmetered",
            Mode::HitMetered => "hit-metered",
            Mode::Floor => "floor",
            Mode::Cold => "cold",
            Mode::Uncached => "uncached",
            Mode::Stampede => "stampede",
            Mode::BaselineJwt => "baseline-jwt",
            Mode::HitJwt => "hit-jwt",
            Mode::JwtEveryRequest => "jwt-every-request",
            Mode::JwtCold => "jwt-cold",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [
            Mode::Baseline,
            Mode::Hit,
            Mode::HitApp,
            Mode::HitUnmetered,
            Mode::HitMetered,
            Mode::Floor,
            Mode::Cold,
            Mode::Uncached,
            Mode::Stampede,
            Mode::BaselineJwt,
            Mode::HitJwt,
            Mode::JwtEveryRequest,
            Mode::JwtCold,
        ]
        .into_iter()
        .find(|m| m.arg() == s)
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Baseline => "1. baseline: no auth layer",
            Mode::Hit => "2. tower-wacht, cache hit (`Router::layer`)",
            Mode::HitApp => "2. tower-wacht, cache hit (layer around the whole app)",
            Mode::HitUnmetered => "2. tower-wacht, cache hit (`Router::layer`), not metered",
            Mode::HitMetered => "2. tower-wacht, cache hit (`Router::layer`), metered, no rate-limit headers",
            Mode::Floor => "floor: a layer that only inserts a fixed `Principal` (around the whole app)",
            Mode::Cold => "3. tower-wacht, cold (new token per request)",
            Mode::Uncached => "4. uncached gateway call per request (SDK model)",
            Mode::Stampede => "stampede",
            Mode::BaselineJwt => "1. baseline: no auth layer, requests carrying a JWT",
            Mode::HitJwt => "2. tower-wacht, JWT cache hit (`Router::layer`)",
            Mode::JwtEveryRequest => "5. JWT verified on every request (`StaticJwtVerifier` middleware, no cache)",
            Mode::JwtCold => "3. tower-wacht, JWT first sight (new JWT per request)",
        }
    }

    /// The requests carry JWTs, minted by the server's `JwksIssuer`.
    fn jwt(self) -> bool {
        matches!(
            self,
            Mode::BaselineJwt | Mode::HitJwt | Mode::JwtEveryRequest | Mode::JwtCold
        )
    }
}

/// The benchmark's tokens, derived from (kind, index) so that the server (which registers
/// them with the gateway) and the generator (which sends them) agree without talking.
fn bench_token(kind: char, index: u64) -> String {
    format!("oat_{kind}{index:0width$}", width = TOKEN_DIGITS)
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a non-negative integer").into()),
        _ => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// Orchestrator: knobs, the order of the runs, retries
// ---------------------------------------------------------------------------------------------

/// A pinned baseline or hit run keeps the server's CPU at least this busy; less means
/// the generator (or something else) was the limit.
const MIN_SATURATED_UTIL: f64 = 0.97;

struct Knobs {
    secs: u64,
    warmup_secs: u64,
    conns: u64,
    reps: u64,
    slice_ms: u64,
    /// Interleaved runs: busy-polling generator (`LOAD_GENERATOR=spin`, default) or
    /// epoll-driven tokio tasks (`epoll`).
    spin: bool,
    slow_reps: u64,
    latencies_ms: Vec<u64>,
    stampede: u64,
    stampede_latency_ms: u64,
    cold_tokens: Option<u64>,
    jwt_cold_tokens: u64,
    baseline_token: bool,
    gateway_on_server_cpu: bool,
    /// A run is "disturbed" when other programs used more than this fraction of the
    /// server's CPU during it.
    max_other_load: f64,
    /// Disturbed runs (or pairs) repeated at most this many times in total.
    retries: u64,
    /// Longest wait before a run for other programs to leave the CPUs idle.
    quiet_wait_secs: u64,
    /// Sections to run (`pairs`, `slow`, `latency`, `stampede`, `limits`, `jwt`, `jwt-cold`); `None`:
    /// all.
    only: Option<Vec<String>>,
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let latencies_ms = match std::env::var("LOAD_GATEWAY_LATENCIES_MS") {
            Ok(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("LOAD_GATEWAY_LATENCIES_MS={v:?}: expected numbers like 5,20"))?,
            Err(_) => vec![5, 20],
        };
        let gateway_cpu = std::env::var("LOAD_GATEWAY_CPU").unwrap_or_else(|_| "client".into());
        let gateway_on_server_cpu = match gateway_cpu.as_str() {
            "client" => false,
            "server" => true,
            other => return Err(format!("LOAD_GATEWAY_CPU={other:?}: expected client or server").into()),
        };
        let spin = match std::env::var("LOAD_GENERATOR").as_deref() {
            Ok("spin") | Err(_) => true,
            Ok("epoll") => false,
            Ok(other) => return Err(format!("LOAD_GENERATOR={other:?}: expected spin or epoll").into()),
        };
        let knobs = Knobs {
            spin,
            secs: env_u64("LOAD_SECS", 5)?.max(1),
            warmup_secs: env_u64("LOAD_WARMUP_SECS", 1)?,
            conns: env_u64("LOAD_CONNS", 64)?.max(1),
            reps: env_u64("LOAD_REPS", 20)?.max(1),
            slice_ms: env_u64("LOAD_SLICE_MS", 1000)?.max(100),
            slow_reps: env_u64("LOAD_SLOW_REPS", 1)?.max(1),
            latencies_ms,
            stampede: env_u64("LOAD_STAMPEDE", 1000)?,
            stampede_latency_ms: env_u64("LOAD_STAMPEDE_LATENCY_MS", 5)?,
            cold_tokens: match std::env::var("LOAD_COLD_TOKENS") {
                Ok(_) => Some(env_u64("LOAD_COLD_TOKENS", 0)?),
                Err(_) => None,
            },
            jwt_cold_tokens: env_u64("LOAD_JWT_COLD_TOKENS", 150_000)?.max(1),
            baseline_token: env_u64("LOAD_BASELINE_TOKEN", 1)? != 0,
            gateway_on_server_cpu,
            max_other_load: env_u64("LOAD_MAX_OTHER_LOAD", 10)? as f64 / 100.0,
            retries: env_u64("LOAD_RETRIES", 4)?,
            quiet_wait_secs: env_u64("LOAD_QUIET_WAIT", 30)?,
            only: std::env::var("LOAD_ONLY").ok().map(|v| {
                v.split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()
            }),
        };
        Ok(knobs)
    }
}

/// Runs one configuration; a run disturbed by other programs (see `CpuUse::foreign`)
/// is marked discarded and repeated while the retry budget lasts.
struct Session {
    bench: Bench,
    results: Vec<RunResult>,
    retries_left: u64,
}

impl Session {
    /// Other programs took more than the threshold of a CPU, or (baseline and hit, which
    /// must saturate the server) the server was not kept busy.
    fn disturbed(&self, r: &RunResult) -> bool {
        let starved = matches!(
            r.mode,
            Mode::Baseline | Mode::Hit | Mode::HitUnmetered | Mode::HitMetered | Mode::HitJwt
        ) && self.bench.pin.server_cpu.is_some()
            && r.used.server_util.is_some_and(|u| u < MIN_SATURATED_UTIL);
        starved || r.used.other_load().is_some_and(|f| f > self.bench.knobs.max_other_load)
    }

    /// One interleaved set: its runs printed and kept; its rounds (requests/s of every mode
    /// in each undisturbed round) and how many rounds were disturbed.
    fn interleaved(&mut self, set: Set, modes: &[Mode], reps: u64) -> Result<(Vec<BTreeMap<Mode, f64>>, usize)> {
        let il = self.bench.interleaved(set, modes, reps)?;
        for r in il.results {
            print_run(&r);
            self.results.push(r);
        }
        Ok((il.rounds, il.disturbed_rounds))
    }

    fn run(&mut self, mode: Mode, latency_ms: u64, cold_tokens: u64) -> Result<usize> {
        loop {
            let mut r = self.bench.run(mode, latency_ms, cold_tokens)?;
            print_run(&r);
            if self.disturbed(&r) && self.retries_left > 0 {
                self.retries_left -= 1;
                r.discarded = true;
                self.results.push(r);
                eprintln!("  (disturbed by other programs: discarded, repeating)");
                continue;
            }
            self.results.push(r);
            return Ok(self.results.len() - 1);
        }
    }
}

/// The orchestrator: every section of the benchmark in turn (each run in its own server
/// process), then the report on stdout.
fn orchestrate() -> Result<()> {
    let knobs = Knobs::from_env()?;
    // Before pinning, which would narrow what `available_parallelism` sees.
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pin = plan_pinning()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    println!("# tower-wacht loopback load benchmark\n");
    for line in machine_info(&pin, &knobs, nproc) {
        println!("{line}");
    }
    println!();
    let retries_left = knobs.retries;
    let mut s = Session {
        bench: Bench { knobs, pin, runtime },
        results: Vec::new(),
        retries_left,
    };

    eprintln!("runs (progress; the tables follow on stdout):");
    let (reps, slow_reps, latencies, only) = {
        let k = &s.bench.knobs;
        (k.reps, k.slow_reps, k.latencies_ms.clone(), k.only.clone())
    };
    let wants = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == section));
    // 1 and both placements of 2, interleaved in short slices.
    let mut pairs = Vec::new();
    let mut app_pairs = Vec::new();
    let mut floor_pairs = Vec::new();
    let mut disturbed_rounds = 0;
    if wants("pairs") {
        let (rounds, disturbed) = s.interleaved(
            Set::Pairs,
            &[Mode::Baseline, Mode::Floor, Mode::Hit, Mode::HitApp],
            reps,
        )?;
        pairs = pairs_of(&rounds, Mode::Baseline, Mode::Hit);
        app_pairs = pairs_of(&rounds, Mode::Baseline, Mode::HitApp);
        floor_pairs = pairs_of(&rounds, Mode::Baseline, Mode::Floor);
        disturbed_rounds = disturbed;
    }
    // What rate-limit metering costs through HTTP: the hit not metered, metered, and with
    // the headers (the default), interleaved with the baseline.
    let mut limits = LimitsResults::default();
    if wants("limits") {
        (limits.rounds, limits.disturbed_rounds) = s.interleaved(
            Set::Limits,
            &[Mode::Baseline, Mode::HitUnmetered, Mode::HitMetered, Mode::Hit],
            reps,
        )?;
    }
    // 4 then 3 at 0 ms; the uncached rate sizes the cold token set.
    let mut uncached_rps = Vec::new();
    let mut cold_rps = Vec::new();
    let mut slow_hit_rps = Vec::new();
    if wants("slow") {
        for _ in 0..slow_reps {
            // A hit run measured like the uncached and cold ones (own process, tokio
            // generator), for 2/4.
            let i = s.run(Mode::Hit, 0, 0)?;
            slow_hit_rps.push(s.results[i].rps);
            let i = s.run(Mode::Uncached, 0, 0)?;
            uncached_rps.push(s.results[i].rps);
            let k = &s.bench.knobs;
            let cold_tokens = k.cold_tokens.unwrap_or_else(|| {
                let max = uncached_rps.iter().copied().fold(0.0, f64::max);
                let per_run = (max * 1.6 * (k.secs + k.warmup_secs) as f64) as u64;
                per_run.clamp(50_000, 2_000_000)
            });
            let i = s.run(Mode::Cold, 0, cold_tokens)?;
            cold_rps.push(s.results[i].rps);
        }
    }
    let mut uncached_slow: Vec<(u64, f64)> = Vec::new();
    if wants("latency") {
        for &ms in &latencies {
            let i = s.run(Mode::Uncached, ms, 0)?;
            uncached_slow.push((ms, s.results[i].rps));
        }
    }
    let bursts = if wants("stampede") && s.bench.knobs.stampede > 0 {
        s.bench.bursts()?
    } else {
        Vec::new()
    };
    // JWT access tokens: the cache hit, no auth and verify-on-every-request, interleaved;
    // then first sight (a new JWT per request) against a hit run measured the same way.
    let mut jwt = JwtResults::default();
    if wants("jwt") {
        (jwt.rounds, jwt.disturbed_rounds) = s.interleaved(
            Set::Jwt,
            &[
                Mode::Baseline,
                Mode::BaselineJwt,
                Mode::Hit,
                Mode::HitJwt,
                Mode::JwtEveryRequest,
            ],
            reps,
        )?;
    }
    if wants("jwt-cold") {
        for _ in 0..slow_reps {
            jwt.hit_runs.push(s.run(Mode::HitJwt, 0, 0)?);
            let tokens = s.bench.knobs.jwt_cold_tokens;
            jwt.cold_runs.push(s.run(Mode::JwtCold, 0, tokens)?);
        }
    }
    report(
        &s,
        &pairs,
        &app_pairs,
        &floor_pairs,
        disturbed_rounds,
        &slow_hit_rps,
        &uncached_rps,
        &cold_rps,
        &uncached_slow,
        &bursts,
        &limits,
        &jwt,
    );
    println!(
        "Total time: {:.0} s; 1-minute load average at the end: {}.",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(())
}
