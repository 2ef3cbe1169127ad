//! The timeline service: eventually consistent (AP) home timelines on
//! Cassandra, fanned out over NATS JetStream.
//!
//! # Layout
//!
//! - [`config`]: the one configuration struct, read at start-up.
//! - [`app`]: [`Application::build`] (session, NATS client, router) and
//!   [`Application::run_until_stopped`].

pub mod app;
pub mod config;

pub use app::Application;
pub use config::Config;
