//! The stampede: one burst of concurrent requests, against baseline, against cached tokens and
//! with one new token.

use std::time::Duration;

use crate::bench::{Bench, percentile};
use crate::cpu::wait_for_quiet;
use crate::generator;
use crate::process::ServerProc;
use crate::report::fmt_ms;
use crate::{Mode, Result, bench_token};

/// Soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

pub(super) struct BurstResult {
    pub label: &'static str,
    pub mode: Mode,
    pub n: usize,
    pub ok: usize,
    pub calls: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub makespan: Duration,
    /// First send to last send: how "at once" the generator managed to fire.
    pub send_spread: Duration,
}

impl Bench {
    /// The same burst against baseline, against cached tokens, and with one new token.
    pub(super) fn bursts(&self) -> Result<Vec<BurstResult>> {
        let k = &self.knobs;
        let mut n = usize::try_from(k.stampede)?;
        // One descriptor per connection on each side, plus some for everything else.
        if let Some(limit) = open_files_limit()
            && limit < n as u64 + 64
        {
            let capped = usize::try_from(limit.saturating_sub(64))?.max(1);
            eprintln!(
                "  (open-file limit {limit} is too low for {n} connections: the burst is capped at {capped}; raise it with `ulimit -n`)"
            );
            n = capped;
        }
        let mut out = Vec::new();
        for (label, mode, latency, token) in [
            ("baseline (no auth)", Mode::Baseline, 0, bench_token('h', 0)),
            ("tower-wacht, token already cached", Mode::Hit, 0, bench_token('h', 0)),
            (
                "**tower-wacht, one new token (stampede)**",
                Mode::Stampede,
                k.stampede_latency_ms,
                bench_token('s', 0),
            ),
        ] {
            wait_for_quiet(k, &self.pin);
            let hit_tokens = if mode == Mode::Hit { 1 } else { 0 };
            let mut server = ServerProc::start(mode, latency, hit_tokens, 0, &self.pin, self.gateway_cpu())?;
            let before = server.gateway_calls()?;
            let samples = self.runtime.block_on(generator::burst(server.addr, n, &token))?;
            let calls = server.gateway_calls()?.saturating_sub(before);
            drop(server);
            let mut lat: Vec<u32> = samples
                .iter()
                .map(|s| u32::try_from((s.end - s.start).as_nanos()).unwrap_or(u32::MAX))
                .collect();
            lat.sort_unstable();
            let first = samples.iter().map(|s| s.start).min();
            let last = samples.iter().map(|s| s.end).max();
            let last_send = samples.iter().map(|s| s.start).max();
            let b = BurstResult {
                send_spread: first.zip(last_send).map_or(Duration::ZERO, |(a, b)| b - a),
                label,
                mode,
                n,
                ok: samples.iter().filter(|s| s.status == 200).count(),
                calls,
                p50: percentile(&lat, 0.50),
                p99: percentile(&lat, 0.99),
                max: percentile(&lat, 1.0),
                makespan: first.zip(last).map_or(Duration::ZERO, |(a, b)| b - a),
            };
            eprintln!(
                "  burst {:<9} gw {:>2} ms: {} requests, {} × 200, gateway calls {}, p50 {} ms, p99 {} ms",
                mode.arg(),
                latency,
                b.n,
                b.ok,
                b.calls,
                fmt_ms(b.p50),
                fmt_ms(b.p99)
            );
            out.push(b);
        }
        Ok(out)
    }
}
