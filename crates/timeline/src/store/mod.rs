//! Everything the timeline service reads from and writes to Cassandra.
//!
//! [`TimelineStore`] holds the one [`Session`] and every statement, prepared
//! once at start-up. Handlers and the worker call its methods; no CQL text
//! lives anywhere else (the DDL lives in `migrations/cassandra/`).
//!
//! Writes are upserts keyed by what they describe — a timeline row by (user,
//! post), a follow by (user, target) — so replaying any of them is harmless.
//! Writes go at QUORUM (a post at `POST_WRITE_CONSISTENCY`, QUORUM unless
//! set to ONE); reads at ONE unless the caller asks for more.
//!
//! # Layout
//!
//! - this module: the store, its errors and records, connecting;
//! - `statements`: every statement, prepared once;
//! - `posts`, `graph`, `timeline`, `outbox`: the methods for each group of tables.

mod celebrities;
mod error;
mod graph;
mod outbox;
mod posts;
mod records;
mod slot;
mod statements;
mod timeline;

pub use error::StoreError;
use error::{resumed_query_error, rows_error};
pub use posts::KeyClaim;
pub use records::*;
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
        let statements = Statements::prepare(&session, cassandra.post_write_consistency).await?;
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

    /// Succeeds when a quorum of the replicas of a timeline table answers a
    /// read now: what the worker's writes need, so its pause during an outage
    /// (or while a majority is down) lasts until they can succeed, not merely
    /// until one node answers.
    pub async fn quorum_answers(&self) -> Result<(), StoreError> {
        let probe = with_consistency(&self.statements.select_is_following, Consistency::Quorum);
        self.session
            .execute_unpaged(&probe, ("quorum-probe", "quorum-probe"))
            .await?;
        Ok(())
    }

    /// Succeeds when the cluster answers a query now (readiness).
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
