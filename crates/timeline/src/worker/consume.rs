//! The JetStream side of the worker: pulling with bounded slots, acks, naks
//! with backoff, progress reports, dead letters, and pausing while the store
//! is unavailable.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Cause, Failure, Worker};
use crate::messages::{Envelope, MESSAGE_VERSION, Subjects};

/// Deliveries after which a message still failing transiently is logged as an
/// error rather than a warning (it is still retried).
const LOUD_AFTER_DELIVERIES: i64 = 10;

impl Worker {
    /// them concurrently, and on shutdown drains what it holds.
    pub(super) async fn consume(
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

    /// Probes the store with backoff until a quorum answers (`true`) or
    /// shutdown begins (`false`); the first probe comes after one backoff, so
    /// a pause always lasts a little. Nothing new is pulled meanwhile.
    async fn wait_for_store(&self, shutdown: &CancellationToken) -> bool {
        tracing::warn!("the store is unavailable; pulling nothing until a quorum answers");
        metrics::gauge!("timeline_fanout_paused").set(1.0);
        let mut delay = service_kit::retry::FIRST_DELAY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(delay) => {}
            }
            match self.store.quorum_answers().await {
                Ok(()) => break,
                Err(error) => tracing::debug!(%error, ?delay, "store probe failed"),
            }
            delay = (delay * 2).min(service_kit::retry::MAX_DELAY);
        }
        self.store_down.store(false, Ordering::Release);
        metrics::gauge!("timeline_fanout_paused").set(0.0);
        tracing::info!("a quorum answers again; resuming");
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
