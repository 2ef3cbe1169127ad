//! The timeline service: eventually consistent (AP) home timelines on
//! Cassandra, fanned out over NATS JetStream.
//!
//! Posting writes the post, the author's per-author row and the author's own
//! timeline row at QUORUM (read-your-writes for the author), together with an
//! outbox row, in one logged batch; then the fan-out message is published to
//! JetStream. Workers ([`worker`]) write the post into each follower's
//! timeline. Authors above a follower threshold are not fanned out: their
//! posts are merged into their followers' timelines at read time.
//!
//! The acting user is the bearer token's subject (`service_kit::auth`): one
//! posts, follows and unfollows only as oneself and reads only one's own home
//! timeline (`403` otherwise, checked before anything is written); posts and
//! the follow lists are public reads.
//!
//! # Layout
//!
//! - [`config`]: the configuration structs of the API and of the worker.
//! - [`domain`]: validated values (`UserId`, `PostId`, `Content`, …) and time buckets.
//! - [`migrate`]: the CQL migrator (`migrations/cassandra/*.cql`).
//! - [`store`]: [`store::TimelineStore`], every CQL statement, prepared once.
//! - [`messages`]: the versioned fan-out messages and their subjects.
//! - [`publisher`]: JetStream publishing, and the outbox row of each message.
//! - [`relay`]: the outbox relay, sharing the outbox's shards among the API processes.
//! - [`cursor`]: opaque page cursors.
//! - [`api`]: the `/v1` handlers and their OpenAPI description.
//! - [`error`]: the API's error type, rendered as problem+json.
//! - [`app`]: [`Application::build`] and [`Application::run_until_stopped`].
//! - [`worker`]: the fan-out worker ([`worker::WorkerApp`]), run by the
//!   `timeline-worker` binary.

pub mod api;
pub mod app;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod error;
pub mod messages;
pub mod migrate;
pub mod publisher;
pub mod relay;
pub mod store;
pub mod worker;

pub use app::Application;
pub use config::{Config, WorkerConfig};
pub use worker::WorkerApp;
