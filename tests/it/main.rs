//! The integration suites that install no process-wide state, in one test binary: one
//! compilation and one link instead of one per suite. Each former `tests/<suite>.rs` is a
//! module of the same name, so its tests are named `<suite>::<test>`; run one suite with
//! `cargo test --all-features --test it <suite>::`.
//!
//! Kept as separate binaries, because they install process-wide state or need the process
//! to themselves: `metrics` (the global metrics recorder), `secrets` (the global tracing
//! subscriber), `soak` (the global tracing subscriber and a panic hook, under load),
//! `memory_bound` (reads the process RSS) and `security` (spawns the example binaries).
//! `grpc_codegen` stays separate too, so that its documented regeneration command
//! (`--test grpc_codegen`) keeps working.

#[path = "../common/mod.rs"]
mod common;
/// The gRPC example's server, shared by the `grpc` and `streams` suites.
#[allow(dead_code)]
#[path = "../../examples/grpc_server.rs"]
mod grpc_server;

mod allow_lists;
mod api_keys;
mod audit;
mod custom_gateway;
mod dev_issuer;
mod fake_gateway;
mod grpc;
mod invalidate_by_owner;
mod jwt;
mod layer_http;
mod live_routes;
mod mcp_server;
mod quickstart;
mod rate_limits;
mod reliability;
mod route_report;
mod step_up;
mod streams;
mod tower_contract;
mod webhooks;
