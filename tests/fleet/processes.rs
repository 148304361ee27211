//! Replicas as separate processes: two `examples/fleet.rs` instances on one Redis and one
//! gateway, driven over loopback, invalidated through the operator listener.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::start_gateway;
use crate::harness::{RedisServer, SECRET, free_port, token};
use crate::sharing::until;

struct Instance {
    child: Child,
    port: u16,
    admin: u16,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(redis: &RedisServer, gateway_url: &str) -> Instance {
    // `cargo test` builds the examples next to the test binaries (`target/<profile>/examples`).
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("fleet")))
        .expect("the test binary's directory");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --all-features`, which builds the examples",
        binary.display()
    );
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(binary)
        .env("WACHT_GATEWAY_URL", gateway_url)
        .env("WACHT_BACKEND_API_KEY", crate::common::API_KEY)
        .env(
            "WACHT_DEPLOYMENT_ID",
            tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID.to_string(),
        )
        .env("WACHT_REDIS_URL", redis.url())
        .env("WACHT_FLEET_SECRET", SECRET)
        .env("BIND", format!("127.0.0.1:{port}"))
        .env("ADMIN_BIND", format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the fleet example starts");
    Instance { child, port, admin }
}

async fn whoami(http: &reqwest::Client, instance: &Instance, token: &str) -> Option<u16> {
    let resp = http
        .get(format!("http://127.0.0.1:{}/whoami", instance.port))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replica_processes_share_one_gateway_call_and_invalidations() {
    let redis = RedisServer::start();
    let gateway = start_gateway().await;
    let instances = [start(&redis, &gateway.url()), start(&redis, &gateway.url())];
    let http = reqwest::Client::new();
    let t = token(&gateway, "oc_fleetProcesses0000000000000001");
    for instance in &instances {
        until(|| async { whoami(&http, instance, "oat_probe").await.is_some() }).await;
    }
    // Give both channels a moment to subscribe, then: one call for both processes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.reset_calls();
    for instance in &instances {
        assert_eq!(whoami(&http, instance, &t).await, Some(200));
    }
    assert_eq!(gateway.calls(), 1, "the second process used the first one's answer");
    // Revoke, and invalidate through the first process's operator listener.
    gateway.revoke(&t);
    let resp = http
        .post(format!("http://127.0.0.1:{}/invalidate", instances[0].admin))
        .json(&serde_json::json!({ "token": t }))
        .send()
        .await
        .expect("operator listener answers");
    assert_eq!(resp.status(), 204);
    let delay = until(|| async { whoami(&http, &instances[1], &t).await == Some(401) }).await;
    println!("invalidation reached the other process after {delay:?}");
    // Deny a client through the second process: refused by the first.
    let t2 = token(&gateway, "oc_fleetProcessesDeny000000000001");
    assert_eq!(whoami(&http, &instances[0], &t2).await, Some(200));
    let resp = http
        .post(format!(
            "http://127.0.0.1:{}/clients/oc_fleetProcessesDeny000000000001/deny",
            instances[1].admin
        ))
        .send()
        .await
        .expect("operator listener answers");
    assert_eq!(resp.status(), 204);
    until(|| async { whoami(&http, &instances[0], &t2).await == Some(401) }).await;
}
