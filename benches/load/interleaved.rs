//! The interleaved method: one server per mode stays up, and every round drives each alone for
//! one slice (see [`Bench::interleaved`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::bench::{Bench, RunResult, conn_jwt, percentile};
use crate::cpu::{CpuUse, cpu_stat, cpu_use, task_cpu_ns, wait_for_quiet};
use crate::generator::{self, MEASURE, STOP};
use crate::process::ServerProc;
use crate::report::median;
use crate::{MIN_SATURATED_UTIL, Mode, Result, bench_token};

/// Which set of servers an interleaved run drove (each set is one run, with its own rounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Set {
    /// Baseline, floor and the two placements of the opaque-token cache hit.
    Pairs,
    /// Baseline with opaque tokens and with JWTs, the opaque and the JWT cache hit, and
    /// JWT verification on every request.
    Jwt,
    /// Baseline and the `Router::layer` cache hit not metered, metered, and metered with
    /// the rate-limit headers (the default).
    Limits,
}

impl Set {
    pub(super) fn name(self) -> &'static str {
        match self {
            Set::Pairs => "pairs",
            Set::Jwt => "jwt",
            Set::Limits => "limits",
        }
    }
}

/// One slice of an interleaved run: one server driven alone for `LOAD_SLICE_MS`.
struct Slice {
    secs: f64,
    ok: u64,
    failed: u64,
    used: CpuUse,
}

/// Result of [`Bench::interleaved`].
pub(super) struct Interleaved {
    /// One row per mode, over all its slices.
    pub results: Vec<RunResult>,
    /// Requests/s of every mode in each round that no other program disturbed.
    pub rounds: Vec<BTreeMap<Mode, f64>>,
    /// Rounds left out because other programs took a CPU or the server was not saturated.
    pub disturbed_rounds: usize,
}

impl Bench {
    /// Starts one server per mode and keeps all of them (and their connections) up, then
    /// drives them in turn, one slice each per round, the order reversed every round
    /// (A B C, C B A, ...). Paused connections stay open and idle, so a slice measures
    /// one server alone, and every mode is measured seconds apart from the others, under
    /// the same machine conditions: this VM's speed drifts by ±10% over tens of seconds,
    /// which separate multi-second runs cannot tell apart from the effect being measured.
    pub(super) fn interleaved(&self, set: Set, modes: &[Mode], rounds: u64) -> Result<Interleaved> {
        use generator::{Gate, PAUSE, WARMUP};
        let k = &self.knobs;
        wait_for_quiet(k, &self.pin);
        let mut servers = Vec::new();
        for &mode in modes {
            servers.push(ServerProc::start(mode, 0, k.conns, 0, &self.pin, self.gateway_cpu())?);
        }
        let mut calls_before = Vec::new();
        for server in &mut servers {
            calls_before.push(server.gateway_calls()?);
        }
        let gates: Vec<Arc<Gate>> = modes.iter().map(|_| Arc::new(Gate::new())).collect();
        let slice_len = Duration::from_millis(k.slice_ms);
        // Driven but not counted at the start of every slice: connections wake up and the
        // previous server's last requests drain.
        let ramp = Duration::from_millis(100);
        let mut targets = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            for c in 0..k.conns {
                let token = match modes[i] {
                    Mode::Baseline if !k.baseline_token => None,
                    mode if mode.jwt() => Some(conn_jwt(&server.tokens, c)?),
                    _ => Some(bench_token('h', c)),
                };
                targets.push((i, server.addr, generator::request(server.addr, token.as_deref()).bytes));
            }
        }
        // The generator thread inherits this thread's CPU (the generator's).
        let spinner = {
            let gates = gates.clone();
            let spin = k.spin;
            std::thread::Builder::new().name("load-gen".into()).spawn(move || {
                if spin {
                    return generator::spin(targets, &gates);
                }
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for (i, addr, request) in targets {
                        let gate = Arc::clone(&gates[i]);
                        tasks.spawn(async move { (i, generator::gated_connection(addr, request, gate).await) });
                    }
                    let mut latencies: Vec<Vec<u32>> = gates.iter().map(|_| Vec::new()).collect();
                    while let Some(joined) = tasks.join_next().await {
                        let (i, l) = joined.map_err(std::io::Error::other)?;
                        latencies[i].extend_from_slice(&l?);
                    }
                    Ok(latencies)
                })
            })?
        };
        for gate in &gates {
            gate.set(WARMUP);
            std::thread::sleep(Duration::from_secs(k.warmup_secs));
            gate.set(PAUSE);
        }
        let mut slices: Vec<Vec<Slice>> = modes.iter().map(|_| Vec::new()).collect();
        let mut rounds_rps = Vec::new();
        for round in 0..rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..modes.len()).collect()
            } else {
                (0..modes.len()).rev().collect()
            };
            let mut rps = BTreeMap::new();
            let mut disturbed = false;
            for i in order {
                let gate = &gates[i];
                gate.set(WARMUP);
                std::thread::sleep(ramp);
                let (ok0, failed0) = (gate.ok.load(Ordering::Relaxed), gate.failed.load(Ordering::Relaxed));
                let cpu0 = servers[i].cpu_ns();
                let own0 = task_cpu_ns("self", 0);
                let stat0 = cpu_stat(self.pin.server_cpu);
                let cstat0 = cpu_stat(self.pin.client_cpu);
                gate.set(MEASURE);
                let t0 = Instant::now();
                std::thread::sleep(slice_len);
                gate.set(PAUSE);
                let secs = t0.elapsed().as_secs_f64();
                let cpu1 = servers[i].cpu_ns();
                let own1 = task_cpu_ns("self", 0);
                let stat1 = cpu_stat(self.pin.server_cpu);
                let cstat1 = cpu_stat(self.pin.client_cpu);
                let ok = gate.ok.load(Ordering::Relaxed) - ok0;
                let failed = gate.failed.load(Ordering::Relaxed) - failed0;
                let used = cpu_use(
                    secs,
                    ok + failed,
                    cpu0.zip(cpu1),
                    own0.zip(own1),
                    stat0.zip(stat1),
                    cstat0.zip(cstat1),
                    self.pin.server_cpu.is_some(),
                    k.gateway_on_server_cpu,
                );
                let starved = self.pin.server_cpu.is_some() && used.server_util.is_some_and(|u| u < MIN_SATURATED_UTIL);
                // The spinning generator keeps its own CPU busy: only the server's counts.
                disturbed |= starved || failed > 0 || used.foreign.is_some_and(|f| f > k.max_other_load);
                let slice = Slice { secs, ok, failed, used };
                rps.insert(modes[i], ok as f64 / secs);
                slices[i].push(slice);
            }
            let summary: Vec<String> = rps.iter().map(|(m, r)| format!("{} {r:.0}", m.arg())).collect();
            eprintln!(
                "  round {:>2}: {} req/s{}",
                round + 1,
                summary.join(", "),
                if disturbed { "  (disturbed: left out)" } else { "" }
            );
            rounds_rps.push((rps, disturbed));
        }
        for gate in &gates {
            gate.set(STOP);
        }
        let (mut latencies, conn_errors) = match spinner.join() {
            Ok(Ok(l)) => (l, Vec::new()),
            Ok(Err(e)) => (modes.iter().map(|_| Vec::new()).collect(), vec![e.to_string()]),
            Err(_) => (
                modes.iter().map(|_| Vec::new()).collect(),
                vec!["generator thread panicked".to_owned()],
            ),
        };
        let mut results = Vec::new();
        for (i, &mode) in modes.iter().enumerate() {
            let calls = servers[i].gateway_calls()?.saturating_sub(calls_before[i]);
            let mine = &slices[i];
            let med = |f: &dyn Fn(&Slice) -> Option<f64>| {
                let mut v: Vec<f64> = mine.iter().filter_map(f).collect();
                (!v.is_empty()).then(|| median(&mut v))
            };
            let mut lat = std::mem::take(&mut latencies[i]);
            lat.sort_unstable();
            let failed: u64 = mine.iter().map(|s| s.failed).sum();
            let mut note = vec![format!("{} slices of {} ms", mine.len(), k.slice_ms)];
            if failed > 0 {
                note.push(format!("{failed} non-200 responses"));
            }
            if !conn_errors.is_empty() {
                note.push(format!("{} connection errors: {}", conn_errors.len(), conn_errors[0]));
            }
            results.push(RunResult {
                mode,
                interleaved: Some(set),
                latency_ms: 0,
                sent: mine.iter().map(|s| s.ok + s.failed).sum(),
                discarded: false,
                secs: mine.iter().map(|s| s.secs).sum(),
                rps: med(&|s| Some((s.ok as f64) / s.secs)).unwrap_or(f64::NAN),
                p50: percentile(&lat, 0.50),
                p99: percentile(&lat, 0.99),
                used: CpuUse {
                    server_util: med(&|s| s.used.server_util),
                    gateway_util: med(&|s| s.used.gateway_util),
                    server_us_per_req: med(&|s| s.used.server_us_per_req),
                    steal: med(&|s| s.used.steal),
                    foreign: med(&|s| s.used.foreign),
                    foreign_client: med(&|s| s.used.foreign_client),
                },
                gateway_calls: calls,
                note: note.join("; "),
            });
        }
        let disturbed_rounds = rounds_rps.iter().filter(|(_, d)| *d).count();
        Ok(Interleaved {
            results,
            rounds: rounds_rps.into_iter().filter(|(_, d)| !d).map(|(r, _)| r).collect(),
            disturbed_rounds,
        })
    }
}
