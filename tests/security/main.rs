//! Attacks on the layer's defaults, each written as an attacker would run it: real requests
//! over loopback HTTP/1.1 or HTTP/2 against the examples' shapes, asserting the refusal.
//! One test per item of the "Safe by construction" issue; `SECURITY.md` maps each to its
//! threat and its default.
//!
//! * `bypass`: requests that reach a handler without a principal, foreign tenants, redirects
//!   that carry the token away, invalidations undone, stale grace after a rejection.
//! * `abuse`: floods of random tokens, JWT-shaped tokens, metric label floods, MCP bodies the
//!   guard cannot read.
//! * `cors`: requests dressed as CORS preflights from an allowed origin, to get past the auth
//!   layer through `McpCorsLayer` in front of it.
//! * `hygiene`: gRPC rendering over HTTP/1.1, `no-store`, the RFC 6750 `invalid_request`
//!   challenge, token passthrough to handlers, the cache's byte budget.

#[path = "../common/mod.rs"]
mod common;

#[allow(dead_code)]
#[path = "../../examples/grpc_server.rs"]
mod grpc_server;

mod abuse;
mod bypass;
mod cors;
mod harness;
mod hygiene;
