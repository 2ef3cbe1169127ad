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

use crate::config::StreamConfig;
use crate::messages::{Envelope, FanoutMessage, Subjects};
use crate::store::{DEFAULT_OUTBOX_SHARDS, OutboxEntry, TimelineStore};

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
    /// Shards an outbox row may go to (`OUTBOX_SHARDS`; the API sets it).
    outbox_shards: i32,
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
            outbox_shards: DEFAULT_OUTBOX_SHARDS,
        }
    }

    /// Spreads outbox rows over `shards` shards.
    pub fn with_outbox_shards(mut self, shards: i32) -> Self {
        self.outbox_shards = shards.max(1);
        self
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
            self.outbox_shards,
        )
    }

    /// Creates the work stream (work-queue retention, file storage) and the
    /// dead-letter stream (limits retention: bounded by age and count) if
    /// they do not exist, each with `NATS_STREAM_REPLICAS` copies. A work
    /// stream made by an older build, which also kept the dead letters, gives
    /// those subjects up first. A stream with another replica count is scaled
    /// to this one in a JetStream cluster; if the cluster refuses (too few
    /// servers up), it keeps its count and a warning says so. A single server
    /// is never asked: it would accept the change and then fail to load the
    /// stream at its next start, so a warning is all it gets.
    pub async fn ensure_stream(&self) -> Result<stream::Stream, async_nats::Error> {
        let replicas = usize::from(self.config.nats_stream_replicas);
        let work_subjects = vec![self.subjects.all_work()];
        let mut stream = self
            .jetstream
            .get_or_create_stream(stream::Config {
                name: self.config.nats_stream.clone(),
                subjects: work_subjects.clone(),
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await?;
        let mut work_info = stream.info().await?.clone();
        if work_info.config.subjects != work_subjects {
            work_info = self
                .jetstream
                .update_stream(stream::Config {
                    subjects: work_subjects,
                    ..work_info.config
                })
                .await?;
        }
        let dead_letters = self
            .jetstream
            .get_or_create_stream(stream::Config {
                name: self.config.dead_letter_stream(),
                subjects: vec![self.subjects.all_dead()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_age: self.config.dead_letter_max_age(),
                max_messages: self.config.dead_letter_max_msgs,
                discard: stream::DiscardPolicy::Old,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await?;
        for info in [work_info, dead_letters.cached_info().clone()] {
            let current = info.config.num_replicas;
            if current == replicas {
                continue;
            }
            let name = info.config.name.clone();
            let clustered = info
                .cluster
                .as_ref()
                .and_then(|cluster| cluster.name.as_deref())
                .is_some_and(|cluster| !cluster.is_empty());
            if !clustered {
                tracing::warn!(
                    stream = %name, current, wanted = replicas,
                    "a single NATS server keeps one copy; the stream keeps its replica count"
                );
                continue;
            }
            match self
                .jetstream
                .update_stream(stream::Config {
                    num_replicas: replicas,
                    ..info.config
                })
                .await
            {
                Ok(_) => tracing::info!(
                    stream = %name, from = current, to = replicas,
                    "stream replicas changed"
                ),
                Err(error) => tracing::warn!(
                    %error, stream = %name, current, wanted = replicas,
                    "stream keeps its replica count"
                ),
            }
        }
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

/// A NATS client for the API and the worker, connecting in the background:
/// both start (and report not-ready) while NATS is away, as an AP service should.
/// `url` may list the servers of a cluster, comma-separated; the client picks
/// any that answers and moves to another when it goes.
pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    // One TLS provider for the whole workspace (ring); a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats_servers(url))
        .await
        .map_err(|error| anyhow::anyhow!("connecting to NATS at {url}: {error}"))
}

/// The servers of a `NATS_URL`: one URL, or several separated by commas.
pub fn nats_servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}
