//! Fleet mode against real `redis-server` processes the tests start themselves: several
//! replicas (layers in this process, and separate processes running `examples/fleet.rs`)
//! sharing one Redis and one `FakeGateway`.
#![cfg(feature = "redis")]

#[path = "../common/mod.rs"]
mod common;

mod failures;
mod harness;
mod processes;
mod sharing;
