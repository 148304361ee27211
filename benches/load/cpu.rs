//! CPUs: where the processes run (pinning), the CPU time they use, and the load other programs
//! put on the same CPUs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Knobs, Result, env_u64};

/// Which CPUs the processes run on, or why they are not pinned.
pub(super) struct Pinning {
    pub server_cpu: Option<usize>,
    pub client_cpu: Option<usize>,
    pub note: String,
}

fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
    else {
        return Vec::new();
    };
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let mut bounds = part.splitn(2, '-').map(|s| s.trim().parse::<usize>());
        match (bounds.next(), bounds.next()) {
            (Some(Ok(a)), Some(Ok(b))) => cpus.extend(a..=b),
            (Some(Ok(a)), None) => cpus.push(a),
            _ => {}
        }
    }
    cpus
}

pub(super) fn plan_pinning() -> Result<Pinning> {
    let unpinned = |note: String| Pinning {
        server_cpu: None,
        client_cpu: None,
        note,
    };
    if env_u64("LOAD_PIN", 1)? == 0 {
        return Ok(unpinned("not pinned (LOAD_PIN=0)".into()));
    }
    let cpus = allowed_cpus();
    let server = match std::env::var("LOAD_SERVER_CPU") {
        Ok(_) => Some(env_u64("LOAD_SERVER_CPU", 0)? as usize),
        Err(_) => cpus.first().copied(),
    };
    let client = match std::env::var("LOAD_CLIENT_CPU") {
        Ok(_) => Some(env_u64("LOAD_CLIENT_CPU", 0)? as usize),
        Err(_) => cpus.get(1).copied(),
    };
    let (Some(server), Some(client)) = (server, client) else {
        return Ok(unpinned(format!(
            "not pinned: fewer than 2 CPUs allowed ({cpus:?}); server and generator share the machine"
        )));
    };
    let pinned_self = Command::new("taskset")
        .args(["-a", "-p", "-c", &client.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match pinned_self {
        Ok(s) if s.success() => Ok(Pinning {
            server_cpu: Some(server),
            client_cpu: Some(client),
            note: format!("server on CPU {server}, load generator on CPU {client} (taskset)"),
        }),
        Ok(s) => Ok(unpinned(format!("not pinned: taskset failed ({s})"))),
        Err(e) => Ok(unpinned(format!("not pinned: taskset not available ({e})"))),
    }
}

/// CPU time (ns) of a process's threads from `/proc/<pid>/task/*/schedstat`:
/// (all threads but `tid`, thread `tid`).
pub(super) fn task_cpu_ns(pid: &str, tid: u32) -> Option<(u64, u64)> {
    let mut others = 0;
    let mut one = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread may end between listing and reading: skip it.
        let Some(t) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let Some(ns) = std::fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        else {
            continue;
        };
        if t == tid {
            one += ns;
        } else {
            others += ns;
        }
    }
    Some((others, one))
}

/// Busy fraction of each pinned CPU over `window` (`None` when not pinned).
fn cpu_busy(pin: &Pinning, window: Duration) -> Option<(f64, f64)> {
    let (server, client) = (pin.server_cpu?, pin.client_cpu?);
    let a = (cpu_stat(Some(server))?, cpu_stat(Some(client))?);
    std::thread::sleep(window);
    let b = (cpu_stat(Some(server))?, cpu_stat(Some(client))?);
    let frac = |(_, b0, t0): CpuStat, (_, b1, t1): CpuStat| {
        if t1 > t0 {
            b1.saturating_sub(b0) as f64 / (t1 - t0) as f64
        } else {
            0.0
        }
    };
    Some((frac(a.0, b.0), frac(a.1, b.1)))
}

/// Before a run: waits (up to `LOAD_QUIET_WAIT` seconds) until other programs leave both
/// CPUs nearly idle.
pub(super) fn wait_for_quiet(knobs: &Knobs, pin: &Pinning) {
    let started = Instant::now();
    let mut told = false;
    while let Some((server, client)) = cpu_busy(pin, Duration::from_millis(400)) {
        if server.max(client) <= knobs.max_other_load {
            break;
        }
        if started.elapsed() >= Duration::from_secs(knobs.quiet_wait_secs) {
            eprintln!(
                "  (CPUs still busy with other programs after {} s: running anyway)",
                knobs.quiet_wait_secs
            );
            break;
        }
        if !told {
            eprintln!(
                "  (other programs are using the CPUs: {:.0}% / {:.0}%; waiting up to {} s)",
                server * 100.0,
                client * 100.0,
                knobs.quiet_wait_secs
            );
            told = true;
        }
    }
}

/// What the CPUs did over one measured window (a run or a slice).
pub(super) struct CpuUse {
    /// The server's threads other than the gateway's, as a fraction of one CPU.
    pub server_util: Option<f64>,
    /// The FakeGateway thread, as a fraction of one CPU.
    pub gateway_util: Option<f64>,
    pub server_us_per_req: Option<f64>,
    pub steal: Option<f64>,
    /// Busy fraction of the server's CPU not explained by the server process: other
    /// programs competing for it.
    pub foreign: Option<f64>,
    /// The same for the load generator's CPU.
    pub foreign_client: Option<f64>,
}

/// Utilisation, cost per request and other programs' load over one window, from
/// before/after samples of the server's CPU time (other threads, gateway thread), this
/// process's CPU time and `/proc/stat` of both CPUs. `gateway_on_server_cpu`: which CPU
/// the gateway thread's time is charged to.
#[allow(clippy::too_many_arguments)]
pub(super) fn cpu_use(
    secs: f64,
    requests: u64,
    cpu: Option<((u64, u64), (u64, u64))>,
    own: Option<((u64, u64), (u64, u64))>,
    stat: Option<(CpuStat, CpuStat)>,
    cstat: Option<(CpuStat, CpuStat)>,
    pinned: bool,
    gateway_on_server_cpu: bool,
) -> CpuUse {
    let server_util = cpu.map(|((s0, _), (s1, _))| s1.saturating_sub(s0) as f64 / 1e9 / secs);
    let gateway_util = cpu.map(|((_, g0), (_, g1))| g1.saturating_sub(g0) as f64 / 1e9 / secs);
    let server_us_per_req = cpu
        .filter(|_| requests > 0)
        .map(|((s0, _), (s1, _))| s1.saturating_sub(s0) as f64 / 1e3 / requests as f64);
    let steal = stat
        .filter(|((_, _, t0), (_, _, t1))| t1 > t0)
        .map(|((s0, _, t0), (s1, _, t1))| s1.saturating_sub(s0) as f64 / (t1 - t0) as f64);
    // Busy time of each CPU minus what this benchmark's own threads used there.
    let gateway_share = gateway_util.unwrap_or(0.0);
    let (gw_on_server, gw_on_client) = if gateway_on_server_cpu {
        (gateway_share, 0.0)
    } else {
        (0.0, gateway_share)
    };
    let generator_util = own.map(|((a0, b0), (a1, b1))| (a1 + b1).saturating_sub(a0 + b0) as f64 / 1e9 / secs);
    let busy = |st: Option<(CpuStat, CpuStat)>| {
        st.filter(|((_, _, t0), (_, _, t1))| t1 > t0 && pinned)
            .map(|((_, b0, t0), (_, b1, t1))| b1.saturating_sub(b0) as f64 / (t1 - t0) as f64)
    };
    CpuUse {
        server_util,
        gateway_util,
        server_us_per_req,
        steal,
        foreign: busy(stat)
            .zip(server_util)
            .map(|(b, own)| (b - own - gw_on_server).max(0.0)),
        foreign_client: busy(cstat)
            .zip(generator_util)
            .map(|(b, own)| (b - own - gw_on_client).max(0.0)),
    }
}

/// `/proc/stat` counters of one CPU (or all): (steal, busy, total) in clock ticks.
pub(super) type CpuStat = (u64, u64, u64);

pub(super) fn cpu_stat(cpu: Option<usize>) -> Option<CpuStat> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = cpu.map_or_else(|| "cpu".to_owned(), |c| format!("cpu{c}"));
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal
    let total: u64 = fields.iter().sum();
    Some((fields[7], total - fields[3] - fields[4], total))
}

impl CpuUse {
    /// The larger share of either CPU taken by other programs.
    pub(super) fn other_load(&self) -> Option<f64> {
        match (self.foreign, self.foreign_client) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}
