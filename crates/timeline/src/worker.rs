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
//!   error, NATS not taking a chunk): nak'ed with a capped exponential delay
//!   (`FANOUT_NAK_DELAY_MS` doubling up to `FANOUT_RETRY_MAX_DELAY_MS`) and
//!   retried for as long as it lasts, however many deliveries that takes.
//!   When the store is unavailable the worker also stops pulling new messages
//!   and probes the store with backoff, resuming by itself once it answers: an
//!   outage costs a few probes, not the deliveries of every message in the
//!   stream. `timeline_fanout_retries_total{cause}` counts the retries.
//! - **Permanent** (a payload that cannot be decoded, an unknown message
//!   version): published to `<prefix>.dead.<kind>` (kept by a stream of its
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
//! - `unfollow`: remove the followee's posts still within the timeline TTL,
//!   unless the user follows them again.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use axum::Router;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use service_kit::health::{NatsJetStreamCheck, Readiness};
use service_kit::http::{Essentials, service_router};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;
use crate::app::{StoreCheck, StoreSlot};
use crate::domain::UserId;
use crate::messages::{Envelope, FanoutMessage, MESSAGE_VERSION, PostPayload, Subjects};
use crate::publisher::{FanoutPublisher, connect_nats};
use crate::store::{PostRecord, StoreError, TimelineStore};

/// Most posts an unfollow removes (those within the TTL window, newest first).
const UNFOLLOW_REMOVE_LIMIT: usize = 10_000;

/// Deliveries after which a message still failing transiently is logged as an
/// error rather than a warning (it is still retried).
const LOUD_AFTER_DELIVERIES: i64 = 10;

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
    listener: TcpListener,
    router: Router,
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
            .with(StoreCheck(store.clone()))
            .with(NatsJetStreamCheck::new(nats));
        let router = service_router(
            Router::new(),
            Essentials {
                readiness,
                openapi: utoipa::openapi::OpenApiBuilder::new().build(),
                http: config.http.clone(),
            },
        );
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        Ok(Self {
            listener,
            router,
            store,
            publisher,
            config,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Sets up the store and the consumer (retrying until they answer), then
    /// consumes until `shutdown`; finishes the messages in hand before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grace = self.config.http.shutdown_grace();
        let http = tokio::spawn(service_kit::http::serve(
            self.listener,
            self.router,
            shutdown.clone(),
            grace,
        ));
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
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = async {
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
            let mut consumer: consumer::PullConsumer =
                stream.get_or_create_consumer(&name, wanted.clone()).await?;
            let current = &consumer.cached_info().config;
            let changed = current.ack_wait != wanted.ack_wait
                || current.max_ack_pending != wanted.max_ack_pending
                || current.filter_subject != wanted.filter_subject;
            if changed {
                // Creating a durable consumer again with a new configuration
                // updates it in place (its position and pending messages stay).
                match stream.create_consumer(wanted).await {
                    Ok(updated) => consumer = updated,
                    Err(error) => {
                        tracing::warn!(%error, "cannot update the fan-out consumer's configuration; keeping the existing one")
                    }
                }
            }
            Ok::<_, async_nats::Error>(consumer)
        };
        match attempt.await {
            Ok(consumer) => return Some(consumer),
            Err(error) => tracing::warn!(%error, ?delay, "fan-out consumer not ready; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
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

impl Worker {
    /// Pulls at most as many messages as there are free slots, processes
    /// them concurrently, and on shutdown drains what it holds.
    async fn consume(
        self: Arc<Self>,
        consumer: consumer::PullConsumer,
        shutdown: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(self.config.fanout.concurrency()));
        let mut tasks = JoinSet::new();
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            if self.store_down.load(Ordering::Acquire) && !self.wait_for_store(&shutdown).await {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tasks.join_next() => continue,
                }
            }
            let batch = tokio::select! {
                () = shutdown.cancelled() => break,
                batch = consumer.batch().max_messages(free).expires(Duration::from_secs(1)).messages() => batch,
            };
            let mut messages = match batch {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "cannot pull fan-out work; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            };
            // Messages of a batch are in hand once pulled: process them even if
            // shutdown begins meanwhile (the batch expires within a second).
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let worker = self.clone();
                        tasks.spawn(async move {
                            worker.handle(message).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        tracing::debug!(%error, "pull batch ended");
                        break;
                    }
                }
            }
        }
        tracing::info!(
            in_hand = tasks.len(),
            "worker stopping; finishing messages in hand"
        );
        while tasks.join_next().await.is_some() {}
    }

    /// Probes the store with backoff until it answers (`true`) or shutdown
    /// begins (`false`). Nothing new is pulled meanwhile.
    async fn wait_for_store(&self, shutdown: &CancellationToken) -> bool {
        tracing::warn!("the store is unavailable; pulling nothing until it answers");
        metrics::gauge!("timeline_fanout_paused").set(1.0);
        let mut delay = Duration::from_millis(250);
        loop {
            match self.store.ping().await {
                Ok(()) => break,
                Err(error) => tracing::debug!(%error, ?delay, "store probe failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        self.store_down.store(false, Ordering::Release);
        metrics::gauge!("timeline_fanout_paused").set(0.0);
        tracing::info!("the store answers again; resuming");
        true
    }

    async fn handle(&self, message: jetstream::Message) {
        let kind = Subjects::kind_of(message.subject.as_str()).to_owned();
        let delivered = message.info().map_or(1, |info| info.delivered);
        metrics::counter!("timeline_fanout_deliveries_total", "kind" => kind.clone()).increment(1);
        if delivered > 1 {
            metrics::counter!("timeline_fanout_redeliveries_total", "kind" => kind.clone())
                .increment(1);
        }
        let outcome = match Envelope::from_bytes(&message.payload) {
            Ok(envelope) if envelope.v == MESSAGE_VERSION => {
                let every = self.ack_wait / 3;
                with_progress(self.process(envelope.message), every, || async {
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(%error, kind, "cannot report progress");
                    }
                })
                .await
            }
            Ok(envelope) => Err(Failure::Poison(format!("unknown version {}", envelope.v))),
            Err(error) => Err(Failure::Poison(error.to_string())),
        };
        let result = match outcome {
            Ok(()) => message.ack().await,
            Err(failure @ Failure::Poison(_)) => self.dead_letter(&message, &kind, &failure).await,
            Err(Failure::Transient { cause, error }) => {
                metrics::counter!("timeline_fanout_retries_total", "kind" => kind.clone(), "cause" => cause.as_str())
                    .increment(1);
                if cause == Cause::StoreUnavailable {
                    self.store_down.store(true, Ordering::Release);
                }
                let delay = self.config.fanout.nak_delay(delivered);
                if delivered >= LOUD_AFTER_DELIVERIES {
                    tracing::error!(%cause, %error, kind, delivered, ?delay, "fan-out keeps failing; will be redelivered");
                } else {
                    tracing::warn!(%cause, %error, kind, delivered, ?delay, "fan-out failed; will be redelivered");
                }
                message.ack_with(AckKind::Nak(Some(delay))).await
            }
        };
        if let Err(error) = result {
            // The message will come back after ack_wait; its effects are idempotent.
            tracing::warn!(%error, kind, "cannot acknowledge a fan-out message");
        }
    }

    /// Publishes the payload to the dead-letter subject, then terminates the message.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        kind: &str,
        failure: &Failure,
    ) -> Result<(), async_nats::Error> {
        tracing::error!(%failure, kind, "fan-out message dead-lettered");
        let sequence = message.info().map_or(0, |info| info.stream_sequence);
        let mut headers = HeaderMap::new();
        headers.insert(
            "Timeline-Dead-Reason",
            failure.to_string().replace(['\r', '\n'], " ").as_str(),
        );
        headers.insert("Timeline-Original-Subject", message.subject.as_str());
        let published = self
            .publisher
            .publish(
                &self.publisher.subjects().dead(kind),
                &format!("dead.{sequence}"),
                message.payload.clone(),
                Some(headers),
            )
            .await;
        match published {
            Ok(()) => {
                metrics::counter!("timeline_fanout_dead_letters_total", "kind" => kind.to_owned())
                    .increment(1);
                message.ack_with(AckKind::Term).await
            }
            Err(error) => {
                // Keep the message; dead-lettering is retried on the next delivery.
                tracing::warn!(%error, "cannot publish a dead letter");
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
            }
        }
    }

    async fn process(&self, message: FanoutMessage) -> Result<(), Failure> {
        match message {
            FanoutMessage::Post { post } => self.fan_out_post(post).await,
            FanoutMessage::Chunk {
                post, followers, ..
            } => {
                let record = record(&post);
                self.write_rows(&record, &followers).await?;
                observe_lag(&post);
                Ok(())
            }
            FanoutMessage::Follow {
                follower, followee, ..
            } => self.backfill(&follower, &followee).await,
            FanoutMessage::Unfollow {
                follower,
                followee,
                since,
                ..
            } => self.remove_followee(&follower, &followee, since).await,
        }
    }

    async fn fan_out_post(&self, post: PostPayload) -> Result<(), Failure> {
        let author = &post.author_id;
        if self.store.is_celebrity(author).await? {
            metrics::counter!("timeline_fanout_celebrity_skips_total").increment(1);
            return Ok(());
        }
        let threshold = self.config.feed.celebrity_threshold;
        let chunk_size = self.config.fanout.chunk_size();
        let mut followers = Vec::new();
        let mut paging_state = None;
        loop {
            let page = self
                .store
                .followers_for_fanout(
                    author,
                    i32::try_from(chunk_size).unwrap_or(500),
                    paging_state,
                )
                .await?;
            followers.extend(page.items);
            if followers.len() > threshold {
                tracing::info!(%author, threshold, "author passed the celebrity threshold; merged at read time from now on");
                self.store.mark_celebrity(author).await?;
                metrics::counter!("timeline_fanout_celebrity_skips_total").increment(1);
                return Ok(());
            }
            match page.paging_state {
                Some(state) => paging_state = Some(state),
                None => break,
            }
        }
        if followers.len() <= chunk_size {
            self.write_rows(&record(&post), &followers).await?;
            observe_lag(&post);
            return Ok(());
        }
        // Publish every chunk, then wait for all the acks.
        let chunks = followers
            .chunks(chunk_size)
            .enumerate()
            .map(|(index, chunk)| {
                let message = FanoutMessage::Chunk {
                    post: post.clone(),
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    followers: chunk.to_vec(),
                };
                let subject = self.publisher.subjects().work(message.kind());
                let msg_id = message.message_id();
                let payload = Envelope::new(message).to_bytes();
                async move {
                    self.publisher
                        .publish(&subject, &msg_id, payload, None)
                        .await
                }
            });
        let published = futures::future::join_all(chunks).await;
        let count = published.len();
        published.into_iter().collect::<Result<Vec<()>, _>>()?;
        metrics::counter!("timeline_fanout_chunks_total").increment(count as u64);
        Ok(())
    }

    /// Writes `post` into each user's timeline, a bounded number at a time.
    async fn write_rows(&self, post: &PostRecord, users: &[UserId]) -> Result<(), StoreError> {
        futures::stream::iter(users.iter().cloned())
            .map(|user| {
                let (store, post) = (self.store.clone(), post.clone());
                async move { store.write_timeline_row(&user, &post).await }
            })
            .buffer_unordered(self.config.fanout.write_concurrency())
            .try_for_each(|_| async { Ok(()) })
            .await?;
        metrics::counter!("timeline_fanout_rows_written_total").increment(users.len() as u64);
        Ok(())
    }

    async fn backfill(&self, follower: &UserId, followee: &UserId) -> Result<(), Failure> {
        if !self.store.is_following(follower, followee).await?
            || self.store.is_celebrity(followee).await?
        {
            return Ok(()); // undone meanwhile, or merged at read time
        }
        let posts = self
            .store
            .recent_posts(followee, self.config.feed.backfill_posts)
            .await?;
        for post in &posts {
            self.store.write_timeline_row(follower, post).await?;
        }
        // An unfollow may have been processed while we wrote: undo.
        if !self.store.is_following(follower, followee).await? {
            for post in &posts {
                self.store.delete_timeline_row(follower, post).await?;
            }
        }
        metrics::counter!("timeline_backfilled_posts_total").increment(posts.len() as u64);
        Ok(())
    }

    /// Clean-up after an unfollow (reads already leave the followee out):
    /// deletes only rows that can exist, the followee's posts since the follow
    /// was made and the backfilled ones just before it, so an unfollow never
    /// writes tombstones for rows that were never there.
    async fn remove_followee(
        &self,
        follower: &UserId,
        followee: &UserId,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), Failure> {
        if self.store.is_following(follower, followee).await? {
            return Ok(()); // followed again since
        }
        let posts = self
            .store
            .recent_posts(followee, UNFOLLOW_REMOVE_LIMIT)
            .await?;
        let backfill = self.config.feed.backfill_posts;
        let (after, before): (Vec<_>, Vec<_>) = posts
            .into_iter()
            .partition(|post| since.is_some_and(|since| post.created_at >= since));
        let removable: Vec<PostRecord> = after
            .into_iter()
            .chain(before.into_iter().take(backfill))
            .collect();
        metrics::counter!("timeline_unfollow_rows_removed_total").increment(removable.len() as u64);
        futures::stream::iter(removable)
            .map(|post| {
                let (store, follower) = (self.store.clone(), follower.clone());
                async move { store.delete_timeline_row(&follower, &post).await }
            })
            .buffer_unordered(self.config.fanout.write_concurrency())
            .try_for_each(|()| async { Ok(()) })
            .await?;
        Ok(())
    }
}

/// Runs `work` to completion, awaiting `progress` every `every` meanwhile.
async fn with_progress<T, P, F>(
    work: impl Future<Output = T>,
    every: Duration,
    mut progress: P,
) -> T
where
    P: FnMut() -> F,
    F: Future<Output = ()>,
{
    let every = every.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticks.tick() => progress().await,
        }
    }
}

fn record(post: &PostPayload) -> PostRecord {
    PostRecord {
        id: post.id,
        author_id: post.author_id.as_str().to_owned(),
        content: post.content.clone(),
        created_at: post.created_at,
    }
}

/// Post accepted → its rows written.
fn observe_lag(post: &PostPayload) {
    let lag = (Utc::now() - post.created_at).num_milliseconds().max(0);
    #[allow(clippy::cast_precision_loss)] // milliseconds fit an f64 exactly
    metrics::histogram!("timeline_fanout_lag_seconds").record(lag as f64 / 1000.0);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn long_work_reports_progress_until_it_ends() {
        let reports = AtomicUsize::new(0);
        let every = Duration::from_millis(100);
        let output = with_progress(
            async {
                tokio::time::sleep(Duration::from_millis(450)).await;
                7
            },
            every,
            || async {
                reports.fetch_add(1, Ordering::SeqCst);
            },
        )
        .await;
        assert_eq!(output, 7);
        let reported = reports.load(Ordering::SeqCst);
        assert!((3..=4).contains(&reported), "{reported} progress reports");

        // Work done before the first period reports nothing.
        let quick = with_progress(async { 1 }, every, || async {
            reports.fetch_add(100, Ordering::SeqCst);
        })
        .await;
        assert_eq!(quick, 1);
        assert_eq!(reports.load(Ordering::SeqCst), reported);
    }
}
