//! The dead-letter stream of one deployment: connecting, and walking it by
//! sequence without consuming anything.

use super::*;

/// The dead-letter stream of one deployment, connected.
pub(super) struct DeadLetterStream {
    pub(super) stream: stream::Stream,
    pub(super) subjects: Subjects,
    pub(super) name: String,
    /// Subjects a walk reads: every dead letter, or those of one kind.
    pub(super) filter: String,
    /// The stream's first and last sequences when the walk began.
    pub(super) first: u64,
    pub(super) last: u64,
    /// Messages in the stream when the walk began.
    pub(super) messages: u64,
}

impl DeadLetterStream {
    pub(super) async fn open(
        client: &async_nats::Client,
        config: &StreamConfig,
        kind: Option<&str>,
    ) -> anyhow::Result<Self> {
        let name = config.dead_letter_stream();
        let mut stream = jetstream::new(client.clone())
            .get_stream(&name)
            .await
            .with_context(|| {
                format!(
                    "opening the dead-letter stream {name} (is NATS_STREAM `{}` right?)",
                    config.nats_stream
                )
            })?;
        let state = stream
            .info()
            .await
            .with_context(|| format!("reading the state of {name}"))?
            .state
            .clone();
        let subjects = Subjects::new(config.nats_subject_prefix.clone());
        let filter = kind.map_or_else(|| subjects.all_dead(), |kind| subjects.dead(kind));
        Ok(Self {
            stream,
            subjects,
            name,
            filter,
            first: state.first_sequence.max(1),
            last: state.last_sequence,
            messages: state.messages,
        })
    }

    /// The first selected dead letter at or after `sequence`, up to the last
    /// sequence of the start; `None` past it.
    pub(super) async fn next_from(&self, sequence: u64) -> anyhow::Result<Option<StreamMessage>> {
        if sequence > self.last {
            return Ok(None);
        }
        match self
            .stream
            .get_first_raw_message_by_subject(&self.filter, sequence)
            .await
        {
            Ok(message) if message.sequence <= self.last => Ok(Some(message)),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(error)
                .with_context(|| format!("reading {} from sequence {sequence}", self.name)),
        }
    }

    /// Deletes the dead letter at `sequence`. One already gone (replayed by a
    /// concurrent run, or aged out) counts as deleted.
    pub(super) async fn delete(&self, sequence: u64) -> anyhow::Result<()> {
        let deleted = self.stream.delete_message(sequence).await;
        if matches!(deleted, Ok(true)) {
            return Ok(());
        }
        match self.stream.get_raw_message(sequence).await {
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(()),
            _ => {
                let why = deleted.map_or_else(|error| error.to_string(), |_| "refused".to_owned());
                anyhow::bail!("deleting it: {why}")
            }
        }
    }
}

/// Connects to NATS, failing at once when it does not answer.
pub(super) async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    // One TLS provider (ring) for the whole workspace; a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(timeline::publisher::nats_servers(url))
        .await
        .with_context(|| {
            format!("NATS is not reachable at {url} (is it running? `make stack` starts it)")
        })
}
