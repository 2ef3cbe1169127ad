//! Everything the timeline service reads from and writes to Cassandra.
//!
//! [`TimelineStore`] holds the one [`Session`] and every statement, prepared
//! once at start-up. Handlers and the worker call its methods; no CQL text
//! lives anywhere else (the DDL lives in `migrations/cassandra/`).
//!
//! Writes are upserts keyed by what they describe — a timeline row by (user,
//! post), a follow by (user, target) — so replaying any of them is harmless.
//! Writes go at QUORUM; reads at ONE unless the caller asks for more.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use scylla::DeserializeRow;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{ExecutionError, RequestAttemptError};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimeuuid;

use crate::config::{CassandraConfig, FeedConfig};
use crate::domain::{Bucketing, PostId, ReadConsistency, UserId};
use crate::migrate;

/// One timeline row of the fan-out (QUORUM). Public so that `make bench`
/// can run the very same statement without the service in the way.
pub const INSERT_TIMELINE_CQL: &str = "INSERT INTO home_timeline \
     (user_id, bucket, post_id, author_id, content, created_at) \
     VALUES (?, ?, ?, ?, ?, ?) USING TTL ?";
/// The bucket-index row written before each timeline row (QUORUM).
pub const INSERT_FEED_BUCKET_CQL: &str =
    "INSERT INTO feed_buckets (owner_id, feed, bucket) VALUES (?, ?, ?) USING TTL ?";
/// The `feed` of a `feed_buckets` row.
pub const FEED_TIMELINE: &str = "timeline";
const FEED_POSTS: &str = "posts";
/// Shards of a deployment's outbox, picked at random per row; the relay scans each.
pub const OUTBOX_SHARDS: i32 = 8;
/// Width of an outbox time bucket (part of the outbox partition key), in seconds.
/// Small, so the relay never reads more than a few seconds' worth of tombstones
/// in one query.
pub const OUTBOX_BUCKET_SECONDS: u64 = 10;
/// Write timestamps below this mark the watermark rows written with each
/// outbox row (see [`TimelineStore::create_post`]); real write timestamps
/// (microseconds since 1970) are three orders of magnitude larger.
const WATERMARK_FLOOR_TIMESTAMP: i64 = 1 << 40;
/// Buckets read from the bucket index per query.
const BUCKETS_PER_READ: i32 = 32;

/// Why a store operation failed. Driver text stays in the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connecting to Cassandra: {0}")]
    Connect(Box<scylla::errors::NewSessionError>),
    #[error("migrating: {0}")]
    Migrate(Box<migrate::MigrateError>),
    #[error("preparing `{statement}`: {source}")]
    Prepare {
        statement: &'static str,
        source: Box<scylla::errors::PrepareError>,
    },
    #[error("executing a statement: {0}")]
    Execute(Box<ExecutionError>),
    #[error("reading rows: {0}")]
    Rows(String),
    /// The cluster refused a query that resumed from a client's cursor: the
    /// cursor's paging state was tampered with (or is from another schema).
    #[error("the cluster refused a paging state from a cursor: {0}")]
    BadPagingState(Box<ExecutionError>),
}

impl From<scylla::errors::NewSessionError> for StoreError {
    fn from(error: scylla::errors::NewSessionError) -> Self {
        Self::Connect(Box::new(error))
    }
}

impl From<migrate::MigrateError> for StoreError {
    fn from(error: migrate::MigrateError) -> Self {
        Self::Migrate(Box::new(error))
    }
}

impl From<ExecutionError> for StoreError {
    fn from(error: ExecutionError) -> Self {
        Self::Execute(Box::new(error))
    }
}

impl StoreError {
    /// Whether the cluster is (temporarily) unable to serve: worth a `503` and a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Execute(error) => error_is_unavailable(error),
            _ => false,
        }
    }
}

fn error_is_unavailable(error: &ExecutionError) -> bool {
    use scylla::errors::DbError;
    match error {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
            ),
            _ => false,
        },
        _ => false,
    }
}

/// The error of a query that resumed from `client_state` (a paging state a
/// client sent back in a cursor): the cluster refusing it is the client's
/// fault, unless the cluster is merely unavailable.
///
/// Cursors are not signed: the paging state only moves within the partition
/// the query names, which the path already picked and anyone may read, so a
/// forged one can reach nothing a genuine one could not. It only has to be
/// told apart from a server fault.
fn resumed_query_error(error: ExecutionError, client_state: bool) -> StoreError {
    let refused = matches!(
        error,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(..))
    );
    let error = StoreError::from(error);
    match error {
        StoreError::Execute(inner) if client_state && refused && !error_is_unavailable(&inner) => {
            StoreError::BadPagingState(inner)
        }
        other => other,
    }
}

fn rows_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Rows(error.to_string())
}

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
    /// Random, so a deployment's rows spread over [`OUTBOX_SHARDS`] partitions per bucket.
    pub shard: i32,
    /// The [`outbox_bucketing`] bucket of `id`'s time.
    pub bucket: i64,
    pub id: CqlTimeuuid,
    pub subject: String,
    pub msg_id: String,
    pub payload: Vec<u8>,
}

impl OutboxEntry {
    pub fn new(topic: String, subject: String, msg_id: String, payload: Vec<u8>) -> Self {
        let id = PostId::generate();
        // Random bits: the id's node bytes are constant per process.
        let shard = i32::from(uuid::Uuid::new_v4().as_bytes()[0]) % OUTBOX_SHARDS;
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
struct PostRow {
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
struct OutboxRow {
    topic: String,
    shard: i32,
    bucket: i64,
    id: CqlTimeuuid,
    subject: String,
    msg_id: String,
    payload: Vec<u8>,
}

/// Which table a newest-first walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Timeline,
    Posts,
}

impl Feed {
    fn name(self) -> &'static str {
        match self {
            Self::Timeline => FEED_TIMELINE,
            Self::Posts => FEED_POSTS,
        }
    }
}

/// The statements, prepared once.
struct Statements {
    insert_timeline: PreparedStatement,
    insert_feed_bucket: PreparedStatement,
    delete_timeline: PreparedStatement,
    delete_outbox: PreparedStatement,
    select_outbox_due: PreparedStatement,
    select_outbox_watermark: PreparedStatement,
    advance_outbox_watermark: PreparedStatement,
    insert_celebrity: PreparedStatement,
    select_celebrities: PreparedStatement,
    select_is_celebrity: PreparedStatement,
    select_post: PreparedStatement,
    select_feed_buckets: PreparedStatement,
    select_author_posts: PreparedStatement,
    select_author_posts_top: PreparedStatement,
    select_author_posts_before: PreparedStatement,
    select_timeline_top: PreparedStatement,
    select_timeline_before: PreparedStatement,
    select_following: PreparedStatement,
    select_followers: PreparedStatement,
    select_is_following: PreparedStatement,
    select_following_among: PreparedStatement,
    /// post + per-author row + bucket index + author's own timeline row + its
    /// index + outbox + outbox watermark floor.
    create_post: Batch,
    /// following + followers + outbox + outbox watermark floor.
    follow: Batch,
    /// following + followers deleted + outbox + outbox watermark floor.
    unfollow: Batch,
}

/// The timeline tables behind one session.
#[derive(Debug, Clone)]
pub struct TimelineStore {
    session: Arc<Session>,
    statements: Arc<Statements>,
    bucketing: Bucketing,
    ttl: Duration,
    /// Celebrities read per query, and checked against a reader's follows per `IN` query.
    celebrity_chunk: i32,
}

impl TimelineStore {
    /// Connects, migrates the keyspace, and prepares every statement.
    pub async fn connect(
        cassandra: &CassandraConfig,
        feed: &FeedConfig,
    ) -> Result<Self, StoreError> {
        let session = SessionBuilder::new()
            .known_nodes(&cassandra.cassandra_nodes)
            .connection_timeout(Duration::from_secs(3))
            .build()
            .await?;
        migrate::run(
            &session,
            &cassandra.cassandra_keyspace,
            cassandra.cassandra_replication_factor,
        )
        .await?;
        let statements = Statements::prepare(&session).await?;
        Ok(Self {
            session: Arc::new(session),
            statements: Arc::new(statements),
            bucketing: Bucketing::new(feed.bucket_seconds),
            ttl: feed.ttl(),
            celebrity_chunk: i32::from(feed.celebrity_chunk),
        })
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn bucketing(&self) -> Bucketing {
        self.bucketing
    }

    /// The TTL of a timeline row for a post made at `created_at`: what is left
    /// of the configured lifetime, counted from the post (not the write), so a
    /// late fan-out or a backfill does not extend it. `None` once it is over.
    fn ttl_for(&self, created_at: DateTime<Utc>) -> Option<i32> {
        let age = (Utc::now() - created_at).num_seconds().max(0);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX) - age;
        (ttl > 0).then(|| i32::try_from(ttl).unwrap_or(i32::MAX))
    }

    /// The index row of a bucket outlives every row in it by one bucket width.
    fn index_ttl(&self, row_ttl: i32) -> i32 {
        let width = i32::try_from(self.bucketing.width_seconds()).unwrap_or(i32::MAX);
        row_ttl.saturating_add(width)
    }

    /// The oldest bucket a timeline can still have rows in.
    fn oldest_live_bucket(&self) -> i64 {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        self.bucketing
            .bucket_of(Utc::now().checked_sub_signed(ttl).unwrap_or_default())
    }

    /// Writes a post, its per-author row and the author's own timeline row,
    /// with the outbox row of its fan-out message, in one logged batch at
    /// QUORUM: all of it lands, or none of it.
    ///
    /// Like every batch carrying an outbox row, it also writes the row's
    /// bucket as its shard's watermark with a write timestamp that is larger
    /// the older the bucket, and tiny next to a real one (see
    /// [`OutboxEntry`] and `WATERMARK_FLOOR_TIMESTAMP`): until a relay moves
    /// the watermark with an ordinary write, it is the oldest bucket ever
    /// written, so no row is ever below it.
    #[tracing::instrument(skip_all, fields(post_id = %post.id))]
    pub async fn create_post(
        &self,
        post: &PostRecord,
        outbox: &OutboxEntry,
    ) -> Result<(), StoreError> {
        let bucket = self.bucketing.bucket_of(post.created_at);
        let ttl = self.ttl_for(post.created_at).unwrap_or(1);
        let id = post.id.timeuuid();
        let author = post.author_id.as_str();
        let content = post.content.as_str();
        self.session
            .batch(
                &self.statements.create_post,
                (
                    (id, author, content, post.created_at),
                    (author, bucket, id, content, post.created_at),
                    (author, FEED_POSTS, bucket, 0_i32),
                    (author, bucket, id, author, content, post.created_at, ttl),
                    (author, FEED_TIMELINE, bucket, self.index_ttl(ttl)),
                    outbox_values(outbox),
                    watermark_floor_values(outbox),
                ),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    pub async fn post(&self, id: PostId) -> Result<Option<PostRecord>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.select_post, (id.timeuuid(),))
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        let row = result.maybe_first_row::<PostRow>().map_err(rows_error)?;
        Ok(row.map(PostRecord::from))
    }

    /// Records the follow both ways, with its outbox row, in one logged batch.
    #[tracing::instrument(skip(self, outbox))]
    pub async fn follow(
        &self,
        user: &UserId,
        target: &UserId,
        outbox: &OutboxEntry,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        self.session
            .batch(
                &self.statements.follow,
                (
                    (user.as_str(), target.as_str(), now),
                    (target.as_str(), user.as_str(), now),
                    outbox_values(outbox),
                    watermark_floor_values(outbox),
                ),
            )
            .await?;
        Ok(())
    }

    /// Removes the follow both ways, with its outbox row, in one logged batch.
    #[tracing::instrument(skip(self, outbox))]
    pub async fn unfollow(
        &self,
        user: &UserId,
        target: &UserId,
        outbox: &OutboxEntry,
    ) -> Result<(), StoreError> {
        self.session
            .batch(
                &self.statements.unfollow,
                (
                    (user.as_str(), target.as_str()),
                    (target.as_str(), user.as_str()),
                    outbox_values(outbox),
                    watermark_floor_values(outbox),
                ),
            )
            .await?;
        Ok(())
    }

    /// A page of whom `user` follows (`followers == false`) or who follows `user`.
    #[tracing::instrument(skip(self, paging_state))]
    pub async fn graph_page(
        &self,
        user: &UserId,
        followers: bool,
        limit: i32,
        paging_state: Option<Vec<u8>>,
    ) -> Result<Paged<Edge>, StoreError> {
        let mut statement = if followers {
            self.statements.select_followers.clone()
        } else {
            self.statements.select_following.clone()
        };
        statement.set_page_size(limit);
        let client_state = paging_state.is_some();
        let state = paging_state.map_or_else(PagingState::start, PagingState::new_from_raw_bytes);
        let (result, next) = self
            .session
            .execute_single_page(&statement, (user.as_str(),), state)
            .await
            .map_err(|error| resumed_query_error(error, client_state))?;
        let rows = result.into_rows_result().map_err(rows_error)?;
        let items = rows
            .rows::<(String, Option<DateTime<Utc>>)>()
            .map_err(rows_error)?
            .map(|row| {
                row.map(|(user_id, since)| Edge {
                    user_id,
                    since: since.unwrap_or_default(),
                })
                .map_err(rows_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Paged {
            items,
            paging_state: next_state(next),
        })
    }

    /// One page of followers, at QUORUM, for the fan-out (so a follow the API
    /// acknowledged is seen).
    pub async fn followers_for_fanout(
        &self,
        author: &UserId,
        page_size: i32,
        paging_state: Option<Vec<u8>>,
    ) -> Result<Paged<UserId>, StoreError> {
        let mut statement = self.statements.select_followers.clone();
        statement.set_page_size(page_size);
        statement.set_consistency(Consistency::Quorum);
        let state = paging_state.map_or_else(PagingState::start, PagingState::new_from_raw_bytes);
        let (result, next) = self
            .session
            .execute_single_page(&statement, (author.as_str(),), state)
            .await?;
        let rows = result.into_rows_result().map_err(rows_error)?;
        let items = rows
            .rows::<(String, Option<DateTime<Utc>>)>()
            .map_err(rows_error)?
            .filter_map(|row| match row {
                Ok((id, _)) => UserId::parse(&id).ok().map(Ok),
                Err(error) => Some(Err(rows_error(error))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Paged {
            items,
            paging_state: next_state(next),
        })
    }

    pub async fn is_following(&self, user: &UserId, target: &UserId) -> Result<bool, StoreError> {
        let mut statement = self.statements.select_is_following.clone();
        statement.set_consistency(Consistency::Quorum);
        let result = self
            .session
            .execute_unpaged(&statement, (user.as_str(), target.as_str()))
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        Ok(result.rows_num() > 0)
    }

    pub async fn is_celebrity(&self, author: &UserId) -> Result<bool, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.select_is_celebrity, (author.as_str(),))
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        Ok(result.rows_num() > 0)
    }

    pub async fn mark_celebrity(&self, author: &UserId) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.statements.insert_celebrity,
                (author.as_str(), Utc::now()),
            )
            .await?;
        Ok(())
    }

    /// Writes `post` into `user`'s timeline (index row first, so a row is
    /// never unreachable). Idempotent: the row is keyed by (user, post).
    /// Returns false when the post is already past the timeline TTL.
    pub async fn write_timeline_row(
        &self,
        user: &UserId,
        post: &PostRecord,
    ) -> Result<bool, StoreError> {
        let Some(ttl) = self.ttl_for(post.created_at) else {
            return Ok(false);
        };
        let bucket = self.bucketing.bucket_of(post.created_at);
        self.session
            .execute_unpaged(
                &self.statements.insert_feed_bucket,
                (user.as_str(), FEED_TIMELINE, bucket, self.index_ttl(ttl)),
            )
            .await?;
        self.session
            .execute_unpaged(
                &self.statements.insert_timeline,
                (
                    user.as_str(),
                    bucket,
                    post.id.timeuuid(),
                    post.author_id.as_str(),
                    post.content.as_str(),
                    post.created_at,
                    ttl,
                ),
            )
            .await?;
        Ok(true)
    }

    pub async fn delete_timeline_row(
        &self,
        user: &UserId,
        post: &PostRecord,
    ) -> Result<(), StoreError> {
        let bucket = self.bucketing.bucket_of(post.created_at);
        self.session
            .execute_unpaged(
                &self.statements.delete_timeline,
                (user.as_str(), bucket, post.id.timeuuid()),
            )
            .await?;
        Ok(())
    }

    /// An author's most recent posts still within the timeline TTL, newest first.
    pub async fn recent_posts(
        &self,
        author: &UserId,
        limit: usize,
    ) -> Result<Vec<PostRecord>, StoreError> {
        self.walk_feed(
            Feed::Posts,
            author.as_str(),
            Position::Newest,
            self.oldest_live_bucket(),
            limit,
            Consistency::Quorum,
        )
        .await
    }

    /// A page of `author`'s posts, newest first, with the driver's paging
    /// state inside a bucket and the bucket index between buckets.
    #[tracing::instrument(skip(self, start))]
    pub async fn author_posts_page(
        &self,
        author: &UserId,
        limit: usize,
        start: Option<(i64, Option<Vec<u8>>)>,
    ) -> Result<PostsPage, StoreError> {
        let (mut from_bucket, mut state) = start.unwrap_or((i64::MAX, None));
        let mut items: Vec<PostRecord> = Vec::with_capacity(limit);
        loop {
            let buckets = self
                .buckets(
                    author.as_str(),
                    Feed::Posts,
                    from_bucket,
                    i64::MIN,
                    Consistency::One,
                )
                .await?;
            if buckets.is_empty() {
                return Ok(PostsPage { items, next: None });
            }
            for (i, &bucket) in buckets.iter().enumerate() {
                // A saved paging state belongs to the cursor's bucket only.
                let (mut paging, mut client_state) = match state.take() {
                    Some(raw) if bucket == from_bucket => {
                        (PagingState::new_from_raw_bytes(raw), true)
                    }
                    _ => (PagingState::start(), false),
                };
                loop {
                    let remaining = limit - items.len();
                    let mut statement = self.statements.select_author_posts.clone();
                    statement.set_page_size(i32::try_from(remaining).unwrap_or(i32::MAX));
                    let (result, next) = self
                        .session
                        .execute_single_page(&statement, (author.as_str(), bucket), paging)
                        .await
                        .map_err(|error| resumed_query_error(error, client_state))?;
                    client_state = false;
                    let rows = result.into_rows_result().map_err(rows_error)?;
                    for row in rows.rows::<PostRow>().map_err(rows_error)? {
                        items.push(row.map_err(rows_error)?.into());
                    }
                    match next_state(next) {
                        Some(raw) if items.len() >= limit => {
                            return Ok(PostsPage {
                                items,
                                next: Some((bucket, Some(raw))),
                            });
                        }
                        Some(raw) => paging = PagingState::new_from_raw_bytes(raw),
                        None => break,
                    }
                }
                if items.len() >= limit {
                    let next = match buckets.get(i + 1) {
                        Some(&older) => Some((older, None)),
                        None if buckets.len() < BUCKETS_PER_READ as usize => None,
                        None => Some((bucket - 1, None)),
                    };
                    return Ok(PostsPage { items, next });
                }
            }
            if buckets.len() < BUCKETS_PER_READ as usize {
                return Ok(PostsPage { items, next: None });
            }
            from_bucket = buckets[buckets.len() - 1] - 1;
        }
    }

    /// Up to `limit` entries of `user`'s home timeline from `position`, newest
    /// first: the fanned-out rows merged with `user`'s own posts and the posts
    /// of the celebrities `user` follows, without duplicates.
    ///
    /// `user`'s own posts are read at QUORUM (or the requested level, if
    /// higher), as they were written: read-your-writes for the author holds
    /// even when the timeline itself is read at ONE from a replica that has
    /// not seen the author's own timeline row yet. If no quorum answers they
    /// are read at ONE, like the rest.
    ///
    /// The read cost is bounded by the page, and grows slowly with the set of
    /// celebrities: one query per [`FeedConfig::celebrity_chunk`] celebrities,
    /// each followed by one `IN` query for which of them `user` follows; then
    /// for the timeline, `user`'s posts and each followed celebrity, one
    /// bucket-index query plus one query per non-empty bucket touched, each
    /// returning at most `limit` rows.
    #[tracing::instrument(skip(self))]
    pub async fn timeline(
        &self,
        user: &UserId,
        position: Position,
        limit: usize,
        consistency: ReadConsistency,
    ) -> Result<Vec<PostRecord>, StoreError> {
        let consistency = consistency.cql();
        let oldest = self.oldest_live_bucket();
        let fanned_out = self.walk_feed(
            Feed::Timeline,
            user.as_str(),
            position,
            oldest,
            limit,
            consistency,
        );
        let own = self.own_posts(user, position, oldest, limit, consistency);
        let celebrities = self.followed_celebrities(user, consistency);
        let (mut entries, own, celebrities) = futures::try_join!(fanned_out, own, celebrities)?;
        let merged = try_join_all(celebrities.iter().map(|celebrity| {
            self.walk_feed(Feed::Posts, celebrity, position, oldest, limit, consistency)
        }))
        .await?;
        entries.extend(own);
        entries.extend(merged.into_iter().flatten());
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.id));
        entries.dedup_by_key(|entry| entry.id);
        entries.truncate(limit);
        Ok(entries)
    }

    /// `user`'s own posts for a timeline page: at QUORUM at least, falling
    /// back to ONE when a quorum is unavailable and the reader asked for ONE.
    async fn own_posts(
        &self,
        user: &UserId,
        position: Position,
        oldest: i64,
        limit: usize,
        requested: Consistency,
    ) -> Result<Vec<PostRecord>, StoreError> {
        let level = if requested == Consistency::One {
            Consistency::Quorum
        } else {
            requested
        };
        let walk =
            |level| self.walk_feed(Feed::Posts, user.as_str(), position, oldest, limit, level);
        match walk(level).await {
            Err(error) if error.is_unavailable() && level != requested => {
                tracing::debug!(%error, "own posts read at ONE: no quorum");
                walk(requested).await
            }
            result => result,
        }
    }

    /// The celebrities `user` follows: every celebrity, a page at a time, each
    /// page checked against `user`'s follows with one bounded `IN` query.
    async fn followed_celebrities(
        &self,
        user: &UserId,
        consistency: Consistency,
    ) -> Result<Vec<String>, StoreError> {
        let mut all = with_consistency(&self.statements.select_celebrities, consistency);
        all.set_page_size(self.celebrity_chunk);
        let among = with_consistency(&self.statements.select_following_among, consistency);
        let mut paging = PagingState::start();
        let mut followed = Vec::new();
        loop {
            let (result, next) = self.session.execute_single_page(&all, (), paging).await?;
            let page = result
                .into_rows_result()
                .map_err(rows_error)?
                .rows::<(String,)>()
                .map_err(rows_error)?
                .map(|row| row.map(|(id,)| id).map_err(rows_error))
                .collect::<Result<Vec<_>, _>>()?;
            // A page is at most the page size; split anyway, so no IN list exceeds it.
            let chunk = usize::try_from(self.celebrity_chunk).unwrap_or(100).max(1);
            for ids in page.chunks(chunk) {
                let rows = self
                    .session
                    .execute_unpaged(&among, (user.as_str(), ids))
                    .await?
                    .into_rows_result()
                    .map_err(rows_error)?;
                for row in rows.rows::<(String,)>().map_err(rows_error)? {
                    followed.push(row.map_err(rows_error)?.0);
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(followed),
            }
        }
    }

    /// Newest-first walk over the buckets of one feed, from `position`, down
    /// to `oldest_bucket`, returning at most `limit` entries.
    async fn walk_feed(
        &self,
        feed: Feed,
        owner: &str,
        position: Position,
        oldest_bucket: i64,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Vec<PostRecord>, StoreError> {
        let (mut from_bucket, before) = match position {
            Position::Newest => (i64::MAX, None),
            Position::Before { bucket, post_id } => (bucket, Some((bucket, post_id))),
        };
        let (top, bounded) = match feed {
            Feed::Timeline => (
                &self.statements.select_timeline_top,
                &self.statements.select_timeline_before,
            ),
            Feed::Posts => (
                &self.statements.select_author_posts_top,
                &self.statements.select_author_posts_before,
            ),
        };
        let top = with_consistency(top, consistency);
        let bounded = with_consistency(bounded, consistency);
        let mut items = Vec::with_capacity(limit);
        loop {
            let buckets = self
                .buckets(owner, feed, from_bucket, oldest_bucket, consistency)
                .await?;
            for &bucket in &buckets {
                let remaining = i32::try_from(limit - items.len()).unwrap_or(i32::MAX);
                let result = match before {
                    Some((b, post_id)) if b == bucket => {
                        self.session
                            .execute_unpaged(
                                &bounded,
                                (owner, bucket, post_id.timeuuid(), remaining),
                            )
                            .await?
                    }
                    _ => {
                        self.session
                            .execute_unpaged(&top, (owner, bucket, remaining))
                            .await?
                    }
                };
                let rows = result.into_rows_result().map_err(rows_error)?;
                for row in rows.rows::<PostRow>().map_err(rows_error)? {
                    items.push(PostRecord::from(row.map_err(rows_error)?));
                }
                if items.len() >= limit {
                    return Ok(items);
                }
            }
            if buckets.len() < BUCKETS_PER_READ as usize {
                return Ok(items);
            }
            from_bucket = buckets[buckets.len() - 1] - 1;
        }
    }

    /// Non-empty buckets of a feed in `[oldest, from]`, newest first (at most [`BUCKETS_PER_READ`]).
    async fn buckets(
        &self,
        owner: &str,
        feed: Feed,
        from: i64,
        oldest: i64,
        consistency: Consistency,
    ) -> Result<Vec<i64>, StoreError> {
        let statement = with_consistency(&self.statements.select_feed_buckets, consistency);
        self.session
            .execute_unpaged(
                &statement,
                (owner, feed.name(), from, oldest, BUCKETS_PER_READ),
            )
            .await?
            .into_rows_result()
            .map_err(rows_error)?
            .rows::<(i64,)>()
            .map_err(rows_error)?
            .map(|row| row.map(|(b,)| b).map_err(rows_error))
            .collect()
    }

    /// The oldest outbox bucket of `topic`'s `shard` that may still hold
    /// rows; `None` when the shard never had a row.
    pub async fn outbox_watermark(
        &self,
        topic: &str,
        shard: i32,
    ) -> Result<Option<i64>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.select_outbox_watermark, (topic, shard))
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        let row = result.maybe_first_row::<(i64,)>().map_err(rows_error)?;
        Ok(row.map(|(bucket,)| bucket))
    }

    /// Records that `topic`'s `shard` has no rows below `bucket` (an
    /// ordinary write: it outranks the floors the batches write).
    pub async fn advance_outbox_watermark(
        &self,
        topic: &str,
        shard: i32,
        bucket: i64,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.statements.advance_outbox_watermark,
                (topic, shard, bucket),
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` outbox rows of one bucket of `topic`'s `shard`, made before `cutoff`.
    pub async fn due_outbox(
        &self,
        topic: &str,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
        limit: i32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let result = self
            .session
            .execute_unpaged(
                &self.statements.select_outbox_due,
                (topic, shard, bucket, cutoff, limit),
            )
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        result
            .rows::<OutboxRow>()
            .map_err(rows_error)?
            .map(|row| {
                row.map(|r| OutboxEntry {
                    topic: r.topic,
                    shard: r.shard,
                    bucket: r.bucket,
                    id: r.id,
                    subject: r.subject,
                    msg_id: r.msg_id,
                    payload: r.payload,
                })
                .map_err(rows_error)
            })
            .collect()
    }

    pub async fn delete_outbox(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.statements.delete_outbox,
                (entry.topic.as_str(), entry.shard, entry.bucket, entry.id),
            )
            .await?;
        Ok(())
    }
}

type OutboxValues<'a> = (&'a str, i32, i64, CqlTimeuuid, &'a str, &'a str, &'a [u8]);

fn outbox_values(entry: &OutboxEntry) -> OutboxValues<'_> {
    (
        entry.topic.as_str(),
        entry.shard,
        entry.bucket,
        entry.id,
        entry.subject.as_str(),
        entry.msg_id.as_str(),
        entry.payload.as_slice(),
    )
}

/// The watermark floor of an outbox row: its bucket, written at a timestamp
/// that is larger the older the bucket (so the oldest floor wins) and smaller
/// than any real write (so a relay's advance wins).
fn watermark_floor_values(entry: &OutboxEntry) -> (&str, i32, i64, i64) {
    (
        entry.topic.as_str(),
        entry.shard,
        entry.bucket,
        WATERMARK_FLOOR_TIMESTAMP - entry.bucket.clamp(0, WATERMARK_FLOOR_TIMESTAMP - 1),
    )
}

fn next_state(response: PagingStateResponse) -> Option<Vec<u8>> {
    match response.into_paging_control_flow() {
        std::ops::ControlFlow::Continue(state) => state.as_bytes_slice().map(|b| b.to_vec()),
        std::ops::ControlFlow::Break(()) => None,
    }
}

/// The statement at `consistency`: a cheap clone (the prepared metadata is
/// shared behind an `Arc`), or the statement itself when it already matches.
fn with_consistency(statement: &PreparedStatement, consistency: Consistency) -> PreparedStatement {
    let mut statement = statement.clone();
    statement.set_consistency(consistency);
    statement
}

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements").finish_non_exhaustive()
    }
}

impl Statements {
    async fn prepare(session: &Session) -> Result<Self, StoreError> {
        let write = |cql| prepare(session, cql, Consistency::Quorum);
        let read = |cql| prepare(session, cql, Consistency::One);
        let insert_post = write(
            "INSERT INTO posts (post_id, author_id, content, created_at) VALUES (?, ?, ?, ?)",
        )
        .await?;
        let insert_author_post = write(
            "INSERT INTO posts_by_author (author_id, bucket, post_id, content, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .await?;
        let insert_timeline = write(INSERT_TIMELINE_CQL).await?;
        let insert_feed_bucket = write(INSERT_FEED_BUCKET_CQL).await?;
        let insert_outbox = write(
            "INSERT INTO fanout_outbox (topic, shard, bucket, id, subject, msg_id, payload) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .await?;
        let floor_outbox_watermark = write(
            "INSERT INTO outbox_watermarks (topic, shard, bucket) VALUES (?, ?, ?) \
             USING TIMESTAMP ?",
        )
        .await?;
        let insert_following =
            write("INSERT INTO following (user_id, target_id, since) VALUES (?, ?, ?)").await?;
        let insert_follower =
            write("INSERT INTO followers (user_id, follower_id, since) VALUES (?, ?, ?)").await?;
        let delete_following =
            write("DELETE FROM following WHERE user_id = ? AND target_id = ?").await?;
        let delete_follower =
            write("DELETE FROM followers WHERE user_id = ? AND follower_id = ?").await?;

        let create_post = batch(&[
            &insert_post,
            &insert_author_post,
            &insert_feed_bucket,
            &insert_timeline,
            &insert_feed_bucket,
            &insert_outbox,
            &floor_outbox_watermark,
        ]);
        let follow = batch(&[
            &insert_following,
            &insert_follower,
            &insert_outbox,
            &floor_outbox_watermark,
        ]);
        let unfollow = batch(&[
            &delete_following,
            &delete_follower,
            &insert_outbox,
            &floor_outbox_watermark,
        ]);

        Ok(Self {
            delete_timeline: write(
                "DELETE FROM home_timeline WHERE user_id = ? AND bucket = ? AND post_id = ?",
            )
            .await?,
            delete_outbox: write(
                "DELETE FROM fanout_outbox WHERE topic = ? AND shard = ? AND bucket = ? AND id = ?",
            )
            .await?,
            select_outbox_due: prepare(
                session,
                "SELECT topic, shard, bucket, id, subject, msg_id, payload FROM fanout_outbox \
                 WHERE topic = ? AND shard = ? AND bucket = ? AND id < maxTimeuuid(?) LIMIT ?",
                Consistency::Quorum,
            )
            .await?,
            select_outbox_watermark: prepare(
                session,
                "SELECT bucket FROM outbox_watermarks WHERE topic = ? AND shard = ?",
                Consistency::Quorum,
            )
            .await?,
            advance_outbox_watermark: write(
                "INSERT INTO outbox_watermarks (topic, shard, bucket) VALUES (?, ?, ?)",
            )
            .await?,
            insert_celebrity: write(
                "INSERT INTO celebrities (shard, author_id, since) VALUES (0, ?, ?)",
            )
            .await?,
            select_celebrities: read("SELECT author_id FROM celebrities WHERE shard = 0").await?,
            select_is_celebrity: prepare(
                session,
                "SELECT author_id FROM celebrities WHERE shard = 0 AND author_id = ?",
                Consistency::Quorum,
            )
            .await?,
            select_post: read(
                "SELECT post_id, author_id, content, created_at FROM posts WHERE post_id = ?",
            )
            .await?,
            select_feed_buckets: read(
                "SELECT bucket FROM feed_buckets WHERE owner_id = ? AND feed = ? \
                 AND bucket <= ? AND bucket >= ? LIMIT ?",
            )
            .await?,
            select_author_posts: read(
                "SELECT post_id, author_id, content, created_at FROM posts_by_author \
                 WHERE author_id = ? AND bucket = ?",
            )
            .await?,
            select_author_posts_top: read(
                "SELECT post_id, author_id, content, created_at FROM posts_by_author \
                 WHERE author_id = ? AND bucket = ? LIMIT ?",
            )
            .await?,
            select_author_posts_before: read(
                "SELECT post_id, author_id, content, created_at FROM posts_by_author \
                 WHERE author_id = ? AND bucket = ? AND post_id < ? LIMIT ?",
            )
            .await?,
            select_timeline_top: read(
                "SELECT post_id, author_id, content, created_at FROM home_timeline \
                 WHERE user_id = ? AND bucket = ? LIMIT ?",
            )
            .await?,
            select_timeline_before: read(
                "SELECT post_id, author_id, content, created_at FROM home_timeline \
                 WHERE user_id = ? AND bucket = ? AND post_id < ? LIMIT ?",
            )
            .await?,
            select_following: read("SELECT target_id, since FROM following WHERE user_id = ?")
                .await?,
            select_followers: read("SELECT follower_id, since FROM followers WHERE user_id = ?")
                .await?,
            select_is_following: read(
                "SELECT target_id FROM following WHERE user_id = ? AND target_id = ?",
            )
            .await?,
            select_following_among: read(
                "SELECT target_id FROM following WHERE user_id = ? AND target_id IN ?",
            )
            .await?,
            insert_timeline,
            insert_feed_bucket,
            create_post,
            follow,
            unfollow,
        })
    }
}

async fn prepare(
    session: &Session,
    cql: &'static str,
    consistency: Consistency,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|source| StoreError::Prepare {
            statement: cql,
            source: Box::new(source),
        })?;
    statement.set_consistency(consistency);
    statement.set_is_idempotent(true);
    Ok(statement)
}

/// A logged batch at QUORUM of already prepared statements.
fn batch(statements: &[&PreparedStatement]) -> Batch {
    let mut batch = Batch::new(BatchType::Logged);
    for statement in statements {
        batch.append_statement((*statement).clone());
    }
    batch.set_consistency(Consistency::Quorum);
    batch.set_is_idempotent(true);
    batch
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn entry() -> OutboxEntry {
        OutboxEntry::new("t".into(), "t.fanout.post".into(), "m".into(), Vec::new())
    }

    #[test]
    fn outbox_rows_of_one_process_spread_over_the_shards() {
        let shards: BTreeSet<i32> = (0..200).map(|_| entry().shard).collect();
        assert!(shards.len() > OUTBOX_SHARDS as usize / 2, "{shards:?}");
        assert!(shards.iter().all(|s| (0..OUTBOX_SHARDS).contains(s)));
    }

    #[test]
    fn an_outbox_row_sits_in_the_bucket_of_its_id() {
        let entry = entry();
        let at = PostId::from_timeuuid(entry.id).created_at();
        assert_eq!(entry.bucket, outbox_bucketing().bucket_of(at));
    }

    #[test]
    fn watermark_floors_rank_older_buckets_higher_and_below_real_writes() {
        let mut older = entry();
        older.bucket -= 1;
        let (newer, older) = (entry(), older);
        let (_, _, _, newer_ts) = watermark_floor_values(&newer);
        let (_, _, _, older_ts) = watermark_floor_values(&older);
        assert!(older_ts > newer_ts);
        // A real write timestamp: microseconds since 1970.
        let real = Utc::now().timestamp_micros();
        assert!(older_ts > 0 && older_ts < real / 1000);
    }
}
