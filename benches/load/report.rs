//! Output: the progress lines on stderr, and the machine description and Markdown tables on
//! stdout.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::bench::RunResult;
use crate::cpu::Pinning;
use crate::interleaved::Set;
use crate::stampede::BurstResult;
use crate::{Knobs, Mode, Session};

fn other_load(r: &RunResult) -> String {
    match (r.used.foreign, r.used.foreign_client) {
        (None, None) => "n/a".to_owned(),
        (a, b) => format!(
            "{} / {}",
            fmt_opt(a, |s| format!("{:.0}%", s * 100.0)),
            fmt_opt(b, |s| format!("{:.0}%", s * 100.0))
        ),
    }
}

pub(super) fn fmt_ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".to_owned(), f)
}

pub(super) fn print_run(r: &RunResult) {
    eprintln!(
        "  {:<9} gw {:>2} ms: {:>9.0} req/s  p50 {:>7} ms  p99 {:>7} ms  server CPU {:>5} ({} µs/req)  gateway thread {:>5}  steal {:>5}  other load {:>9}  gateway calls {}{}",
        r.mode.arg(),
        r.latency_ms,
        r.rps,
        fmt_ms(r.p50),
        fmt_ms(r.p99),
        fmt_opt(r.used.server_util, |u| format!("{:.0}%", u * 100.0)),
        fmt_opt(r.used.server_us_per_req, |u| format!("{u:.1}")),
        fmt_opt(r.used.gateway_util, |u| format!("{:.0}%", u * 100.0)),
        fmt_opt(r.used.steal, |s| format!("{:.1}%", s * 100.0)),
        other_load(r),
        r.gateway_calls,
        if r.note.is_empty() {
            String::new()
        } else {
            format!("  [{}]", r.note)
        },
    );
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One row of the ratio table from interleaved rounds: (reference, measured) requests/s per
/// round; the ratio is measured ÷ reference, as a fraction or (`times`) as a multiple.
fn interleaved_ratio(what: &str, pairs: &[(f64, f64)], times: bool, disturbed_rounds: usize, slice_ms: u64) {
    if pairs.is_empty() {
        return;
    }
    let ratios: Vec<f64> = pairs.iter().map(|(b, h)| h / b).collect();
    let (lo, hi) = min_max(&ratios);
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let quartile = |q: f64| sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)];
    let fmt = |r: f64| {
        if times { format!("{r:.1}×") } else { format!("{r:.3}") }
    };
    println!(
        "| {what} | **{}** | {}–{} (middle half {}–{}) | median of {} interleaved rounds of {slice_ms} ms slices ({disturbed_rounds} disturbed rounds left out); per round: {} |",
        fmt(median(&mut ratios.clone())),
        fmt(lo),
        fmt(hi),
        fmt(quartile(0.25)),
        fmt(quartile(0.75)),
        ratios.len(),
        ratios.iter().map(|&r| fmt(r)).collect::<Vec<_>>().join(", ")
    );
}

/// (reference, measured) requests/s of each round that has both modes.
pub(super) fn pairs_of(rounds: &[BTreeMap<Mode, f64>], reference: Mode, measured: Mode) -> Vec<(f64, f64)> {
    rounds
        .iter()
        .filter_map(|m| Some((*m.get(&reference)?, *m.get(&measured)?)))
        .collect()
}

/// What the `limits` set measured.
#[derive(Default)]
pub(super) struct LimitsResults {
    /// Requests/s of every mode of the set in each undisturbed round.
    pub rounds: Vec<BTreeMap<Mode, f64>>,
    pub disturbed_rounds: usize,
}

/// What rate-limit metering costs through HTTP: each setting against the baseline and
/// against the one before it, within the same rounds.
fn limits_report(s: &Session, limits: &LimitsResults) {
    if limits.rounds.is_empty() {
        return;
    }
    println!("## Rate-limit metering through HTTP (`Router::layer`)\n");
    println!("| ratio | value | range | how |");
    println!("|---|---|---|---|");
    let of = |reference: Mode, measured: Mode| pairs_of(&limits.rounds, reference, measured);
    for (what, reference, measured) in [
        (
            "cache hit, not metered ÷ no auth (hit-unmetered ÷ baseline)",
            Mode::Baseline,
            Mode::HitUnmetered,
        ),
        (
            "cache hit, metered, no headers ÷ no auth (hit-metered ÷ baseline)",
            Mode::Baseline,
            Mode::HitMetered,
        ),
        (
            "cache hit, metered with the headers (the default) ÷ no auth (hit ÷ baseline; target ≥ 0.95)",
            Mode::Baseline,
            Mode::Hit,
        ),
        (
            "metering's share: metered ÷ not metered",
            Mode::HitUnmetered,
            Mode::HitMetered,
        ),
        ("the headers' share: with ÷ without", Mode::HitMetered, Mode::Hit),
    ] {
        interleaved_ratio(
            what,
            &of(reference, measured),
            false,
            limits.disturbed_rounds,
            s.bench.knobs.slice_ms,
        );
    }
    println!();
}

/// What the JWT sections measured.
#[derive(Default)]
pub(super) struct JwtResults {
    /// Requests/s of every mode of the `jwt` set in each undisturbed round.
    pub rounds: Vec<BTreeMap<Mode, f64>>,
    pub disturbed_rounds: usize,
    /// Indices into the session's results: separate `hit-jwt` runs ...
    pub hit_runs: Vec<usize>,
    /// ... and the `jwt-cold` run after each.
    pub cold_runs: Vec<usize>,
}

fn jwt_report(s: &Session, jwt: &JwtResults) {
    if jwt.rounds.is_empty() && jwt.cold_runs.is_empty() {
        return;
    }
    let k = &s.bench.knobs;
    println!("## JWT access tokens\n");
    println!("| ratio | value | range | how |");
    println!("|---|---|---|---|");
    let of = |reference: Mode, measured: Mode| pairs_of(&jwt.rounds, reference, measured);
    for (what, reference, measured, times) in [
        (
            "JWT cache hit ÷ no auth, both requests carrying the JWT (hit-jwt ÷ baseline-jwt; target ≥ 0.95)",
            Mode::BaselineJwt,
            Mode::HitJwt,
            false,
        ),
        (
            "JWT cache hit ÷ no auth with an opaque token (hit-jwt ÷ baseline)",
            Mode::Baseline,
            Mode::HitJwt,
            false,
        ),
        (
            "opaque cache hit ÷ no auth, same set (hit ÷ baseline)",
            Mode::Baseline,
            Mode::Hit,
            false,
        ),
        (
            "JWT cache hit ÷ opaque cache hit (hit-jwt ÷ hit)",
            Mode::Hit,
            Mode::HitJwt,
            false,
        ),
        (
            "no auth, JWT ÷ opaque token in the header (baseline-jwt ÷ baseline)",
            Mode::Baseline,
            Mode::BaselineJwt,
            false,
        ),
        (
            "verify on every request ÷ no auth with the JWT (jwt-every-request ÷ baseline-jwt)",
            Mode::BaselineJwt,
            Mode::JwtEveryRequest,
            false,
        ),
        (
            "JWT cache hit ÷ verify on every request (hit-jwt ÷ jwt-every-request; target ≥ 10×)",
            Mode::JwtEveryRequest,
            Mode::HitJwt,
            true,
        ),
    ] {
        interleaved_ratio(what, &of(reference, measured), times, jwt.disturbed_rounds, k.slice_ms);
    }
    let runs = |indices: &[usize]| -> Vec<&RunResult> { indices.iter().map(|&i| &s.results[i]).collect() };
    let (hits, colds) = (runs(&jwt.hit_runs), runs(&jwt.cold_runs));
    let cpu = |r: &&RunResult| r.used.server_us_per_req;
    let hit_rps = median(&mut hits.iter().map(|r| r.rps).collect::<Vec<_>>());
    let cold_rps = median(&mut colds.iter().map(|r| r.rps).collect::<Vec<_>>());
    let hit_cpu: Vec<f64> = hits.iter().filter_map(cpu).collect();
    let cold_cpu: Vec<f64> = colds.iter().filter_map(cpu).collect();
    if !colds.is_empty() && !hits.is_empty() {
        println!(
            "| JWT first sight ÷ JWT cache hit (jwt-cold ÷ hit-jwt) | {:.2} | | separate runs, tokio generator: jwt-cold {cold_rps:.0} ÷ hit-jwt {hit_rps:.0} req/s |",
            cold_rps / hit_rps
        );
    }
    if !cold_cpu.is_empty() && !hit_cpu.is_empty() {
        let (cold_us, hit_us) = (median(&mut cold_cpu.clone()), median(&mut hit_cpu.clone()));
        println!(
            "| JWT first sight, server CPU per request beyond a cache hit (jwt-cold − hit-jwt) | **{:.1} µs** | | separate runs: {cold_us:.2} − {hit_us:.2} µs/request (parse, RS256 verify, claims, cache insert, single flight) |",
            cold_us - hit_us
        );
    }
    println!();
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    })
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".to_owned())
}

pub(super) fn machine_info(pin: &Pinning, knobs: &Knobs, nproc: usize) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown")
        .to_owned();
    let sha_ni = cpuinfo.lines().any(|l| l.starts_with("flags") && l.contains(" sha_ni"));
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let gateway_where = if knobs.gateway_on_server_cpu {
        "on the server's CPU (LOAD_GATEWAY_CPU=server)"
    } else {
        "on the generator's CPU (LOAD_GATEWAY_CPU=client)"
    };
    vec![
        format!(
            "- CPU: {model} ({nproc} CPUs available, SHA-NI: {})",
            if sha_ni { "yes" } else { "no" }
        ),
        format!("- kernel {}, {rustc}, profile `bench`", kernel.trim()),
        format!(
            "- 1-minute load average before the runs: {} (anything well above 0 means other programs compete for the CPUs)",
            loadavg()
        ),
        format!("- pinning: {}", pin.note),
        format!(
            "- server: 1 tokio worker; FakeGateway in the server process on its own thread, {}",
            if pin.server_cpu.is_some() {
                gateway_where
            } else {
                "unpinned"
            }
        ),
        format!(
            "- load: {} keep-alive HTTP/1.1 connections per server, 1 request in flight each (closed loop), generated in-process on one CPU; interleaved sets (baseline/floor/hit; baseline/JWT hit/JWT on every request): {} interleaved rounds of one {} ms slice each (+100 ms ramp) after {} s warm-up each, generator {}; other modes: {} s warm-up + {} s measured per run, generator on a tokio current_thread runtime",
            knobs.conns,
            knobs.reps,
            knobs.slice_ms,
            knobs.warmup_secs,
            if knobs.spin {
                "busy-polling (LOAD_GENERATOR=spin)"
            } else {
                "on a tokio current_thread runtime (LOAD_GENERATOR=epoll)"
            },
            knobs.warmup_secs,
            knobs.secs
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
pub(super) fn report(
    s: &Session,
    pairs: &[(f64, f64)],
    app_pairs: &[(f64, f64)],
    floor_pairs: &[(f64, f64)],
    disturbed_rounds: usize,
    slow_hit_rps: &[f64],
    uncached_rps: &[f64],
    cold_rps: &[f64],
    uncached_slow: &[(u64, f64)],
    bursts: &[BurstResult],
    limits: &LimitsResults,
    jwt: &JwtResults,
) {
    let k = &s.bench.knobs;
    let kept: Vec<&RunResult> = s.results.iter().filter(|r| !r.discarded).collect();

    println!("## Results\n");
    println!(
        "| mode | measured in | gateway latency | runs | requests/s (median) | p50 ms | p99 ms | server CPU µs/req | gateway calls/request |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut groups: BTreeMap<(bool, Option<Set>, Mode, u64), Vec<&RunResult>> = BTreeMap::new();
    for r in &kept {
        groups
            .entry((r.interleaved.is_none(), r.interleaved, r.mode, r.latency_ms))
            .or_default()
            .push(r);
    }
    for ((_, set, mode, ms), runs) in &groups {
        let mut rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
        let mut p50: Vec<f64> = runs.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect();
        let mut p99: Vec<f64> = runs.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect();
        let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.used.server_us_per_req).collect();
        let sent: u64 = runs.iter().map(|r| r.sent).sum();
        let calls: u64 = runs.iter().map(|r| r.gateway_calls).sum();
        let gw = match mode {
            Mode::Baseline | Mode::Floor | Mode::BaselineJwt | Mode::JwtEveryRequest => "none".to_owned(),
            Mode::Hit | Mode::HitApp | Mode::HitUnmetered | Mode::HitMetered => "only on ttl expiry".to_owned(),
            Mode::HitJwt | Mode::JwtCold => "not called (JWTs verified locally)".to_owned(),
            _ => format!("{ms} ms"),
        };
        println!(
            "| {} | {} | {gw} | {} | {:.0} | {:.3} | {:.3} | {} | {} |",
            mode.label(),
            set.map_or_else(
                || "separate runs".to_owned(),
                |set| format!("interleaved slices (`{}` set)", set.name())
            ),
            runs.len(),
            median(&mut rps),
            median(&mut p50),
            median(&mut p99),
            if cpu.is_empty() {
                "n/a".to_owned()
            } else {
                format!("{:.2}", median(&mut cpu))
            },
            if sent == 0 {
                "n/a".to_owned()
            } else {
                format!("{:.3}", calls as f64 / sent as f64)
            },
        );
    }
    println!();

    let any_ratio = [pairs, app_pairs, floor_pairs].iter().any(|p| !p.is_empty())
        || !slow_hit_rps.is_empty()
        || !uncached_rps.is_empty();
    if any_ratio {
        println!("| ratio | value | range | how |");
        println!("|---|---|---|---|");
    }
    // 2/4 compares runs measured the same way: separate processes, tokio generator.
    let hit_rps = slow_hit_rps.to_vec();
    let hit_median = median(&mut hit_rps.clone());
    let (hit_lo, hit_hi) = min_max(&hit_rps);
    for (what, pairs) in [
        ("2/1 cache hit ÷ baseline, `Router::layer`", pairs),
        ("2/1 cache hit ÷ baseline, layer around the whole app", app_pairs),
        ("floor ÷ baseline (a layer that only inserts a principal)", floor_pairs),
    ] {
        interleaved_ratio(what, pairs, false, disturbed_rounds, k.slice_ms);
    }
    let u0 = median(&mut uncached_rps.to_vec());
    if !hit_rps.is_empty() && !uncached_rps.is_empty() {
        println!(
            "| 2/4 cache hit ÷ uncached, gateway 0 ms | **{:.1}×** | {:.1}–{:.1}× | median hit {hit_median:.0} ÷ uncached {u0:.0} req/s; range over the hit runs |",
            hit_median / u0,
            hit_lo / u0,
            hit_hi / u0
        );
    }
    if !hit_rps.is_empty() {
        for (ms, rps) in uncached_slow {
            println!(
                "| 2/4 cache hit ÷ uncached, gateway +{ms} ms | **{:.0}×** | {:.0}–{:.0}× | uncached {rps:.0} req/s over {} connections (latency-bound: at most {} ÷ {ms} ms = {:.0} req/s) |",
                hit_median / rps,
                hit_lo / rps,
                hit_hi / rps,
                k.conns,
                k.conns,
                k.conns as f64 / (*ms as f64 / 1e3)
            );
        }
    }
    if !cold_rps.is_empty() && !uncached_rps.is_empty() {
        println!(
            "| 3/4 cold ÷ uncached, gateway 0 ms | {:.2} | | every request a miss, against no cache at all |",
            median(&mut cold_rps.to_vec()) / u0
        );
    }
    if any_ratio {
        println!();
    }

    if !bursts.is_empty() {
        println!("## Stampede\n");
        println!(
            "{} requests released together, one per connection, all with the same token. The first two rows are references for the same burst.\n",
            bursts[0].n
        );
        println!(
            "| burst | gateway latency | gateway calls | 200 responses | p50 ms | p99 ms | max ms | sends spread over ms | first send → last response ms |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for b in bursts {
            println!(
                "| {} | {} | **{}** | {}/{} | {} | {} | {} | {} | {} |",
                b.label,
                if b.mode == Mode::Stampede {
                    format!("{} ms", k.stampede_latency_ms)
                } else {
                    "n/a".to_owned()
                },
                b.calls,
                b.ok,
                b.n,
                fmt_ms(b.p50),
                fmt_ms(b.p99),
                fmt_ms(b.max),
                fmt_ms(b.send_spread),
                fmt_ms(b.makespan)
            );
        }
        println!();
    }

    limits_report(s, limits);
    jwt_report(s, jwt);

    println!("## Runs\n");
    println!(
        "| # | mode | gateway ms | measured s | requests/s | p50 ms | p99 ms | server CPU | server µs/req | gateway thread CPU | steal (server CPU) | other programs' load (server / generator CPU) | gateway calls | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in s.results.iter().enumerate() {
        let mut note = r.note.clone();
        if r.discarded {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str("discarded: disturbed");
        }
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            r.mode.arg(),
            r.latency_ms,
            r.secs,
            r.rps,
            fmt_ms(r.p50),
            fmt_ms(r.p99),
            fmt_opt(r.used.server_util, |u| format!("{:.0}%", u * 100.0)),
            fmt_opt(r.used.server_us_per_req, |u| format!("{u:.2}")),
            fmt_opt(r.used.gateway_util, |u| format!("{:.0}%", u * 100.0)),
            fmt_opt(r.used.steal, |s| format!("{:.1}%", s * 100.0)),
            other_load(r),
            r.gateway_calls,
            note
        );
    }
    println!();
    let least_busy = kept
        .iter()
        .filter(|r| {
            matches!(
                r.mode,
                Mode::Baseline | Mode::Hit | Mode::HitUnmetered | Mode::HitMetered | Mode::HitJwt
            )
        })
        .filter_map(|r| r.used.server_util)
        .fold(f64::INFINITY, f64::min);
    if least_busy.is_finite() && least_busy < 0.9 {
        println!(
            "Warning: in some baseline/hit run the server used only {:.0}% of its CPU: the load generator or other programs were the limit there, not the server.\n",
            least_busy * 100.0
        );
    }
    let busiest = kept.iter().filter_map(|r| r.used.other_load()).fold(0.0, f64::max);
    if busiest > k.max_other_load {
        println!(
            "Warning: other programs used up to {:.0}% of a CPU during a kept run (column \"other programs' load\"; the retry budget ran out). Those runs measure the machine, not the library: re-run on a quiet machine.\n",
            busiest * 100.0
        );
    }
}
