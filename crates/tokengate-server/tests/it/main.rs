//! The server's integration tests, in one binary (one link instead of one per file).
//!
//! Each module is one area, end to end against the real `tokengate` binary or the router in
//! process ([`common`] is the test kit both use). Tests that need Redis, Postgres, nginx or
//! the OpenID provider of `tests/oidc-provider` skip with a printed reason when those are
//! missing, unless `TOKENGATE_REQUIRE_SERVICES=1` (or `TOKENGATE_REQUIRE_NGINX=1`,
//! `TOKENGATE_REQUIRE_OIDC=1`) turns the skip into a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod abuse;
mod attacks;
mod auth_flow;
mod backup;
mod cli;
mod clock;
mod cluster;
mod connections;
mod faults;
mod gate;
mod gate_nginx;
mod hardening;
mod interop;
mod logs;
mod metrics;
mod model;
mod nginx;
mod oidc;
mod openapi;
mod pages;
mod restart;
mod sentinel;
mod sessions;
mod signals;
mod throttle;
