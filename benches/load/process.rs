//! The orchestrator's handle on one server child process.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cpu::{Pinning, task_cpu_ns};
use crate::{Mode, Result, SERVE_ARG};

/// A running server child.
pub(super) struct ServerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub addr: SocketAddr,
    gateway_tid: u32,
    /// The JWTs a JWT mode's server minted (one per connection, or the cold set), in order.
    pub tokens: Vec<String>,
}

impl ServerProc {
    pub(super) fn start(
        mode: Mode,
        latency_ms: u64,
        hit_tokens: u64,
        cold_tokens: u64,
        pin: &Pinning,
        gateway_cpu: Option<usize>,
    ) -> Result<ServerProc> {
        let exe = std::env::current_exe()?;
        let mut cmd = match pin.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.arg(SERVE_ARG)
            .arg(mode.arg())
            .arg(latency_ms.to_string())
            .arg(hit_tokens.to_string())
            .arg(cold_tokens.to_string())
            .arg(gateway_cpu.map_or_else(|| "-".to_owned(), |c| c.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proc = ServerProc {
            child,
            stdin,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            gateway_tid: 0,
            tokens: Vec::new(),
        };
        let ready = proc
            .lines
            // Minting a large set of JWTs (`jwt-cold`) takes a while.
            .recv_timeout(Duration::from_secs(600))
            .map_err(|_| format!("{} server did not start", mode.arg()))?;
        let mut parts = ready.split_whitespace();
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("READY"), Some(addr), Some(tid), Some(tokens)) => {
                proc.addr = addr.parse()?;
                proc.gateway_tid = tid.parse()?;
                if tokens != "-" {
                    let text = std::fs::read_to_string(tokens);
                    let _ = std::fs::remove_file(tokens);
                    proc.tokens = text?.lines().map(str::to_owned).collect();
                }
            }
            _ => return Err(format!("unexpected server line {ready:?}").into()),
        }
        Ok(proc)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn gateway_calls(&mut self) -> Result<u64> {
        let stdin = self.stdin.as_mut().ok_or("server stdin closed")?;
        writeln!(stdin, "calls")?;
        stdin.flush()?;
        let line = self.lines.recv_timeout(Duration::from_secs(10))?;
        Ok(line
            .strip_prefix("CALLS ")
            .ok_or_else(|| format!("unexpected server line {line:?}"))?
            .parse()?)
    }

    /// Server-side CPU time so far (ns): (all threads but the gateway's, the gateway's).
    pub(super) fn cpu_ns(&self) -> Option<(u64, u64)> {
        task_cpu_ns(&self.pid().to_string(), self.gateway_tid)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
