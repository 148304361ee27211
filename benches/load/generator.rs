//! Load generator: minimal HTTP/1.1 keep-alive clients (a tokio connection per task, the gated
//! connections and the busy-polling generator of the interleaved runs, and the stampede's burst).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{PATH, Result, TOKEN_DIGITS};

pub(super) const WARMUP: u8 = 0;
pub(super) const MEASURE: u8 = 1;
pub(super) const STOP: u8 = 2;

/// One GET request as bytes; `digits_at` is where the token's digits start, if any.
pub(super) struct RequestTemplate {
    pub bytes: Vec<u8>,
    pub digits_at: Option<usize>,
}

pub(super) fn request(addr: SocketAddr, token: Option<&str>) -> RequestTemplate {
    let mut s = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\n");
    let mut digits_at = None;
    if let Some(token) = token {
        s.push_str("Authorization: Bearer ");
        if token.starts_with("oat_") && token.len() >= TOKEN_DIGITS {
            digits_at = Some(s.len() + token.len() - TOKEN_DIGITS);
        }
        s.push_str(token);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    RequestTemplate {
        bytes: s.into_bytes(),
        digits_at,
    }
}

/// Where a connection gets its token from.
#[derive(Clone)]
pub(super) enum Tokens {
    /// The same request every time.
    Fixed,
    /// A new cold token per request: `next` is shared by all connections, up to `limit`.
    Fresh {
        next: Arc<AtomicU64>,
        limit: u64,
        exhausted: Arc<AtomicBool>,
    },
    /// A new token per request from a list (the JWTs of `jwt-cold`, minted by the server):
    /// `next` is shared by all connections.
    List {
        tokens: Arc<Vec<String>>,
        next: Arc<AtomicU64>,
        exhausted: Arc<AtomicBool>,
    },
}

#[derive(Default)]
pub(super) struct ConnStats {
    pub ok: u64,
    pub failed: u64,
    pub warmup_failed: u64,
    /// Every completed request, warm-up included.
    pub sent: u64,
    /// Latency of each measured request, nanoseconds (saturating at ~4.3 s).
    pub latencies: Vec<u32>,
}

fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// Writes `n` as zero-padded decimal into `dst`.
fn write_digits(dst: &mut [u8], mut n: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// One keep-alive connection: request, response, repeat, until the phase is STOP.
pub(super) async fn connection(
    addr: SocketAddr,
    mut template: RequestTemplate,
    tokens: Tokens,
    phase: Arc<AtomicU8>,
) -> std::io::Result<ConnStats> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 8192];
    let mut stats = ConnStats {
        latencies: Vec::with_capacity(1 << 16),
        ..ConnStats::default()
    };
    loop {
        if phase.load(Ordering::Relaxed) == STOP {
            break;
        }
        match &tokens {
            Tokens::Fixed => {}
            Tokens::Fresh { next, limit, exhausted } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= *limit {
                    exhausted.store(true, Ordering::Relaxed);
                    break;
                }
                if let Some(at) = template.digits_at {
                    write_digits(&mut template.bytes[at..at + TOKEN_DIGITS], i);
                }
            }
            Tokens::List {
                tokens,
                next,
                exhausted,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = usize::try_from(i).ok().and_then(|i| tokens.get(i)) else {
                    exhausted.store(true, Ordering::Relaxed);
                    break;
                };
                template = request(addr, Some(token));
            }
        }
        let started = Instant::now();
        stream.write_all(&template.bytes).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        let elapsed = started.elapsed();
        stats.sent += 1;
        if phase.load(Ordering::Relaxed) == MEASURE {
            if status == 200 {
                stats.ok += 1;
            } else {
                stats.failed += 1;
            }
            stats.latencies.push(nanos(elapsed));
        } else if status != 200 {
            stats.warmup_failed += 1;
        }
    }
    Ok(stats)
}

/// Gate state: the server's connections send nothing new.
pub(super) const PAUSE: u8 = 3;

/// Starts and stops the load on one server while its connections stay open, so several
/// servers can be driven in turn in short slices (see `Bench::interleaved`).
pub(super) struct Gate {
    /// `PAUSE`, `WARMUP` (driven, not counted), `MEASURE` or `STOP`.
    pub phase: AtomicU8,
    /// Wakes paused [`gated_connection`]s.
    pub wake: tokio::sync::Notify,
    /// 200 responses completed while `MEASURE`.
    pub ok: AtomicU64,
    /// Other responses completed while `MEASURE`.
    pub failed: AtomicU64,
}

impl Gate {
    pub(super) fn new() -> Gate {
        Gate {
            phase: AtomicU8::new(PAUSE),
            wake: tokio::sync::Notify::new(),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub(super) fn set(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
        self.wake.notify_waiters();
    }
}

/// `LOAD_GENERATOR=epoll`: one keep-alive connection as a tokio task on the generator's
/// `current_thread` runtime, sending while its gate is open and waiting (in epoll) while
/// it is paused; returns the latencies of its measured requests. See [`spin`] for why
/// this is not the default.
pub(super) async fn gated_connection(addr: SocketAddr, request: Vec<u8>, gate: Arc<Gate>) -> std::io::Result<Vec<u32>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 8192];
    let mut latencies = Vec::with_capacity(1 << 16);
    loop {
        // Registered before the check, so a `set` between the two is not missed.
        let opened = gate.wake.notified();
        match gate.phase.load(Ordering::Relaxed) {
            STOP => break,
            PAUSE => {
                opened.await;
                continue;
            }
            _ => {}
        }
        let started = Instant::now();
        stream.write_all(&request).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        let elapsed = started.elapsed();
        if gate.phase.load(Ordering::Relaxed) == MEASURE {
            if status == 200 {
                gate.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                gate.failed.fetch_add(1, Ordering::Relaxed);
            }
            latencies.push(nanos(elapsed));
        }
    }
    Ok(latencies)
}

/// One keep-alive connection of [`spin`].
struct SpinConn {
    server: usize,
    stream: std::net::TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
    filled: usize,
    /// When the request in flight was sent; `None`: nothing in flight.
    sent_at: Option<Instant>,
}

/// A busy-polling closed-loop generator on the calling thread: one keep-alive connection
/// per target (server index, address, request bytes), one request in flight on each
/// connection whose server's gate is open, until every gate is `STOP`. Returns the
/// measured latencies of each server.
///
/// It never sleeps: with an epoll-driven generator, every response the server sends has
/// to wake the generator's halted vCPU (an IPI, i.e. a VM exit), and the server pays for
/// that wake-up in `sock_def_readable` → `_raw_spin_unlock_irqrestore`. Measured with
/// `perf`, that cost grew with how often the generator was idle, i.e. with how slow the
/// server was, which inflated the gap between modes; a real server does not pay for
/// waking its clients.
pub(super) fn spin(targets: Vec<(usize, SocketAddr, Vec<u8>)>, gates: &[Arc<Gate>]) -> std::io::Result<Vec<Vec<u32>>> {
    let mut all = Vec::new();
    for (server, addr, request) in targets {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        all.push(SpinConn {
            server,
            stream,
            request,
            buf: vec![0u8; 4096],
            filled: 0,
            sent_at: None,
        });
    }
    let mut latencies: Vec<Vec<u32>> = gates.iter().map(|_| Vec::with_capacity(1 << 20)).collect();
    loop {
        let mut busy = false;
        for c in &mut all {
            let phase = gates[c.server].phase.load(Ordering::Relaxed);
            let Some(sent_at) = c.sent_at else {
                if phase == PAUSE || phase == STOP {
                    continue;
                }
                busy = true;
                write_all_spinning(&mut c.stream, &c.request)?;
                c.sent_at = Some(Instant::now());
                continue;
            };
            busy = true;
            if c.filled == c.buf.len() {
                c.buf.resize(c.buf.len() * 2, 0);
            }
            match std::io::Read::read(&mut c.stream, &mut c.buf[c.filled..]) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                Ok(n) => c.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            let Some(status) = complete_response(&c.buf[..c.filled])? else {
                continue;
            };
            let elapsed = sent_at.elapsed();
            c.filled = 0;
            c.sent_at = None;
            let gate = &gates[c.server];
            if gate.phase.load(Ordering::Relaxed) == MEASURE {
                if status == 200 {
                    gate.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    gate.failed.fetch_add(1, Ordering::Relaxed);
                }
                latencies[c.server].push(nanos(elapsed));
            }
        }
        if !busy && gates.iter().all(|g| g.phase.load(Ordering::Relaxed) == STOP) {
            return Ok(latencies);
        }
        if !busy {
            // Everything paused between slices: do not burn the CPU the orchestrator's
            // own thread needs to flip the gates.
            std::thread::yield_now();
        }
    }
}

/// Writes a small request on a non-blocking socket (it fits in an empty send buffer, so
/// this practically never loops).
fn write_all_spinning(stream: &mut std::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match std::io::Write::write(stream, bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        filled += n;
        if let Some(status) = complete_response(&buf[..filled])? {
            return Ok(status);
        }
    }
}

/// The status of the response in `buf` once all of it has arrived (Content-Length framed;
/// one request in flight per connection, so nothing can follow the body).
fn complete_response(buf: &[u8]) -> std::io::Result<Option<u16>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
    };
    let content_length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "response without Content-Length (the generator supports only that framing)",
            )
        })?;
    Ok((buf.len() >= head_len + content_length).then_some(response.code.unwrap_or(0)))
}

pub(super) struct BurstSample {
    pub start: Instant,
    pub end: Instant,
    pub status: u16,
}

/// Opens `n` connections, then sends one request on each at the same moment.
pub(super) async fn burst(addr: SocketAddr, n: usize, token: &str) -> Result<Vec<BurstSample>> {
    let template = Arc::new(request(addr, Some(token)).bytes);
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    // Let the server accept every connection before the burst.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        let barrier = Arc::clone(&barrier);
        let template = Arc::clone(&template);
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            barrier.wait().await;
            let start = Instant::now();
            stream.write_all(&template).await?;
            let status = read_response(&mut stream, &mut buf).await?;
            Ok::<_, std::io::Error>(BurstSample {
                start,
                end: Instant::now(),
                status,
            })
        });
    }
    let mut samples = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        samples.push(joined??);
    }
    Ok(samples)
}
