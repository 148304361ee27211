//! Fleet mode against real `redis-server` processes the tests start themselves: several
//! replicas (layers in this process, and separate processes running `examples/fleet.rs`)
//! sharing one Redis and one `FakeGateway`.
#![cfg(feature = "redis")]

#[path = "../common/mod.rs"]
mod common;
/// The gRPC example's server, for a server stream ended from another replica.
#[allow(dead_code)]
#[path = "../../examples/grpc_server.rs"]
mod grpc_server;

mod announcements;
mod chaos;
mod failures;
mod harness;
mod owners;
mod processes;
mod proxy;
mod rate_limits;
mod resp;
mod setup;
mod sharing;
mod streams;
mod webhooks;
