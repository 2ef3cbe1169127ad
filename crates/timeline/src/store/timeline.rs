//! Home timelines: fan-out rows, and the read that merges celebrities and the reader's own posts.

use super::*;

impl TimelineStore {
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
    pub(super) async fn own_posts(
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
    pub(super) async fn followed_celebrities(
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
    pub(super) async fn walk_feed(
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
    pub(super) async fn buckets(
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
}
