//! Protocol tests of the `FakeGateway` test double, over real loopback HTTP.
#![cfg(feature = "test-util")]

mod helpers;

mod decisions;
mod errors;
mod faults;
mod observation;
mod rate_limits;
mod routes;
