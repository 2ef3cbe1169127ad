//! The fan-out messages and their subjects: defined once, shared by the API
//! (publisher), the worker (consumer) and the tests.
//!
//! Every message is an [`Envelope`] serialised as JSON: a format version `v`
//! and one [`FanoutMessage`] tagged by `kind`. A worker that meets a version
//! it does not know dead-letters the message instead of guessing.
//!
//! Message ids (`Nats-Msg-Id`) make publishing idempotent within the stream's
//! duplicate window: the outbox relay and a retried split may publish the same
//! message twice and the stream keeps one.

use std::hash::Hasher;

use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{PostId, UserId};

/// The envelope version this build writes and understands.
pub const MESSAGE_VERSION: u16 = 1;

/// One unit of fan-out work, versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version; see [`MESSAGE_VERSION`].
    pub v: u16,
    #[serde(flatten)]
    pub message: FanoutMessage,
}

impl Envelope {
    pub fn new(message: FanoutMessage) -> Self {
        Self {
            v: MESSAGE_VERSION,
            message,
        }
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).map_or_else(|_| bytes::Bytes::new(), bytes::Bytes::from)
    }

    pub fn from_bytes(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

/// A post as the worker needs it to write timeline rows without reading it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostPayload {
    pub id: PostId,
    pub author_id: UserId,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// What a worker is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FanoutMessage {
    /// A new post: find the author's followers and write it into their
    /// timelines, directly or by splitting the work into [`Self::Chunk`]s.
    Post { post: PostPayload },
    /// One page of a large fan-out: write `post` into these followers' timelines.
    Chunk {
        post: PostPayload,
        index: u32,
        followers: Vec<UserId>,
    },
    /// `follower` now follows `followee`: backfill the followee's recent posts.
    Follow {
        follower: UserId,
        followee: UserId,
        event_id: Uuid,
    },
    /// `follower` stopped following `followee`: remove the followee's posts.
    Unfollow {
        follower: UserId,
        followee: UserId,
        event_id: Uuid,
        /// When the follow being undone was made: rows of the followee's
        /// posts can only exist from shortly before then (the backfill).
        /// Absent in messages from older builds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<DateTime<Utc>>,
    },
}

impl FanoutMessage {
    /// The last token of the subject.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Post { .. } => "post",
            Self::Chunk { .. } => "chunk",
            Self::Follow { .. } => "follow",
            Self::Unfollow { .. } => "unfollow",
        }
    }

    /// The `Nats-Msg-Id`: stable for the same work, distinct for different work.
    ///
    /// A chunk's id is derived from the followers it lists, not from its
    /// position: a post split again after its follower list changed (a chunk
    /// publish failed, the post was redelivered) has chunks whose boundaries
    /// moved, and a positional id would make the stream drop a chunk whose
    /// content changed as a duplicate of the old one.
    pub fn message_id(&self) -> String {
        match self {
            Self::Post { post } => format!("post.{}", post.id),
            Self::Chunk {
                post, followers, ..
            } => format!("post.{}.chunk.{:016x}", post.id, digest(followers)),
            Self::Follow { event_id, .. } => format!("follow.{event_id}"),
            Self::Unfollow { event_id, .. } => format!("unfollow.{event_id}"),
        }
    }
}

/// FNV-1a (64 bits) of the user ids, each followed by a NUL (ids never hold one).
fn digest(users: &[UserId]) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    for user in users {
        hasher.write(user.as_str().as_bytes());
        hasher.write_u8(0);
    }
    hasher.finish()
}

/// The subjects of one deployment, under a configurable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The deployment's subject prefix (also the outbox's topic).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Where work of this kind is published.
    pub fn work(&self, kind: &str) -> String {
        format!("{}.fanout.{kind}", self.prefix)
    }

    /// The filter of the shared consumer: all work, no dead letters.
    pub fn all_work(&self) -> String {
        format!("{}.fanout.>", self.prefix)
    }

    /// Where a message goes after its delivery budget is spent.
    pub fn dead(&self, kind: &str) -> String {
        format!("{}.dead.{kind}", self.prefix)
    }

    /// Every dead letter.
    pub fn all_dead(&self) -> String {
        format!("{}.dead.>", self.prefix)
    }

    /// The kind a subject carries (its last token).
    pub fn kind_of(subject: &str) -> &str {
        subject.rsplit('.').next().unwrap_or("unknown")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_a_kind_tag() {
        let post = PostPayload {
            id: PostId::generate(),
            author_id: UserId::parse("ann").expect("valid"),
            content: "hello".into(),
            created_at: Utc::now(),
        };
        let envelope = Envelope::new(FanoutMessage::Post { post });
        let bytes = envelope.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["v"], 1);
        assert_eq!(value["kind"], "post");
        assert_eq!(Envelope::from_bytes(&bytes).expect("parses"), envelope);
    }

    #[test]
    fn chunk_ids_follow_their_content_not_their_position() {
        let post = PostPayload {
            id: PostId::generate(),
            author_id: UserId::parse("ann").expect("valid"),
            content: "hello".into(),
            created_at: Utc::now(),
        };
        let chunk = |index: u32, followers: &[&str]| FanoutMessage::Chunk {
            post: post.clone(),
            index,
            followers: followers
                .iter()
                .map(|f| UserId::parse(f).expect("valid"))
                .collect(),
        };
        let id = chunk(0, &["bob", "cat", "dan"]).message_id();
        assert!(id.starts_with(&format!("post.{}.chunk.", post.id)), "{id}");
        // The same followers: the same id, wherever the chunk sits.
        assert_eq!(chunk(3, &["bob", "cat", "dan"]).message_id(), id);
        // Other followers at the same position: another id, even when only
        // the middle changed or the ids only regroup.
        assert_ne!(chunk(0, &["bob", "eve", "dan"]).message_id(), id);
        assert_ne!(chunk(0, &["bob", "cat"]).message_id(), id);
        assert_ne!(chunk(0, &["bob", "cat", "dan", "eve"]).message_id(), id);
        assert_ne!(chunk(0, &["bobc", "at", "dan"]).message_id(), id);
        // Another post: another id.
        let other = FanoutMessage::Chunk {
            post: PostPayload {
                id: PostId::generate(),
                ..post.clone()
            },
            index: 0,
            followers: vec![UserId::parse("bob").expect("valid")],
        };
        assert_ne!(other.message_id(), chunk(0, &["bob"]).message_id());
    }

    #[test]
    fn subjects() {
        let s = Subjects::new("t1");
        assert_eq!(s.work("post"), "t1.fanout.post");
        assert_eq!(s.dead("chunk"), "t1.dead.chunk");
        assert_eq!(Subjects::kind_of("t1.fanout.follow"), "follow");
    }
}
