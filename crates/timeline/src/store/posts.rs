//! Posts: writing one (with its fan-out message), the Idempotency-Key claims
//! that make retries safe, and reading them back.

use scylla::value::CqlValue;

use super::*;

/// Who holds an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// This request: go on and make the post.
    Ours,
    /// An earlier request, which made (or is making) `post_id` with `content`.
    Earlier { post_id: PostId, content: String },
}

impl TimelineStore {
    /// Writes a post, its per-author row and the author's own timeline row,
    /// with the outbox row of its fan-out message, in one batch at
    /// `POST_WRITE_CONSISTENCY`:
    ///
    /// - `quorum` (the default): a logged batch at QUORUM, so all of it
    ///   lands, or none of it;
    /// - `one`: an unlogged batch at ONE, which a node cut off from its peers
    ///   still takes, but which is not atomic across its partitions: a
    ///   failure can leave some rows behind (a post readable by its id, say,
    ///   without its outbox row, so never fanned out), and the caller's retry
    ///   makes a new post unless it carries an `Idempotency-Key` (whose claim
    ///   needs a majority anyway; see
    ///   [`PostWriteConsistency::One`](crate::config::PostWriteConsistency::One)).
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

    /// Claims an `Idempotency-Key` of `author` for the post `id` with
    /// `content`, with a lightweight transaction (Paxos at SERIAL), so two
    /// concurrent requests with one key cannot both win. The record lives for
    /// `retention`. Returns the claim that holds the key now: ours, or the one
    /// an earlier request made.
    #[tracing::instrument(skip(self, content))]
    pub async fn claim_post_key(
        &self,
        author: &UserId,
        key: &str,
        id: PostId,
        content: &str,
        retention: Duration,
    ) -> Result<KeyClaim, StoreError> {
        let ttl = i32::try_from(retention.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let result = self
            .session
            .execute_unpaged(
                &self.statements.claim_post_key,
                (author.as_str(), key, id.timeuuid(), content, ttl),
            )
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        // `[applied]`, then (when not applied) the existing row's columns:
        // look them up by name rather than trusting their order.
        let column = |name: &str| {
            result
                .column_specs()
                .iter()
                .position(|spec| spec.name() == name)
        };
        let (applied, post_id, original) =
            (column("[applied]"), column("post_id"), column("content"));
        let row = result
            .maybe_first_row::<scylla::value::Row>()
            .map_err(rows_error)?
            .ok_or_else(|| StoreError::Rows("a lightweight transaction answered no row".into()))?;
        let value = |index: Option<usize>| index.and_then(|i| row.columns.get(i)?.clone());
        if let Some(CqlValue::Boolean(true)) = value(applied) {
            return Ok(KeyClaim::Ours);
        }
        match (value(post_id), value(original)) {
            (Some(CqlValue::Timeuuid(post_id)), Some(CqlValue::Text(content))) => {
                let post_id = PostId::from_uuid(post_id.into()).ok_or_else(|| {
                    StoreError::Rows("an idempotency record holds a bad post id".into())
                })?;
                Ok(KeyClaim::Earlier { post_id, content })
            }
            _ => Err(StoreError::Rows(
                "a lightweight transaction answered neither applied nor the existing row".into(),
            )),
        }
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
}
