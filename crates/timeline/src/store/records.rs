//! The values the store reads and writes: posts, graph edges, positions,
//! pages, outbox rows, and the rows they are decoded from.

use super::*;

/// A post as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRecord {
    pub id: PostId,
    pub author_id: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// One edge of the graph as listed: the other user and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub user_id: String,
    pub since: DateTime<Utc>,
}

/// Where a newest-first walk starts: the top, or strictly below a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Newest,
    Before { bucket: i64, post_id: PostId },
}

/// A page of a single-partition list read with the driver's paging state.
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// The driver's paging state when more rows may follow.
    pub paging_state: Option<Vec<u8>>,
}

/// A page of an author's posts: the paging state is per bucket.
#[derive(Debug)]
pub struct PostsPage {
    pub items: Vec<PostRecord>,
    /// Where the next page starts: a bucket, and the paging state inside it (none = its start).
    pub next: Option<(i64, Option<Vec<u8>>)>,
}

/// A message to publish, kept in the outbox until JetStream has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The deployment's subject prefix: each deployment relays only its own rows.
    pub topic: String,
    /// Random, so a deployment's rows spread over `shards` partitions per bucket.
    pub shard: i32,
    /// The [`outbox_bucketing`] bucket of `id`'s time.
    pub bucket: i64,
    pub id: CqlTimeuuid,
    pub subject: String,
    pub msg_id: String,
    pub payload: Vec<u8>,
}

impl OutboxEntry {
    pub fn new(
        topic: String,
        subject: String,
        msg_id: String,
        payload: Vec<u8>,
        shards: i32,
    ) -> Self {
        let id = PostId::generate();
        // Random bits: the id's node bytes are constant per process.
        let random = i32::from(u16::from_be_bytes(
            uuid::Uuid::new_v4().as_bytes()[..2]
                .try_into()
                .unwrap_or([0, 0]),
        ));
        let shard = random % shards.max(1);
        Self {
            topic,
            shard,
            bucket: outbox_bucketing().bucket_of(id.created_at()),
            id: id.timeuuid(),
            subject,
            msg_id,
            payload,
        }
    }
}

#[derive(DeserializeRow)]
pub(super) struct PostRow {
    post_id: CqlTimeuuid,
    author_id: String,
    content: String,
    created_at: DateTime<Utc>,
}

impl From<PostRow> for PostRecord {
    fn from(row: PostRow) -> Self {
        Self {
            id: PostId::from_timeuuid(row.post_id),
            author_id: row.author_id,
            content: row.content,
            created_at: row.created_at,
        }
    }
}

/// The time buckets of the outbox.
pub fn outbox_bucketing() -> Bucketing {
    Bucketing::new(OUTBOX_BUCKET_SECONDS)
}

#[derive(DeserializeRow)]
pub(super) struct OutboxRow {
    pub(super) topic: String,
    pub(super) shard: i32,
    pub(super) bucket: i64,
    pub(super) id: CqlTimeuuid,
    pub(super) subject: String,
    pub(super) msg_id: String,
    pub(super) payload: Vec<u8>,
}

/// Which table a newest-first walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feed {
    Timeline,
    Posts,
}

impl Feed {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Timeline => FEED_TIMELINE,
            Self::Posts => FEED_POSTS,
        }
    }
}
