//! Publishing fan-out work to JetStream, and the outbox that makes it
//! survive a NATS outage.
//!
//! The API writes each message into the `outbox` table in the same logged
//! batch as the change that caused it, then publishes it with its
//! `Nats-Msg-Id` and waits for the stream's ack, then deletes the outbox row.
//! If NATS is down, or the ack does not come within the publish timeout, the
//! request still succeeds and the row stays; [`relay_outbox`] re-publishes
//! rows older than a few seconds until they are acked. A message published
//! twice (the request's ack was lost, or two relays raced) is dropped by the
//! stream's duplicate window, and its effects are idempotent anyway.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use tokio_util::sync::CancellationToken;

use crate::config::{OutboxConfig, StreamConfig};
use crate::messages::{Envelope, FanoutMessage, Subjects};
use crate::store::{OUTBOX_SHARDS, OutboxEntry, TimelineStore};

/// Why a publish did not get its ack.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to NATS")]
    Disconnected,
    #[error("no publish ack within {0:?}")]
    Timeout(Duration),
    #[error("publishing: {0}")]
    Publish(#[from] jetstream::context::PublishError),
}

/// Publishes fan-out messages with their message ids and awaits the acks.
#[derive(Debug, Clone)]
pub struct FanoutPublisher {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    subjects: Subjects,
    config: StreamConfig,
}

impl FanoutPublisher {
    pub fn new(client: async_nats::Client, config: StreamConfig) -> Self {
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.publish_timeout());
        Self {
            client,
            jetstream,
            subjects: Subjects::new(config.nats_subject_prefix.clone()),
            config,
        }
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The outbox row that carries `message`.
    pub fn outbox_entry(&self, message: FanoutMessage) -> OutboxEntry {
        let subject = self.subjects.work(message.kind());
        let msg_id = message.message_id();
        let payload = Envelope::new(message).to_bytes().to_vec();
        OutboxEntry::new(
            self.config.nats_subject_prefix.clone(),
            subject,
            msg_id,
            payload,
        )
    }

    /// Creates the stream if it does not exist (work-queue retention, file storage).
    pub async fn ensure_stream(&self) -> Result<stream::Stream, async_nats::Error> {
        let stream = self
            .jetstream
            .get_or_create_stream(stream::Config {
                name: self.config.nats_stream.clone(),
                subjects: vec![self.subjects.all_work(), self.subjects.all_dead()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await?;
        Ok(stream)
    }

    /// Publishes one message and waits for the stream's ack, bounded by the publish timeout.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: bytes::Bytes,
        headers: Option<HeaderMap>,
    ) -> Result<(), PublishError> {
        if !self.is_connected() {
            return Err(PublishError::Disconnected);
        }
        let timeout = self.config.publish_timeout();
        let mut publish = PublishMessage::build().payload(payload);
        if let Some(headers) = headers {
            publish = publish.headers(headers);
        }
        let publish = publish.message_id(msg_id);
        let acked = async {
            self.jetstream
                .send_publish(subject.to_owned(), publish)
                .await?
                .await?;
            Ok::<(), jetstream::context::PublishError>(())
        };
        tokio::time::timeout(timeout, acked)
            .await
            .map_err(|_| PublishError::Timeout(timeout))??;
        Ok(())
    }

    pub async fn publish_entry(&self, entry: &OutboxEntry) -> Result<(), PublishError> {
        self.publish(
            &entry.subject,
            &entry.msg_id,
            bytes::Bytes::from(entry.payload.clone()),
            None,
        )
        .await
    }

    /// Publishes an entry already in the outbox and deletes its row once acked.
    /// A failure is logged, not returned: the relay will retry.
    pub async fn publish_and_clear(&self, store: &TimelineStore, entry: &OutboxEntry) {
        match self.publish_entry(entry).await {
            Ok(()) => {
                metrics::counter!("timeline_fanout_published_total").increment(1);
                if let Err(error) = store.delete_outbox(entry).await {
                    tracing::warn!(%error, msg_id = %entry.msg_id, "outbox row kept; the relay will re-publish it");
                }
            }
            Err(error) => {
                metrics::counter!("timeline_outbox_deferred_total").increment(1);
                tracing::warn!(%error, msg_id = %entry.msg_id, "fan-out left in the outbox for the relay");
            }
        }
    }
}

/// Re-publishes outbox rows older than `relay_after` until `shutdown`.
pub async fn relay_outbox(
    store: crate::app::StoreSlot,
    publisher: FanoutPublisher,
    config: OutboxConfig,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.relay_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream_ready = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !publisher.is_connected() {
            continue;
        }
        if !stream_ready {
            match publisher.ensure_stream().await {
                Ok(_) => stream_ready = true,
                Err(error) => {
                    tracing::warn!(%error, "cannot create the fan-out stream yet");
                    continue;
                }
            }
        }
        let Ok(store) = store.get() else { continue };
        for shard in 0..OUTBOX_SHARDS {
            let due = match store
                .due_outbox(
                    &publisher.config.nats_subject_prefix,
                    shard,
                    config.relay_after(),
                    100,
                )
                .await
            {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the outbox");
                    break;
                }
            };
            for entry in due {
                match publisher.publish_entry(&entry).await {
                    Ok(()) => {
                        metrics::counter!("timeline_outbox_relayed_total").increment(1);
                        if let Err(error) = store.delete_outbox(&entry).await {
                            tracing::warn!(%error, "cannot delete a relayed outbox row");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay cannot publish; retrying later");
                        // The stream may be gone (a fresh server): re-create it next tick.
                        stream_ready = false;
                        break;
                    }
                }
            }
            if !stream_ready {
                break;
            }
        }
    }
}
