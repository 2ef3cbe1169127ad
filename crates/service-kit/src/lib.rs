//! What every CAP service has, and nothing domain-specific.
//!
//! The inventory and timeline services differ in everything that matters to
//! their users, and agree on everything that matters to an operator. This crate
//! holds the second part so that both services look the same from outside:
//! the same logs, the same error shape, the same health, metrics and shutdown.
//!
//! # Layout
//!
//! - [`telemetry`]: `tracing` set-up (env filter from `RUST_LOG`, pretty or JSON).
//! - [`auth`]: bearer-token (JWT) authentication as the [`auth::Caller`] extractor, scopes,
//!   the per-subject write rate limit, and the development key pair and token minting.
//! - [`config`]: the configuration every HTTP service shares, as `clap` args with `env`.
//! - [`problem`]: RFC 9457 `application/problem+json` errors with `IntoResponse`.
//! - [`extract`]: JSON, query and path extractors whose rejections are problems.
//! - [`health`]: `/healthz`, and `/readyz` driven by pluggable [`health::ReadinessCheck`]s,
//!   with ready-made checks for PostgreSQL, Cassandra and NATS JetStream behind features.
//! - [`idempotency`]: the `Idempotency-Key` header, parsed the same way by every service.
//! - [`openapi`]: the kit's part of every OpenAPI document: schemas of the values it
//!   validates, built from the checks' own constants, and the statuses its extractors
//!   and layers answer on every route.
//! - [`metrics`]: the Prometheus recorder, `/metrics`, and per-route HTTP metrics.
//! - [`http`]: assembles a service's API router with the endpoints above and the
//!   tower-http layers (request id, trace, timeout, body limit), and serves it.
//! - [`validate`]: the validation error every domain type returns, naming the field,
//!   and the check on free text (no control characters).
//! - [`retry`]: retrying a start-up step with backoff until it works or the service stops.
//! - [`shutdown`]: SIGINT/SIGTERM turned into a cancellation token that servers
//!   and background workers both honour.

pub mod auth;
pub mod config;
pub mod extract;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod validate;

pub use problem::Problem;
