//! What every measurement needs ([`Bench`]), its result ([`RunResult`]), and a separate run: one
//! server for `LOAD_SECS`, driven by tokio connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cpu::{CpuUse, Pinning, cpu_stat, cpu_use, task_cpu_ns, wait_for_quiet};
use crate::generator::{self, MEASURE, STOP, Tokens};
use crate::interleaved::Set;
use crate::process::ServerProc;
use crate::{Knobs, Mode, Result, bench_token};

pub(super) struct RunResult {
    pub mode: Mode,
    /// Measured by [`Bench::interleaved`] (slices, in this set of servers) rather than as a
    /// separate run.
    pub interleaved: Option<Set>,
    pub latency_ms: u64,
    /// Requests completed in the whole run (warm-up included), for calls per request.
    pub sent: u64,
    pub discarded: bool,
    pub secs: f64,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// For an interleaved row: the median of each figure over the mode's slices.
    pub used: CpuUse,
    pub gateway_calls: u64,
    pub note: String,
}

pub(super) fn percentile(sorted: &[u32], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Duration::from_nanos(u64::from(sorted[rank - 1]))
}

/// The JWT of connection `c`, from the ones its server minted.
pub(super) fn conn_jwt(tokens: &[String], c: u64) -> Result<String> {
    usize::try_from(c)
        .ok()
        .and_then(|c| tokens.get(c))
        .cloned()
        .ok_or_else(|| "the server minted fewer JWTs than there are connections".into())
}

pub(super) struct Bench {
    pub knobs: Knobs,
    pub pin: Pinning,
    pub runtime: tokio::runtime::Runtime,
}

impl Bench {
    pub(super) fn gateway_cpu(&self) -> Option<usize> {
        if self.knobs.gateway_on_server_cpu {
            self.pin.server_cpu
        } else {
            self.pin.client_cpu
        }
    }

    pub(super) fn run(&self, mode: Mode, latency_ms: u64, cold_tokens: u64) -> Result<RunResult> {
        let k = &self.knobs;
        wait_for_quiet(k, &self.pin);
        let mut server = ServerProc::start(mode, latency_ms, k.conns, cold_tokens, &self.pin, self.gateway_cpu())?;
        let addr = server.addr;
        let phase = Arc::new(AtomicU8::new(generator::WARMUP));
        let exhausted = Arc::new(AtomicBool::new(false));
        let fresh = Tokens::Fresh {
            next: Arc::new(AtomicU64::new(0)),
            limit: cold_tokens,
            exhausted: Arc::clone(&exhausted),
        };
        // A JWT mode's tokens come from its server: one per connection, or the cold list.
        let jwts = Arc::new(std::mem::take(&mut server.tokens));
        let jwt_list = Tokens::List {
            tokens: Arc::clone(&jwts),
            next: Arc::new(AtomicU64::new(0)),
            exhausted: Arc::clone(&exhausted),
        };
        let mut conns = Vec::new();
        for c in 0..k.conns {
            conns.push(match mode {
                Mode::Baseline if !k.baseline_token => (None, Tokens::Fixed),
                Mode::Cold => (Some(bench_token('c', 0)), fresh.clone()),
                Mode::JwtCold => (None, jwt_list.clone()),
                _ if mode.jwt() => (Some(conn_jwt(&jwts, c)?), Tokens::Fixed),
                _ => (Some(bench_token('h', c)), Tokens::Fixed),
            });
        }
        let calls_before = server.gateway_calls()?;
        let outcome = self.runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (token, tokens) in conns {
                let template = generator::request(addr, token.as_deref());
                tasks.spawn(generator::connection(addr, template, tokens, Arc::clone(&phase)));
            }
            tokio::time::sleep(Duration::from_secs(k.warmup_secs)).await;
            let cpu0 = server.cpu_ns();
            let own0 = task_cpu_ns("self", 0);
            let stat0 = cpu_stat(self.pin.server_cpu);
            let cstat0 = cpu_stat(self.pin.client_cpu);
            phase.store(MEASURE, Ordering::Relaxed);
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs(k.secs);
            while Instant::now() < deadline && !exhausted.load(Ordering::Relaxed) && !tasks.is_empty() {
                tokio::time::sleep(Duration::from_millis(50).min(deadline - Instant::now())).await;
            }
            phase.store(STOP, Ordering::Relaxed);
            let secs = t0.elapsed().as_secs_f64();
            let cpu1 = server.cpu_ns();
            let own1 = task_cpu_ns("self", 0);
            let stat1 = cpu_stat(self.pin.server_cpu);
            let cstat1 = cpu_stat(self.pin.client_cpu);
            let mut all = Vec::new();
            let (mut ok, mut failed, mut warm_failed, mut sent, mut conn_errors) = (0, 0, 0, 0, Vec::new());
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(stats)) => {
                        ok += stats.ok;
                        failed += stats.failed;
                        warm_failed += stats.warmup_failed;
                        sent += stats.sent;
                        all.extend_from_slice(&stats.latencies);
                    }
                    Ok(Err(e)) => conn_errors.push(e.to_string()),
                    Err(e) => conn_errors.push(e.to_string()),
                }
            }
            (
                secs,
                cpu0.zip(cpu1),
                own0.zip(own1),
                stat0.zip(stat1),
                cstat0.zip(cstat1),
                all,
                ok,
                failed,
                warm_failed,
                sent,
                conn_errors,
            )
        });
        let (secs, cpu, own, stat, cstat, mut latencies, ok, failed, warm_failed, sent, conn_errors) = outcome;
        let calls = server.gateway_calls()?.saturating_sub(calls_before);
        drop(server);
        latencies.sort_unstable();
        let requests = ok + failed;
        let mut note = Vec::new();
        if failed + warm_failed > 0 {
            note.push(format!("{} non-200 responses", failed + warm_failed));
        }
        if !conn_errors.is_empty() {
            note.push(format!("{} connection errors: {}", conn_errors.len(), conn_errors[0]));
        }
        if exhausted.load(Ordering::Relaxed) {
            note.push(format!("cold tokens ran out after {secs:.1} s"));
        }
        let used = cpu_use(
            secs,
            requests,
            cpu,
            own,
            stat,
            cstat,
            self.pin.server_cpu.is_some(),
            self.knobs.gateway_on_server_cpu,
        );
        Ok(RunResult {
            mode,
            interleaved: None,
            latency_ms,
            sent,
            discarded: false,
            secs,
            rps: ok as f64 / secs,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            used,
            gateway_calls: calls,
            note: note.join("; "),
        })
    }
}
