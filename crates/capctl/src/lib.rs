//! `capctl`, the command-line client of the CAP services: everyday commands
//! for demos, and the load generators behind `make bench`.
//!
//! # Layout
//!
//! - [`auth`]: bearer tokens: `capctl token`, `capctl dev-keys`, and the tokens the load
//!   commands mint per simulated user.
//! - [`celebrity`]: a celebrity's followers written straight to Cassandra, and how
//!   soon its posts reach them (`make bench`).
//! - [`client`]: a small HTTP client for both services, and Prometheus parsing.
//! - [`commands`]: one-request commands (products, reservations, follows, posts, timelines).
//! - [`dead_letters`]: lists the fan-out's dead letters and replays them to their work subjects.
//! - [`fanout`]: builds a follow graph, posts, waits for convergence; reports missing
//!   and duplicate entries (both must be 0).
//! - [`flash_sale`]: many buyers race for little stock; reports oversold (must be 0).
//! - [`latency`]: HDR-histogram latency recording.
//! - [`load`]: the closed-loop runner behind the benchmark subcommands.
//! - [`reserve_load`]: holds on existing products for a fixed time (`make bench`).
//! - [`timeline_load`]: posting with fan-out timing, and timeline reads (`make bench`).
//! - [`relay_catchup`]: posts accepted while NATS is down, and the outbox relay's
//!   catch-up once it returns (`make bench`).
//! - [`raw_cql`]: the fan-out's inserts straight to Cassandra, the ceiling `make bench` compares with.

pub mod auth;
pub mod celebrity;
pub mod client;
pub mod commands;
pub mod dead_letters;
pub mod fanout;
pub mod flash_sale;
pub mod latency;
pub mod load;
pub mod raw_cql;
pub mod relay_catchup;
pub mod reserve_load;
pub mod timeline_load;
