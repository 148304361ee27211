//! Real `redis-server` processes the tests start themselves on free loopback ports (so they
//! can kill, pause, flush and restart them), and replicas: the quickstart-shaped app behind a
//! layer in fleet mode, several per test, sharing one Redis and one `FakeGateway`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tower_wacht::WachtAuthLayer;
use tower_wacht::fleet::FleetConfig;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway, TokenGrant, generate_token};

use crate::common;

pub const SECRET: &str = "tower-wacht fleet test secret, 32+ bytes";

/// Where `redis-server` is; a clear failure (never a skip) when it is not installed.
fn redis_binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin", "/usr/sbin"])
    {
        let candidate = PathBuf::from(dir).join("redis-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "redis-server not found: the fleet tests run against a real Redis. Install it with \
         `apt-get install -y redis-server` (the README's test command, ./test.sh, does this)"
    );
}

/// A `redis-server` on 127.0.0.1: without persistence, or with an RDB file that `SAVE`
/// writes and a restart loads (a restore from a snapshot), or with TLS.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    dir: Option<PathBuf>,
    /// The TLS port and the CA certificate (PEM) its certificate chains to.
    pub tls: Option<(u16, Vec<u8>)>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(vec!["--save".into(), String::new()], None, None)
    }

    /// Persistence by snapshot only: `SAVE` writes `dump.rdb`, a restart loads it.
    pub fn start_persistent() -> RedisServer {
        let dir = temp_dir("rdb");
        let args = vec![
            "--save".into(),
            String::new(),
            "--dir".into(),
            dir.display().to_string(),
            "--dbfilename".into(),
            "dump.rdb".into(),
        ];
        Self::start_with(args, Some(dir), None)
    }

    /// TLS on a second port, with a certificate for `localhost` from a CA made for the test
    /// (`openssl`); the plain port stays for the harness's own commands.
    pub fn start_tls() -> RedisServer {
        let dir = temp_dir("tls");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs (apt-get install -y openssl)");
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=tower-wacht test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        let ca = std::fs::read(dir.join("ca.crt")).expect("the CA certificate");
        let tls_port = free_port();
        let file = |name: &str| dir.join(name).display().to_string();
        let args = vec![
            "--save".into(),
            String::new(),
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            file("server.crt"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Self::start_with(args, Some(dir), Some((tls_port, ca)))
    }

    fn start_with(args: Vec<String>, dir: Option<PathBuf>, tls: Option<(u16, Vec<u8>)>) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            child: None,
            port,
            args,
            dir,
            tls,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(redis_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "no",
            ])
            .args(&self.args)
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `rediss://` URL of a TLS server.
    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://localhost:{port}")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: the process is gone, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new server process on the same port: empty, or (persistent) with the last `SAVE`.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server hangs, connections stay open.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// One command over a raw RESP connection; the first line of the reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let reply = self.command_raw(&args.iter().map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>())?;
        reply.split("\r\n").next().map(str::to_owned)
    }

    /// One command with binary arguments; the whole reply as text.
    pub fn command_raw(&self, args: &[Vec<u8>]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request).ok()?;
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).ok()?;
        // Read what else is there (array replies), briefly, through the same buffer.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .ok()?;
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        Some(format!("{}\r\n{}", first.trim_end(), String::from_utf8_lossy(&rest)))
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self
            .command_raw(&[b"KEYS".to_vec(), pattern.as_bytes().to_vec()])
            .unwrap_or_default();
        reply
            .split("\r\n")
            .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tower-wacht-{kind}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One replica: the quickstart-shaped app behind a fleet-mode layer.
pub struct Replica {
    pub addr: SocketAddr,
    pub auth: WachtAuthLayer,
}

/// Fleet settings for tests: short heartbeats and bounds, so failures show within seconds.
pub fn fleet_config(redis: &RedisServer) -> FleetConfig {
    FleetConfig::new(redis.url(), SECRET)
        .timeout(Duration::from_millis(200))
        .heartbeat(Duration::from_millis(200))
        .disconnected_ttl(Duration::from_secs(1))
        .max_reconnect_backoff(Duration::from_millis(300))
}

/// `n` replicas of one profile on one Redis and one gateway.
pub async fn replicas(n: usize, gateway: &FakeGateway, redis: &RedisServer, resource: &str) -> Vec<Replica> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(replica(gateway, fleet_config(redis), resource).await);
    }
    for r in &out {
        wait_connected(r).await;
    }
    out
}

pub async fn replica(gateway: &FakeGateway, fleet: FleetConfig, resource: &str) -> Replica {
    let auth = WachtAuthLayer::new(replica_config(gateway, fleet, resource)).expect("layer builds");
    serve(auth).await
}

/// The configuration every test replica runs with.
pub fn replica_config(gateway: &FakeGateway, fleet: FleetConfig, resource: &str) -> tower_wacht::WachtAuthConfig {
    tower_wacht::WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(common::API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .resource(resource)
        .ttl(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(3))
        .fleet(fleet)
        .build()
        .expect("valid config")
}

/// Serves the test router behind `auth` on loopback.
pub async fn serve(auth: WachtAuthLayer) -> Replica {
    let addr = common::serve(common::router(auth.clone())).await;
    Replica { addr, auth }
}

/// Waits (boundedly) until the replica's invalidation channel is subscribed.
pub async fn wait_connected(replica: &Replica) {
    let started = Instant::now();
    while !replica.auth.verifier().fleet_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the fleet channel did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn status(http: &reqwest::Client, replica: &Replica, token: &str) -> u16 {
    http.get(format!("http://{}/whoami", replica.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("request completes")
        .status()
        .as_u16()
}

/// Registers a fresh token for an org-scoped grant.
pub fn token(gateway: &FakeGateway, client: &str) -> String {
    let token = generate_token();
    gateway.register(
        &token,
        TokenGrant::new(client)
            .granted_resource(common::ORG_URN)
            .expires_in(Duration::from_secs(3600)),
    );
    token
}
