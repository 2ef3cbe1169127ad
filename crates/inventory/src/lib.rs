//! The inventory service: strongly consistent (CP) stock on PostgreSQL.
//!
//! # Layout
//!
//! - [`config`]: the one configuration struct, read at start-up.
//! - [`app`]: [`Application::build`] (pool, migrations, router) and
//!   [`Application::run_until_stopped`].

pub mod app;
pub mod config;

pub use app::Application;
pub use config::Config;
