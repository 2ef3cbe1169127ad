//! The fan-out worker: consumes the shared durable pull consumer and writes
//! timeline rows.
//!
//! Any number of worker processes share one consumer, so JetStream hands each
//! message to one of them. A worker pulls no more messages than it has free
//! slots (`FANOUT_CONCURRENCY`), processes them concurrently, and acks each
//! only after its rows are written. A worker that dies leaves its messages
//! unacked and JetStream redelivers them after `ack_wait`. Rows are keyed by
//! (user, post), so a redelivered message rewrites the same rows.
//!
//! # Failures
//!
//! A failure is transient or permanent, and only a permanent one is ever
//! given up on:
//!
//! - **Transient** (the store unavailable or timing out, any other store
//!   error the cluster does not refuse outright, NATS not taking a chunk): nak'ed with a capped exponential delay
//!   (`FANOUT_NAK_DELAY_MS` doubling up to `FANOUT_RETRY_MAX_DELAY_MS`) and
//!   retried for as long as it lasts, however many deliveries that takes.
//!   When the store is unavailable the worker also stops pulling new messages
//!   and probes the store with backoff, resuming by itself once it answers: an
//!   outage costs a few probes, not the deliveries of every message in the
//!   stream. `timeline_fanout_retries_total{cause}` counts the retries.
//! - **Permanent** (a payload that cannot be decoded, an unknown message
//!   version, a statement the cluster itself refuses as invalid): published to `<prefix>.dead.<kind>` (kept by a stream of its
//!   own, `<NATS_STREAM>_DEAD`, bounded by age and count), terminated and
//!   counted. `capctl dlq` lists and replays dead letters.
//!
//! While a message is processed the worker tells JetStream it is still at it
//! (`AckKind::Progress`, every third of the consumer's real `ack_wait`), so a long message (an
//! unfollow removing thousands of rows, a slow chunk) is neither redelivered
//! to another worker meanwhile nor charged a delivery.
//!
//! On shutdown the worker stops pulling, finishes and acks what it holds.
//!
//! # Work per message kind
//!
//! - `post`: if the author is a known celebrity, nothing (merged at read
//!   time). Otherwise read followers page by page (QUORUM) up to the celebrity
//!   threshold; above it, mark the author a celebrity and stop. A follower
//!   list that fits one chunk is written directly; a longer one is split into
//!   `chunk` messages, one per `FANOUT_CHUNK_SIZE` followers, published with
//!   ids derived from the followers they list (`post.<id>.chunk.<digest>`)
//!   and processed by any worker in parallel.
//! - `chunk`: write the post into each listed follower's timeline.
//! - `follow`: backfill the followee's `BACKFILL_POSTS` most recent posts,
//!   unless the follow was undone meanwhile (checked again after writing).
//! - `unfollow`: remove the followee's rows that can exist (posts since the
//!   follow, and the backfilled ones), unless the user follows them again.

//!
//! # Layout
//!
//! - this module: [`WorkerApp`] (the process: health endpoint, store set-up,
//!   the durable consumer) and the failure classification;
//! - `consume`: the JetStream machinery: pull with bounded slots, ack, nak
//!   with backoff, progress, dead letters, pausing while the store is down;
//! - `work`: what each message kind does (post, chunk, follow, unfollow).

mod consume;
mod work;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer;
use axum::Router;
use service_kit::health::{NatsJetStreamCheck, Readiness};
use service_kit::http::{Essentials, Server};
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;
use crate::publisher::{FanoutPublisher, connect_nats};
use crate::store::{StoreError, StoreSlot, TimelineStore};

/// Why processing a message failed, and so what becomes of it.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Retried for as long as it lasts; `cause` labels the retry metric.
    #[error("{cause}: {error}")]
    Transient { cause: Cause, error: String },
    /// Never going to work: dead-lettered at once.
    #[error("poison message: {0}")]
    Poison(String),
}

/// What a transient failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The store could not serve (down, timing out, overloaded).
    StoreUnavailable,
    /// Any other store error.
    StoreError,
    /// NATS did not take a chunk message.
    NatsPublish,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Self::StoreUnavailable => "store_unavailable",
            Self::StoreError => "store_error",
            Self::NatsPublish => "nats_publish",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        if error.is_permanent() {
            return Self::Poison(format!("the store refuses it: {error}"));
        }
        let cause = if error.is_unavailable() {
            Cause::StoreUnavailable
        } else {
            Cause::StoreError
        };
        Self::Transient {
            cause,
            error: error.to_string(),
        }
    }
}

impl From<crate::publisher::PublishError> for Failure {
    fn from(error: crate::publisher::PublishError) -> Self {
        Self::Transient {
            cause: Cause::NatsPublish,
            error: error.to_string(),
        }
    }
}

/// A built worker: its health/metrics listener bound, stores connecting in the background.
#[derive(Debug)]
pub struct WorkerApp {
    server: Server,
    store: StoreSlot,
    publisher: FanoutPublisher,
    config: WorkerConfig,
}

impl WorkerApp {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        config
            .cassandra
            .validate(&config.http)
            .map_err(anyhow::Error::msg)?;
        let nats = connect_nats(&config.stream.nats_url).await?;
        let publisher = FanoutPublisher::new(nats.clone(), config.stream.clone());
        let store = StoreSlot::default();
        let readiness = Readiness::new(config.http.readiness_timeout())
            .with(store.readiness_check())
            .with(NatsJetStreamCheck::new(nats));
        let essentials = Essentials {
            readiness,
            openapi: utoipa::openapi::OpenApiBuilder::new().build(),
            http: config.http.clone(),
        };
        let server = Server::bind(config.addr, Router::new(), essentials).await?;
        Ok(Self {
            server,
            store,
            publisher,
            config,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Sets up the store and the consumer (retrying until they answer), then
    /// consumes until `shutdown`; finishes the messages in hand before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let http = tokio::spawn(self.server.serve(shutdown.clone()));
        self.store
            .fill(
                self.config.cassandra.clone(),
                self.config.feed.clone(),
                shutdown.clone(),
            )
            .await;
        let Ok(store) = self.store.get() else {
            return Ok(()); // shut down before the store came up
        };
        let Some(consumer) = ensure_consumer(&self.publisher, &self.config, &shutdown).await else {
            return Ok(());
        };
        // Progress reports follow the consumer's real ack_wait (an existing
        // consumer that could not be updated keeps its own).
        let ack_wait = consumer.cached_info().config.ack_wait;
        tokio::spawn(poll_pending(
            consumer.clone(),
            Duration::from_millis(self.config.fanout.fanout_pending_poll_ms),
            shutdown.clone(),
        ));
        let worker = Arc::new(Worker {
            store: store.clone(),
            publisher: self.publisher,
            config: self.config,
            ack_wait,
            store_down: AtomicBool::new(false),
        });
        worker.consume(consumer, shutdown).await;
        http.await.context("joining the HTTP server")??;
        Ok(())
    }
}

/// Creates the stream and the durable consumer if missing, and updates the
/// consumer if its configuration changed, retrying until NATS answers. `None`
/// when shut down first.
async fn ensure_consumer(
    publisher: &FanoutPublisher,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Option<consumer::PullConsumer> {
    service_kit::retry::until_cancelled("the fan-out consumer", shutdown, || {
        create_or_update_consumer(publisher, config)
    })
    .await
}

async fn create_or_update_consumer(
    publisher: &FanoutPublisher,
    config: &WorkerConfig,
) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = publisher.ensure_stream().await?;
    let name = config.stream.nats_consumer.clone();
    let wanted = consumer::pull::Config {
        durable_name: Some(name.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.fanout.ack_wait(),
        // Given up on only by the worker, for permanent failures (see above).
        max_deliver: -1,
        filter_subject: publisher.subjects().all_work(),
        max_ack_pending: 10_000,
        ..Default::default()
    };
    let consumer: consumer::PullConsumer =
        stream.get_or_create_consumer(&name, wanted.clone()).await?;
    let current = &consumer.cached_info().config;
    let changed = current.ack_wait != wanted.ack_wait
        || current.max_ack_pending != wanted.max_ack_pending
        || current.filter_subject != wanted.filter_subject;
    if !changed {
        return Ok(consumer);
    }
    // Creating a durable consumer again with a new configuration updates it
    // in place (its position and pending messages stay).
    match stream.create_consumer(wanted).await {
        Ok(updated) => Ok(updated),
        Err(error) => {
            tracing::warn!(%error, "cannot update the fan-out consumer's configuration; keeping the existing one");
            Ok(consumer)
        }
    }
}

/// Publishes the consumer's pending counts as gauges until `shutdown`.
async fn poll_pending(
    mut consumer: consumer::PullConsumer,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match consumer.info().await {
            Ok(info) => {
                #[allow(clippy::cast_precision_loss)] // a gauge; precision beyond 2^52 is moot
                {
                    metrics::gauge!("timeline_fanout_consumer_pending")
                        .set(info.num_pending as f64);
                    metrics::gauge!("timeline_fanout_consumer_ack_pending")
                        .set(info.num_ack_pending as f64);
                }
            }
            Err(error) => tracing::debug!(%error, "cannot read consumer info"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

struct Worker {
    store: TimelineStore,
    publisher: FanoutPublisher,
    config: WorkerConfig,
    /// The consumer's ack_wait, as the server has it.
    ack_wait: Duration,
    /// Set when a message found the store unavailable: pull nothing new until
    /// a probe of the store succeeds.
    store_down: AtomicBool,
}
