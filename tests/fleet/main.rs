//! Fleet mode against real `redis-server` processes the tests start themselves: several
//! replicas (layers in this process, and separate processes running `examples/fleet.rs`)
//! sharing one Redis and one `FakeGateway`.
#![cfg(feature = "redis")]

#[path = "../common/mod.rs"]
mod common;

mod announcements;
mod chaos;
mod failures;
mod harness;
mod processes;
mod proxy;
mod resp;
mod setup;
mod sharing;
mod streams;
