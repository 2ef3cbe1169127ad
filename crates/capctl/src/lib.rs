//! `capctl`, the command-line client of the CAP services: everyday commands
//! for demos, and the load generators behind `make bench`.
//!
//! # Layout
//!
//! - [`client`]: a small HTTP client for both services, and Prometheus parsing.
//! - [`commands`]: one-request commands (products, reservations, follows, posts, timelines).
//! - [`flash_sale`]: many buyers race for little stock; reports oversold (must be 0).
//! - [`latency`]: HDR-histogram latency recording.

pub mod client;
pub mod commands;
pub mod flash_sale;
pub mod latency;
