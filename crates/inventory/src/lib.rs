//! The inventory service: strongly consistent (CP) stock on PostgreSQL.
//!
//! Every request is one ACID transaction. Reservations use optimistic locking
//! (a `version` compare-and-set with a bounded, jittered retry), so stock is
//! never oversold however many buyers race; CHECK constraints make the database
//! refuse an oversell too. When PostgreSQL is unreachable the service answers
//! `503` with `Retry-After` within the pool's acquire timeout, never a guess.
//!
//! # Layout
//!
//! - [`config`]: the one configuration struct, read at start-up.
//! - [`domain`]: validated values (`Sku`, `Quantity`, reservation lines, statuses).
//! - [`error`]: [`error::InventoryError`] and the problem each variant becomes.
//! - [`store`]: [`store::PgStore`], every SQL statement the service runs.
//! - [`api`]: the `/v1` routes, DTOs and OpenAPI document.
//! - [`sweeper`]: releases expired holds in the background.
//! - [`app`]: [`Application::build`] and [`Application::run_until_stopped`].

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod store;
pub mod sweeper;

pub use app::Application;
pub use config::Config;
