//! Fleet mode with three replicas sharing one Redis: what the shared tier buys and costs.
//!
//! ```text
//! cargo bench --bench fleet --features test-util,redis
//! ```
//!
//! Starts a `redis-server` on a free loopback port (it must be installed: `apt-get install -y
//! redis-server`) and a `FakeGateway`, builds three verifiers in this process (three
//! `WachtAuthLayer`s, the replicas), and measures:
//!
//! 1. gateway calls per token when every token is used once on each replica, with and without
//!    fleet mode (the ttl is long, so this is "per token per ttl");
//! 2. the latency of one verification on a replica: a local hit, a shared-tier hit (another
//!    replica verified the token), and a miss that asks the gateway;
//! 3. the propagation delay of `invalidate(token)` from one replica to the other two (until
//!    both have dropped the token), p50 and p99: through the change log (the append script,
//!    the notice, each replica reading the log).
//!
//! 4. the rate-limit meters' Redis traffic: commands Redis processed per 1 000 requests served
//!    from cache across the three replicas (one token, Wacht's default rule at a limit the run
//!    does not reach), with metering on and, as the baseline of the same run, off (the
//!    channel's heartbeats and log reads are in both).
//!
//! The shared-tier hit is also reported as a ratio to one Redis round trip measured in the
//! same run (its floor).
//!
//! Knobs: `FLEET_TOKENS` (300), `FLEET_TRIALS` (300). Nothing here asserts on timing.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tower_wacht::fleet::FleetConfig;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway, TokenGrant, generate_token};
use tower_wacht::{WachtAuthConfig, WachtAuthLayer};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const SECRET: &str = "tower-wacht fleet benchmark secret, 32+ bytes";

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Result<Redis> {
    let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("redis-server not found: install it with `apt-get install -y redis-server`")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Redis(child, port))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn layer(gateway: &FakeGateway, redis: Option<&Redis>) -> Result<WachtAuthLayer> {
    let mut builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key("sk_test_fleetbench")
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .ttl(Duration::from_secs(600))
        .max_inflight_gateway_calls(4096);
    if let Some(redis) = redis {
        builder = builder.fleet(FleetConfig::new(format!("redis://127.0.0.1:{}", redis.1), SECRET));
    }
    Ok(WachtAuthLayer::new(builder.build()?)?)
}

fn register(gateway: &FakeGateway, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let token = generate_token();
            gateway.register(
                &token,
                TokenGrant::new(format!("oc_fleetBench{i:0>22}"))
                    .scopes(["projects:read", "projects:write"])
                    .granted_resource("urn:wacht:organization:427001234567890561"),
            );
            token
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

async fn run() -> Result<()> {
    let tokens_n = env_usize("FLEET_TOKENS", 300);
    let trials = env_usize("FLEET_TRIALS", 300);
    let redis = start_redis()?;
    let gateway = FakeGateway::start().await?;
    // All demo tokens belong to one end user; lift the per-user rate limit.
    gateway.set_rate_limit(u32::MAX, Duration::from_secs(60));

    // 1. Gateway calls per token, each token used once on each of three replicas.
    let mut calls = Vec::new();
    for fleet_mode in [false, true] {
        let replicas = [
            layer(&gateway, fleet_mode.then_some(&redis))?,
            layer(&gateway, fleet_mode.then_some(&redis))?,
            layer(&gateway, fleet_mode.then_some(&redis))?,
        ];
        tokio::time::sleep(Duration::from_millis(300)).await; // channels subscribe
        let tokens = register(&gateway, tokens_n);
        gateway.reset_calls();
        for token in &tokens {
            for replica in &replicas {
                replica.verifier().verify(token).await?;
            }
        }
        calls.push(gateway.calls() as f64 / tokens_n as f64);
    }

    // 2. Latency of one verification on replica b: local hit, shared-tier hit, gateway miss;
    //    and, as the baseline measured in the same run, one Redis round trip (a `GET` on the
    //    same kind of connection the shared tier uses): the floor of a shared-tier hit.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.1))?;
    let mut conn = redis::aio::ConnectionManager::new(client).await?;
    let mut round_trip = Vec::new();
    for i in 0..tokens_n {
        let t = Instant::now();
        let _: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("bench:{i}"))
            .query_async(&mut conn)
            .await?;
        round_trip.push(t.elapsed());
    }
    round_trip.sort();
    let (a, b) = (layer(&gateway, Some(&redis))?, layer(&gateway, Some(&redis))?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tokens = register(&gateway, tokens_n);
    let (mut local, mut shared, mut miss) = (Vec::new(), Vec::new(), Vec::new());
    for (i, token) in tokens.iter().enumerate() {
        if i % 2 == 0 {
            a.verifier().verify(token).await?;
            let t = Instant::now();
            b.verifier().verify(token).await?;
            shared.push(t.elapsed());
        } else {
            let t = Instant::now();
            b.verifier().verify(token).await?;
            miss.push(t.elapsed());
        }
        let t = Instant::now();
        b.verifier().verify(token).await?;
        local.push(t.elapsed());
    }
    for v in [&mut local, &mut shared, &mut miss] {
        v.sort();
    }

    // 3. Propagation of invalidate(token) from one replica to the two others.
    let replicas = [
        layer(&gateway, Some(&redis))?,
        layer(&gateway, Some(&redis))?,
        layer(&gateway, Some(&redis))?,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tokens = register(&gateway, trials);
    let mut delays = Vec::new();
    for token in &tokens {
        for replica in &replicas {
            replica.verifier().verify(token).await?;
        }
        let keys: Vec<_> = replicas.iter().map(|r| r.verifier().hash_token(token)).collect();
        let started = Instant::now();
        if replicas[0].invalidate(token).await != tower_wacht::ChangeOutcome::Durable {
            return Err("an invalidation was not written to the change log".into());
        }
        loop {
            let gone = replicas[1..]
                .iter()
                .zip(&keys[1..])
                .all(|(r, k)| r.verifier().cached(k).is_none());
            if gone {
                delays.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(5) {
                return Err("an invalidation did not arrive within 5 s".into());
            }
            tokio::task::yield_now().await;
        }
    }
    delays.sort();

    // 4. The meters' Redis traffic.
    gateway.set_rate_limit(u32::MAX, Duration::from_secs(60));
    let off = meter_traffic(&gateway, &redis, &mut conn, false).await?;
    let on = meter_traffic(&gateway, &redis, &mut conn, true).await?;

    println!("## Fleet mode, three replicas, one Redis ({tokens_n} tokens, {trials} invalidations)\n");
    println!("| measure | without fleet mode | fleet mode |");
    println!("|---|---|---|");
    println!(
        "| gateway calls per token (each token used once on each of 3 replicas) | {:.2} | {:.2} |",
        calls[0], calls[1]
    );
    println!();
    println!("| one verification on a replica | p50 µs | p99 µs |");
    println!("|---|---|---|");
    for (name, v) in [
        ("baseline: one Redis `GET` round trip", &round_trip),
        ("local hit", &local),
        ("shared-tier hit (another replica verified the token)", &shared),
        ("miss: gateway call, write-back", &miss),
    ] {
        println!(
            "| {name} | {} | {} |",
            micros(percentile(v, 0.5)),
            micros(percentile(v, 0.99))
        );
    }
    println!(
        "\nshared-tier hit ÷ Redis round trip: p50 {:.2}, p99 {:.2}",
        percentile(&shared, 0.5).as_secs_f64() / percentile(&round_trip, 0.5).as_secs_f64(),
        percentile(&shared, 0.99).as_secs_f64() / percentile(&round_trip, 0.99).as_secs_f64()
    );
    println!();
    println!("| `invalidate(token)` on one replica until both others dropped it | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    println!(
        "| {} invalidations | {} | {} | {} |",
        delays.len(),
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        ms(delays.last().copied().unwrap_or_default())
    );
    println!();
    println!(
        "| per 1 000 requests served from cache (3 replicas, one token, {METER_REQUESTS} requests in {METER_ROUNDS} rounds) | metering off | metering on | the meters' share |"
    );
    println!("|---|---|---|---|");
    println!(
        "| Redis round trips (scripts called: `EVALSHA` / `EVAL`) | {:.1} | {:.1} | {:.1} |",
        off.0,
        on.0,
        on.0 - off.0
    );
    println!(
        "| Redis commands processed (the scripts' own commands included) | {:.1} | {:.1} | {:.1} |",
        off.1,
        on.1,
        on.1 - off.1
    );
    Ok(())
}

/// Requests per replica per round, and rounds, of the meters' traffic measure.
const METER_REQUESTS: usize = 3000;
const METER_ROUNDS: usize = 10;

/// Redis's counts of script calls (round trips of the meters' kind) and of processed commands.
async fn commands(conn: &mut redis::aio::ConnectionManager) -> Result<(u64, u64)> {
    let info: String = redis::cmd("INFO").arg("all").query_async(conn).await?;
    let calls = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix(":calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let scripts = calls("cmdstat_evalsha") + calls("cmdstat_eval");
    let total = info
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or("no total_commands_processed in INFO")?;
    Ok((scripts, total))
}

/// Redis commands per 1 000 requests served from cache by three replicas (metering on or off),
/// the requests spread over [`METER_ROUNDS`] rounds 100 ms apart, as a steady service sends them.
async fn meter_traffic(
    gateway: &FakeGateway,
    redis: &Redis,
    conn: &mut redis::aio::ConnectionManager,
    metering: bool,
) -> Result<(f64, f64)> {
    use tower::{Service, ServiceExt as _};
    let limits = if metering {
        tower_wacht::rate_limit::RateLimitConfig::default()
    } else {
        tower_wacht::rate_limit::RateLimitConfig::default().disable_metering_unsafe()
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let config = WachtAuthConfig::builder()
            .gateway_url(gateway.url())
            .api_key("sk_test_fleetbench")
            .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
            .ttl(Duration::from_secs(600))
            .rate_limits(limits.clone())
            .fleet(FleetConfig::new(format!("redis://127.0.0.1:{}", redis.1), SECRET))
            .build()?;
        let layer = WachtAuthLayer::new(config)?;
        let service = tower::ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_req: http::Request<String>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            });
        replicas.push(service);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = register(gateway, 1).remove(0);
    let request = || {
        http::Request::builder()
            .uri("/")
            .header("authorization", format!("Bearer {token}"))
            .body(String::new())
            .expect("request")
    };
    // Every replica knows the token and its route's rules before counting starts.
    for replica in &mut replicas {
        replica.ready().await?.call(request()).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = commands(conn).await?;
    let mut served = 0u64;
    for _ in 0..METER_ROUNDS {
        for replica in &mut replicas {
            for _ in 0..METER_REQUESTS / METER_ROUNDS {
                let response = replica.ready().await?.call(request()).await?;
                if response.status() == http::StatusCode::OK {
                    served += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last flush.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = commands(conn).await?;
    let per_thousand = |n: u64| n as f64 * 1000.0 / served.max(1) as f64;
    Ok((per_thousand(after.0 - before.0), per_thousand(after.1 - before.1)))
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}
