//! `capctl dlq`: the fan-out's dead letters, listed and replayed.
//!
//! The worker moves a message it gave up on to `<prefix>.dead.<kind>`, kept by
//! the stream `<NATS_STREAM>_DEAD` with two headers: the reason
//! (`Timeline-Dead-Reason`) and the work subject it came from
//! (`Timeline-Original-Subject`). The payload is the original message.
//!
//! - `list` reads the dead letters one by one with the stream's message-get
//!   API, which neither consumes nor deletes anything.
//! - `replay` publishes each payload to its work subject and waits for the
//!   stream's ack, then deletes the dead letter, so that a second replay finds
//!   nothing to do twice. The message id is derived from the dead letter
//!   (`replay.<sequence>.<stored at, ms>`): not the original's id, which the
//!   work stream's duplicate window could still remember and drop, and the
//!   same id for two replays racing over one letter, which the window then
//!   keeps once. Timeline rows are keyed by (user, post), so work that is
//!   done twice anyway writes the same rows.
//!
//! Both walk the dead stream from its first sequence up to its last sequence
//! as of the start: letters that arrive meanwhile (a replayed message failing
//! again) wait for the next run, so a run always ends.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, message::StreamMessage, stream};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use timeline::config::StreamConfig;
use timeline::messages::{Envelope, FanoutMessage, Subjects};
use timeline::publisher::FanoutPublisher;

mod letters;
#[cfg(test)]
mod tests;

use letters::{DeadLetterStream, connect};

/// The header with the reason the worker gave up on a message.
const REASON_HEADER: &str = "Timeline-Dead-Reason";
/// The header with the work subject a dead letter came from.
const ORIGINAL_SUBJECT_HEADER: &str = "Timeline-Original-Subject";
/// The kinds of fan-out work, the last token of their subjects.
const KINDS: [&str; 4] = ["post", "chunk", "follow", "unfollow"];
/// How long connecting to NATS may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The dead letters of the timeline fan-out.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqAction {
    /// List dead letters, oldest first, without consuming them.
    List(Selection),
    /// Publish dead letters again to their work subjects, then delete them.
    Replay(Selection),
}

/// The deployment, and which of its dead letters.
#[derive(Debug, Clone, clap::Args)]
#[command(
    mut_arg("nats_consumer", |arg| arg.hide(true)),
    mut_arg("dead_letter_max_age_hours", |arg| arg.hide(true)),
    mut_arg("dead_letter_max_msgs", |arg| arg.hide(true)),
    mut_arg("nats_publish_timeout_ms", |arg| {
        arg.help("How long `replay` waits for each publish's ack, in milliseconds")
    }),
)]
pub struct Selection {
    /// The stream flags and variables of the services themselves.
    #[command(flatten)]
    pub stream: StreamConfig,
    /// Only dead letters of this kind.
    #[arg(long, value_parser = KINDS)]
    pub kind: Option<String>,
    /// At most this many dead letters, the oldest.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// One dead letter, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    pub kind: String,
    /// The work subject it came from (the worker's header), if recorded.
    pub original_subject: Option<String>,
    pub reason: Option<String>,
    /// When the worker dead-lettered it.
    pub dead_at: Option<DateTime<Utc>>,
    /// The fan-out message id, when the payload is a message this build reads.
    pub message_id: Option<String>,
    /// The post it carries (`post` and `chunk` messages).
    pub post_id: Option<String>,
    /// Size of the payload.
    pub bytes: usize,
}

impl DeadLetter {
    fn read(message: &StreamMessage) -> Self {
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
        };
        let decoded = Envelope::from_bytes(&message.payload).ok();
        let post_id = decoded
            .as_ref()
            .and_then(|envelope| match &envelope.message {
                FanoutMessage::Post { post } | FanoutMessage::Chunk { post, .. } => {
                    Some(post.id.to_string())
                }
                FanoutMessage::Follow { .. } | FanoutMessage::Unfollow { .. } => None,
            });
        Self {
            sequence: message.sequence,
            kind: Subjects::kind_of(message.subject.as_str()).to_owned(),
            original_subject: header(ORIGINAL_SUBJECT_HEADER),
            reason: header(REASON_HEADER),
            dead_at: i64::try_from(message.time.unix_timestamp_nanos())
                .ok()
                .map(DateTime::from_timestamp_nanos),
            message_id: decoded.map(|envelope| envelope.message.message_id()),
            post_id,
            bytes: message.payload.len(),
        }
    }

    /// Where replaying sends it: the recorded work subject when it is one of
    /// this deployment's, otherwise the work subject of its kind.
    pub fn work_subject(&self, subjects: &Subjects) -> String {
        self.original_subject
            .clone()
            .filter(|original| *original == subjects.work(Subjects::kind_of(original)))
            .unwrap_or_else(|| subjects.work(&self.kind))
    }

    /// The message id its replay is published with.
    pub fn replay_id(&self) -> String {
        let stored_at = self.dead_at.map_or(0, |at| at.timestamp_millis());
        format!("replay.{}.{stored_at}", self.sequence)
    }
}

/// What `dlq list` found.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterList {
    pub stream: String,
    pub kind: Option<String>,
    /// Dead letters listed.
    pub total: usize,
    /// Dead letters in the stream, of every kind.
    pub in_stream: u64,
    pub letters: Vec<DeadLetter>,
}

/// One dead letter `dlq replay` published again.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub sequence: u64,
    pub kind: String,
    /// The work subject it was published to.
    pub subject: String,
    /// The message id it was published with.
    pub replay_id: String,
    pub message_id: Option<String>,
}

/// What `dlq replay` did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub stream: String,
    pub kind: Option<String>,
    pub replayed: usize,
    pub letters: Vec<Replayed>,
}

/// Lists the selected dead letters, oldest first, leaving them in place.
pub async fn list(selection: &Selection) -> anyhow::Result<DeadLetterList> {
    let client = connect(&selection.stream.nats_url).await?;
    let dead =
        DeadLetterStream::open(&client, &selection.stream, selection.kind.as_deref()).await?;
    let mut letters = Vec::new();
    let mut next = dead.first;
    while !reached(selection.limit, letters.len()) {
        let Some(message) = dead.next_from(next).await? else {
            break;
        };
        next = message.sequence + 1;
        letters.push(DeadLetter::read(&message));
    }
    Ok(DeadLetterList {
        stream: dead.name,
        kind: selection.kind.clone(),
        total: letters.len(),
        in_stream: dead.messages,
        letters,
    })
}

/// Publishes the selected dead letters to their work subjects, oldest first,
/// deleting each once the work stream has acked it.
pub async fn replay(selection: &Selection) -> anyhow::Result<ReplayReport> {
    let client = connect(&selection.stream.nats_url).await?;
    let dead =
        DeadLetterStream::open(&client, &selection.stream, selection.kind.as_deref()).await?;
    let publisher = FanoutPublisher::new(client, selection.stream.clone());
    let mut letters = Vec::new();
    let mut next = dead.first;
    while !reached(selection.limit, letters.len()) {
        let replayed = letters.len();
        let in_progress = || format!("after replaying {replayed} dead letter{}", plural(replayed));
        let Some(message) = dead.next_from(next).await.with_context(in_progress)? else {
            break;
        };
        next = message.sequence + 1;
        let letter = DeadLetter::read(&message);
        let subject = letter.work_subject(&dead.subjects);
        let replay_id = letter.replay_id();
        publisher
            .publish(&subject, &replay_id, message.payload, None)
            .await
            .with_context(|| format!("publishing dead letter {} to {subject}", letter.sequence))
            .with_context(in_progress)?;
        dead.delete(letter.sequence)
            .await
            .with_context(|| {
                format!(
                    "dead letter {} was published again but is still in {} (replaying it again is safe)",
                    letter.sequence, dead.name
                )
            })
            .with_context(in_progress)?;
        letters.push(Replayed {
            sequence: letter.sequence,
            kind: letter.kind,
            subject,
            replay_id,
            message_id: letter.message_id,
        });
    }
    Ok(ReplayReport {
        stream: dead.name,
        kind: selection.kind.clone(),
        replayed: letters.len(),
        letters,
    })
}

fn reached(limit: Option<u64>, count: usize) -> bool {
    limit.is_some_and(|limit| u64::try_from(count).unwrap_or(u64::MAX) >= limit)
}

fn dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dead_at = self
            .dead_at
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true));
        write!(
            f,
            "{:>8}  {:<8}  {:<20}  {:<28}  {:<46}  {}",
            self.sequence,
            self.kind,
            dash(dead_at.as_deref()),
            dash(self.original_subject.as_deref()),
            self.message_id
                .clone()
                .unwrap_or_else(|| format!("(undecodable, {} bytes)", self.bytes)),
            dash(self.reason.as_deref()),
        )
    }
}

impl fmt::Display for DeadLetterList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.letters.is_empty() {
            writeln!(
                f,
                "{:>8}  {:<8}  {:<20}  {:<28}  {:<46}  REASON",
                "SEQUENCE", "KIND", "DEAD AT", "ORIGINAL SUBJECT", "MESSAGE"
            )?;
            for letter in &self.letters {
                writeln!(f, "{letter}")?;
            }
        }
        write!(
            f,
            "total: {} dead letter{} listed{} ({} in {})",
            self.total,
            plural(self.total),
            self.kind
                .as_ref()
                .map_or_else(String::new, |kind| format!(" of kind {kind}")),
            self.in_stream,
            self.stream
        )
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for letter in &self.letters {
            writeln!(
                f,
                "replayed #{} {} to {} as {} ({})",
                letter.sequence,
                letter.kind,
                letter.subject,
                letter.replay_id,
                dash(letter.message_id.as_deref())
            )?;
        }
        write!(
            f,
            "replayed {} dead letter{} from {}",
            self.replayed,
            plural(self.replayed),
            self.stream
        )
    }
}
