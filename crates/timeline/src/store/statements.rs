//! Every CQL statement of the store, prepared once at start-up.

use scylla::statement::SerialConsistency;

use super::*;
use crate::config::PostWriteConsistency;

/// The statements, prepared once.
pub(super) struct Statements {
    pub(super) insert_timeline: PreparedStatement,
    pub(super) insert_feed_bucket: PreparedStatement,
    pub(super) delete_timeline: PreparedStatement,
    pub(super) delete_outbox: PreparedStatement,
    /// Deletes the given ids of one outbox partition.
    pub(super) delete_outbox_ids: PreparedStatement,
    pub(super) heartbeat_outbox_relay: PreparedStatement,
    pub(super) select_outbox_relays: PreparedStatement,
    pub(super) select_outbox_due: PreparedStatement,
    pub(super) select_outbox_watermark: PreparedStatement,
    pub(super) advance_outbox_watermark: PreparedStatement,
    pub(super) insert_celebrity: PreparedStatement,
    pub(super) select_celebrities: PreparedStatement,
    pub(super) select_is_celebrity: PreparedStatement,
    pub(super) select_post: PreparedStatement,
    /// `INSERT … IF NOT EXISTS` of an Idempotency-Key record (a lightweight transaction).
    pub(super) claim_post_key: PreparedStatement,
    pub(super) select_feed_buckets: PreparedStatement,
    pub(super) select_author_posts: PreparedStatement,
    pub(super) select_author_posts_top: PreparedStatement,
    pub(super) select_author_posts_before: PreparedStatement,
    pub(super) select_timeline_top: PreparedStatement,
    pub(super) select_timeline_before: PreparedStatement,
    pub(super) select_following: PreparedStatement,
    pub(super) select_followers: PreparedStatement,
    pub(super) select_is_following: PreparedStatement,
    pub(super) select_following_among: PreparedStatement,
    /// post + per-author row + bucket index + author's own timeline row + its
    /// index + outbox + outbox watermark floor: logged at QUORUM, or unlogged
    /// at ONE (`POST_WRITE_CONSISTENCY`).
    pub(super) create_post: Batch,
    /// following + followers + outbox + outbox watermark floor.
    pub(super) follow: Batch,
    /// following + followers deleted + outbox + outbox watermark floor.
    pub(super) unfollow: Batch,
}

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements").finish_non_exhaustive()
    }
}

impl Statements {
    pub(super) async fn prepare(
        session: &Session,
        post_write: PostWriteConsistency,
    ) -> Result<Self, StoreError> {
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

        // At ONE the batch is unlogged: a logged one first writes its
        // batchlog to other live nodes, which a node cut off from its peers
        // cannot do at any level (see `PostWriteConsistency::One`).
        let (post_batch, post_consistency) = match post_write {
            PostWriteConsistency::Quorum => (BatchType::Logged, Consistency::Quorum),
            PostWriteConsistency::One => (BatchType::Unlogged, Consistency::One),
        };
        let create_post = batch(
            post_batch,
            post_consistency,
            &[
                &insert_post,
                &insert_author_post,
                &insert_feed_bucket,
                &insert_timeline,
                &insert_feed_bucket,
                &insert_outbox,
                &floor_outbox_watermark,
            ],
        );
        let follow = logged_batch(&[
            &insert_following,
            &insert_follower,
            &insert_outbox,
            &floor_outbox_watermark,
        ]);
        let unfollow = logged_batch(&[
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
            delete_outbox_ids: write(
                "DELETE FROM fanout_outbox WHERE topic = ? AND shard = ? AND bucket = ? AND id IN ?",
            )
            .await?,
            heartbeat_outbox_relay: write(
                "INSERT INTO outbox_relays (topic, relay_id) VALUES (?, ?) USING TTL ?",
            )
            .await?,
            select_outbox_relays: prepare(
                session,
                "SELECT relay_id FROM outbox_relays WHERE topic = ?",
                Consistency::Quorum,
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
            claim_post_key: {
                let mut claim = write(
                    "INSERT INTO post_idempotency (author_id, key, post_id, content) \
                     VALUES (?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
                )
                .await?;
                claim.set_serial_consistency(Some(SerialConsistency::Serial));
                claim
            },
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
                "SELECT since FROM following WHERE user_id = ? AND target_id = ?",
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
fn logged_batch(statements: &[&PreparedStatement]) -> Batch {
    batch(BatchType::Logged, Consistency::Quorum, statements)
}

/// A batch of `kind` at `consistency` of already prepared statements (the
/// batch's level applies, not theirs).
fn batch(kind: BatchType, consistency: Consistency, statements: &[&PreparedStatement]) -> Batch {
    let mut batch = Batch::new(kind);
    for statement in statements {
        batch.append_statement((*statement).clone());
    }
    batch.set_consistency(consistency);
    batch.set_is_idempotent(true);
    batch
}
