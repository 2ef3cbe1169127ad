//! `capctl cql-insert-loop`: the fan-out's timeline writes with nothing in
//! between, the ceiling `make bench` compares the worker with.
//!
//! Each operation writes one timeline row exactly as the worker's
//! `write_timeline_row` does: the bucket-index row, then the timeline row, one
//! after the other, with the very statement texts the timeline crate prepares
//! ([`timeline::store::INSERT_FEED_BUCKET_CQL`], [`timeline::store::INSERT_TIMELINE_CQL`]),
//! at QUORUM, marked idempotent, on one session.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use rand::Rng;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use timeline::domain::{Bucketing, PostId};
use timeline::store::{FEED_TIMELINE, INSERT_FEED_BUCKET_CQL, INSERT_TIMELINE_CQL};

use crate::load::{LoadShape, LoadSummary, closed_loop};

/// Where to write, and how hard.
#[derive(Debug, Clone, clap::Args)]
pub struct CqlInsertArgs {
    /// The timeline's own Cassandra settings (nodes, keyspace).
    #[command(flatten)]
    pub cassandra: timeline::config::CassandraConfig,
    /// Rows go to `<user-prefix>0` … `<user-prefix><users - 1>`.
    #[arg(long, default_value = "raw-")]
    pub user_prefix: String,
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Width of a time bucket in seconds (the services' `TIMELINE_BUCKET_SECONDS`).
    #[arg(long, default_value_t = 86_400)]
    pub bucket_seconds: u64,
    #[command(flatten)]
    pub shape: LoadShape,
}

/// What the loop measured.
#[derive(Debug, Clone, Serialize)]
pub struct CqlInsertReport {
    #[serde(flatten)]
    pub load: LoadSummary,
    /// Timeline rows (two statements each) written per second.
    pub rows_per_sec: f64,
    pub failed: u64,
}

struct Writer {
    session: Session,
    insert_feed_bucket: PreparedStatement,
    insert_timeline: PreparedStatement,
}

async fn prepare(session: &Session, cql: &str) -> anyhow::Result<PreparedStatement> {
    let mut statement = session
        .prepare(cql)
        .await
        .with_context(|| format!("preparing `{cql}`"))?;
    statement.set_consistency(Consistency::Quorum);
    statement.set_is_idempotent(true);
    Ok(statement)
}

/// A session on the timeline's keyspace, straight through the driver.
pub async fn session(cassandra: &timeline::config::CassandraConfig) -> anyhow::Result<Session> {
    let session = SessionBuilder::new()
        .known_nodes(&cassandra.cassandra_nodes)
        .connection_timeout(Duration::from_secs(3))
        .build()
        .await
        .context("connecting to Cassandra")?;
    session
        .use_keyspace(&cassandra.cassandra_keyspace, false)
        .await
        .context("using the keyspace")?;
    Ok(session)
}

pub async fn run(args: &CqlInsertArgs) -> anyhow::Result<CqlInsertReport> {
    let session = session(&args.cassandra).await?;
    let writer = Arc::new(Writer {
        insert_feed_bucket: prepare(&session, INSERT_FEED_BUCKET_CQL).await?,
        insert_timeline: prepare(&session, INSERT_TIMELINE_CQL).await?,
        session,
    });
    let bucketing = Bucketing::new(args.bucket_seconds);
    let (prefix, users) = (Arc::new(args.user_prefix.clone()), args.users.max(1));
    // As the worker: 30 days of TTL, the index row one bucket longer.
    let ttl: i32 = 30 * 86_400;
    let index_ttl = ttl.saturating_add(i32::try_from(bucketing.width_seconds()).unwrap_or(0));
    let measured = closed_loop(&args.shape, move |n| {
        let (writer, prefix) = (writer.clone(), prefix.clone());
        async move {
            let user = format!("{prefix}{}", rand::rng().random_range(0..users));
            let author = format!("{prefix}{}", rand::rng().random_range(0..users));
            let content = format!("bench post {n}");
            let created_at = Utc::now();
            let bucket = bucketing.bucket_of(created_at);
            let id = PostId::generate().timeuuid();
            let written = async {
                writer
                    .session
                    .execute_unpaged(
                        &writer.insert_feed_bucket,
                        (user.as_str(), FEED_TIMELINE, bucket, index_ttl),
                    )
                    .await?;
                writer
                    .session
                    .execute_unpaged(
                        &writer.insert_timeline,
                        (
                            user.as_str(),
                            bucket,
                            id,
                            author.as_str(),
                            content.as_str(),
                            created_at,
                            ttl,
                        ),
                    )
                    .await
            }
            .await;
            Ok(written.is_ok())
        }
    })
    .await?;
    let ok = measured.count_of(true);
    Ok(CqlInsertReport {
        load: LoadSummary::new(&args.shape, &measured),
        rows_per_sec: measured.rate_of(ok),
        failed: measured.count() - ok,
    })
}

impl std::fmt::Display for CqlInsertReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "raw CQL timeline inserts: {} in flight, {:.1} s",
            self.load.concurrency, self.load.window_secs
        )?;
        writeln!(
            f,
            "  rows        {:.0}/s, failed {}",
            self.rows_per_sec, self.failed
        )?;
        write!(f, "  latency     {}", self.load.latency)
    }
}
