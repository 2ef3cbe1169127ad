//! Everything the timeline service reads from and writes to Cassandra.
//!
//! [`TimelineStore`] holds the one [`Session`] and every statement, prepared
//! once at start-up. Handlers and the worker call its methods; no CQL text
//! lives anywhere else (the DDL lives in `migrations/cassandra/`).
//!
//! Writes are upserts keyed by what they describe — a timeline row by (user,
//! post), a follow by (user, target) — so replaying any of them is harmless.
//! Writes go at QUORUM; reads at ONE unless the caller asks for more.
//!
//! # Layout
//!
//! - this module: the store, its errors and records, connecting;
//! - `statements`: every statement, prepared once;
//! - `posts`, `graph`, `timeline`, `outbox`: the methods for each group of tables.

mod celebrities;
mod graph;
mod outbox;
mod posts;
mod slot;
mod statements;
mod timeline;

pub use posts::KeyClaim;
pub use slot::StoreSlot;
pub use timeline::TimelineSlice;

use outbox::{outbox_values, watermark_floor_values};
use statements::Statements;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use scylla::DeserializeRow;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimeuuid;

pub use crate::config::DEFAULT_OUTBOX_SHARDS;
use crate::config::{CassandraConfig, FeedConfig, MAX_TTL_SECONDS};
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
    /// The store is still being set up (connect, migrate, prepare).
    #[error("the timeline store is not connected or migrated yet")]
    NotReady,
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
    /// The cluster rejected, as a malformed or invalid request, a query that
    /// resumed from a client's cursor: the cursor's paging state was tampered
    /// with (or is from another schema). Any other failure of such a query is
    /// the cluster's, and stays an [`StoreError::Execute`].
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
            Self::NotReady | Self::Connect(_) => true,
            Self::Execute(error) => error_is_unavailable(error),
            _ => false,
        }
    }
}

fn error_is_unavailable(error: &ExecutionError) -> bool {
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
/// client sent back in a cursor).
///
/// Only a rejection of the request itself is the client's fault: the
/// coordinator answers a paging state it cannot decode with a protocol error
/// ("Invalid value for the paging state"), or with an invalid-request error.
/// Everything else — a replica timing out or unavailable, a read failure, a
/// server error — would have failed the first page just the same, and stays a
/// store error (`503` or `500`), never a bad cursor.
///
/// Cursors are not signed: the paging state only moves within the partition
/// the query names, which the path already picked and anyone may read, so a
/// forged one can reach nothing a genuine one could not. It only has to be
/// told apart from a server fault.
fn resumed_query_error(error: ExecutionError, client_state: bool) -> StoreError {
    if client_state && rejects_the_request(&error) {
        StoreError::BadPagingState(Box::new(error))
    } else {
        StoreError::from(error)
    }
}

/// Whether the cluster refused the request as malformed or invalid (as
/// opposed to failing to serve it).
fn rejects_the_request(error: &ExecutionError) -> bool {
    matches!(
        error,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::ProtocolError | DbError::Invalid,
            _
        ))
    )
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

/// The timeline tables behind one session.
#[derive(Debug, Clone)]
pub struct TimelineStore {
    session: Arc<Session>,
    statements: Arc<Statements>,
    bucketing: Bucketing,
    ttl: Duration,
    /// Celebrities read per query, and checked against a reader's follows per `IN` query.
    celebrity_chunk: i32,
    /// This process's copy of the celebrity set.
    celebrities: Arc<celebrities::CelebrityCache>,
}

impl TimelineStore {
    /// Connects, migrates the keyspace, and prepares every statement.
    pub async fn connect(
        cassandra: &CassandraConfig,
        feed: &FeedConfig,
    ) -> Result<Self, StoreError> {
        let session = session_builder(cassandra).build().await?;
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
            celebrities: Arc::new(celebrities::CelebrityCache::new(Duration::from_millis(
                feed.celebrity_refresh_ms,
            ))),
        })
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Succeeds when the cluster answers a query now (readiness, and the
    /// worker's probe while it waits out an outage).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.session
            .query_unpaged("SELECT release_version FROM system.local", ())
            .await?;
        Ok(())
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

    /// The TTL of the index row written with a row of TTL `row_ttl`.
    fn index_ttl(&self, row_ttl: i32) -> i32 {
        index_ttl(row_ttl, self.bucketing.width_seconds())
    }

    /// The oldest bucket a timeline can still have rows in.
    fn oldest_live_bucket(&self) -> i64 {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        self.bucketing
            .bucket_of(Utc::now().checked_sub_signed(ttl).unwrap_or_default())
    }
}

/// How the session is set up.
///
/// - Write timestamps come from this process, not from the coordinator:
///   each attempt of a statement takes its timestamp from one monotonic clock
///   when the driver sends it. An attempt of an earlier request (a retry, or a
///   mutation that reaches a replica late) can then never outrank a later
///   request's write, whichever coordinators the two went through and however
///   their clocks disagree: an unfollow issued after a follow returned always
///   wins over it. Across processes, timestamps are as close as their clocks.
/// - Every statement gives up after `CASSANDRA_REQUEST_TIMEOUT_MS`, retries
///   included, so a stuck query ends as a `503` of the service's own, before
///   the HTTP layer abandons the request.
fn session_builder(cassandra: &CassandraConfig) -> SessionBuilder {
    let profile = ExecutionProfile::builder()
        .request_timeout(Some(cassandra.request_timeout()))
        .build();
    SessionBuilder::new()
        .known_nodes(&cassandra.cassandra_nodes)
        .connection_timeout(Duration::from_secs(3))
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
}

fn next_state(response: PagingStateResponse) -> Option<Vec<u8>> {
    match response.into_paging_control_flow() {
        std::ops::ControlFlow::Continue(state) => state.as_bytes_slice().map(|b| b.to_vec()),
        std::ops::ControlFlow::Break(()) => None,
    }
}

/// The index row of a bucket outlives every row in it by one bucket width,
/// within the cluster's TTL limit: cut to the limit, it still expires no
/// earlier than the row written with it (whose TTL is within the limit too).
fn index_ttl(row_ttl: i32, bucket_width_seconds: i64) -> i32 {
    let width = i32::try_from(bucket_width_seconds).unwrap_or(i32::MAX);
    let max = i32::try_from(MAX_TTL_SECONDS).unwrap_or(i32::MAX);
    row_ttl.saturating_add(width).min(max)
}

/// The statement at `consistency`: a cheap clone (the prepared metadata is
/// shared behind an `Arc`), or the statement itself when it already matches.
fn with_consistency(statement: &PreparedStatement, consistency: Consistency) -> PreparedStatement {
    let mut statement = statement.clone();
    statement.set_consistency(consistency);
    statement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(db: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            db,
            "from the cluster".into(),
        ))
    }

    fn read_timeout() -> DbError {
        DbError::ReadTimeout {
            consistency: Consistency::Quorum,
            received: 1,
            required: 2,
            data_present: false,
        }
    }

    fn unavailable() -> DbError {
        DbError::Unavailable {
            consistency: Consistency::Quorum,
            required: 2,
            alive: 1,
        }
    }

    #[test]
    fn only_a_rejected_request_is_a_bad_paging_state() {
        for db in [DbError::ProtocolError, DbError::Invalid] {
            let error = resumed_query_error(refused(db.clone()), true);
            assert!(matches!(error, StoreError::BadPagingState(_)), "{db:?}");
            // The same error on a first page is the service's own.
            let error = resumed_query_error(refused(db.clone()), false);
            assert!(matches!(error, StoreError::Execute(_)), "{db:?}");
        }
    }

    #[test]
    fn a_resumed_query_the_cluster_cannot_serve_stays_unavailable() {
        let failures = [
            refused(read_timeout()),
            refused(unavailable()),
            refused(DbError::Overloaded),
            refused(DbError::IsBootstrapping),
            ExecutionError::RequestTimeout(Duration::from_secs(5)),
            ExecutionError::EmptyPlan,
        ];
        for failure in failures {
            let error = resumed_query_error(failure, true);
            assert!(matches!(error, StoreError::Execute(_)), "{error}");
            assert!(error.is_unavailable(), "{error}");
        }
    }

    #[test]
    fn other_failures_of_a_resumed_query_are_not_the_clients() {
        let failures = [
            DbError::ServerError,
            DbError::ReadFailure {
                consistency: Consistency::One,
                received: 0,
                required: 1,
                numfailures: 1,
                data_present: false,
            },
            DbError::Unauthorized,
            DbError::Other(0x1234),
        ];
        for db in failures {
            let error = resumed_query_error(refused(db), true);
            assert!(matches!(error, StoreError::Execute(_)), "{error}");
            assert!(!error.is_unavailable(), "{error}");
        }
    }

    #[test]
    fn the_index_ttl_outlives_its_row_within_the_ttl_limit() {
        assert_eq!(index_ttl(3600, 86_400), 90_000);
        let max = i32::try_from(MAX_TTL_SECONDS).expect("fits");
        // The longest TTL (TIMELINE_TTL_DAYS = 7300) plus a bucket would be refused.
        assert_eq!(index_ttl(max, 86_400), max);
        assert_eq!(index_ttl(max - 10, 86_400), max);
        assert_eq!(index_ttl(max, i64::MAX), max);
    }

    #[test]
    fn the_session_stamps_writes_and_bounds_statements() {
        use clap::Parser;
        let config =
            crate::Config::parse_from(["timeline", "--cassandra-request-timeout-ms", "1234"]);
        let builder = session_builder(&config.cassandra);
        let clock = builder
            .config
            .timestamp_generator
            .expect("client-side timestamps");
        // Strictly increasing, even within one microsecond.
        let stamps: Vec<i64> = (0..1000).map(|_| clock.next_timestamp()).collect();
        assert!(stamps.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(
            builder
                .config
                .default_execution_profile_handle
                .to_profile()
                .get_request_timeout(),
            Some(Duration::from_millis(1234))
        );
    }
}
