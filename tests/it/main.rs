//! Ferry's integration tests: one binary, helpers in `common`.
//! PostgreSQL tests run when FERRY_TEST_POSTGRES_URL is set and print
//! that they were skipped otherwise.

mod common;
mod conformance;
mod connectors;
mod demo;
mod e2e;
mod events;
mod failures;
mod harness;
mod house;
mod multinode;
mod node_failure;
mod operational;
mod operations;
mod operator;
mod outage;
mod rollouts;
mod scheduler;
