//! Home timelines: fan-out rows, and the read that merges celebrities and the
//! reader's own posts and leaves out authors the reader no longer follows.

use futures::{StreamExt, TryStreamExt};

use super::*;

/// Batches of candidates one timeline read examines at most when the filter
/// against the reader's follows removes entries; then the page ends early and
/// says where to resume.
pub const FILTER_ROUNDS: usize = 4;

/// Followed celebrities whose posts one timeline read fetches at the same time.
pub const CELEBRITY_READS_IN_FLIGHT: usize = 8;

/// A page of a home timeline.
#[derive(Debug)]
pub struct TimelineSlice {
    /// Newest first.
    pub items: Vec<PostRecord>,
    /// Set when the read stopped after [`FILTER_ROUNDS`] batches without
    /// filling the page (many rows of unfollowed authors in a row): the next
    /// page starts here.
    pub resume: Option<Position>,
}

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
    /// of the celebrities `user` follows, without duplicates, and without the
    /// posts of anyone `user` no longer follows.
    ///
    /// That last filter is what makes an unfollow immediate for reads: each
    /// batch of candidates is checked against `user`'s follows with one `IN`
    /// query (at QUORUM, like the unfollow was written), so neither a row the
    /// clean-up has not removed yet nor one a late chunk wrote after the
    /// unfollow is ever shown. When a batch loses entries to the filter, the
    /// next older batch is read, up to [`FILTER_ROUNDS`] batches; a page still
    /// short then says where to resume.
    ///
    /// `user`'s own posts are read at QUORUM (or the requested level, if
    /// higher), as they were written: read-your-writes for the author holds
    /// even when the timeline itself is read at ONE from a replica that has
    /// not seen the author's own timeline row yet. If no quorum answers they
    /// are read at ONE, like the rest.
    ///
    /// The read cost is bounded by the page, and grows slowly with the set of
    /// celebrities (cached in the process, see `celebrities.rs`): one `IN`
    /// query per [`FeedConfig::celebrity_chunk`] celebrities for which of them
    /// `user` follows; then
    /// for the timeline, `user`'s posts and each followed celebrity (at most
    /// [`CELEBRITY_READS_IN_FLIGHT`] at a time), one bucket-index query plus one
    /// query per non-empty bucket touched, each returning at most `limit` rows.
    #[tracing::instrument(skip(self))]
    pub async fn timeline(
        &self,
        user: &UserId,
        position: Position,
        limit: usize,
        consistency: ReadConsistency,
    ) -> Result<TimelineSlice, StoreError> {
        let level = consistency.cql();
        let oldest = self.oldest_live_bucket();
        let celebrities = self.followed_celebrities(user, level).await?;
        let mut items = Vec::with_capacity(limit);
        let mut position = position;
        for _ in 0..FILTER_ROUNDS {
            let want = limit - items.len();
            let candidates = self
                .merged_candidates(user, position, oldest, want, level, &celebrities)
                .await?;
            let next = match candidates.last() {
                Some(last) if candidates.len() == want => Position::Before {
                    bucket: self.bucketing.bucket_of(last.created_at),
                    post_id: last.id,
                },
                // Fewer than asked: the timeline ends here.
                _ => {
                    items.extend(self.still_followed(user, candidates, &celebrities).await?);
                    return Ok(TimelineSlice {
                        items,
                        resume: None,
                    });
                }
            };
            items.extend(self.still_followed(user, candidates, &celebrities).await?);
            if items.len() >= limit {
                return Ok(TimelineSlice {
                    items,
                    resume: None,
                });
            }
            position = next;
        }
        Ok(TimelineSlice {
            items,
            resume: Some(position),
        })
    }

    /// Up to `limit` candidates from `position`: the fanned-out rows, `user`'s
    /// own posts and the followed celebrities' posts, merged newest first.
    async fn merged_candidates(
        &self,
        user: &UserId,
        position: Position,
        oldest: i64,
        limit: usize,
        level: Consistency,
        celebrities: &[String],
    ) -> Result<Vec<PostRecord>, StoreError> {
        let fanned_out = self.walk_feed(
            Feed::Timeline,
            user.as_str(),
            position,
            oldest,
            limit,
            level,
        );
        let own = self.own_posts(user, position, oldest, limit, level);
        let reads: Vec<_> = celebrities
            .iter()
            .map(|celebrity| self.walk_feed(Feed::Posts, celebrity, position, oldest, limit, level))
            .collect();
        let merged = futures::stream::iter(reads)
            .buffer_unordered(CELEBRITY_READS_IN_FLIGHT)
            .try_collect::<Vec<_>>();
        let (mut entries, own, merged) = futures::try_join!(fanned_out, own, merged)?;
        entries.extend(own);
        entries.extend(merged.into_iter().flatten());
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.id));
        entries.dedup_by_key(|entry| entry.id);
        entries.truncate(limit);
        Ok(entries)
    }

    /// The entries whose author `user` still follows (or is `user`, or a
    /// followed celebrity), checked with one `IN` query for the rest.
    async fn still_followed(
        &self,
        user: &UserId,
        entries: Vec<PostRecord>,
        celebrities: &[String],
    ) -> Result<Vec<PostRecord>, StoreError> {
        let shown_anyway =
            |author: &str| author == user.as_str() || celebrities.iter().any(|c| c == author);
        let mut authors: Vec<&str> = entries
            .iter()
            .map(|entry| entry.author_id.as_str())
            .filter(|author| !shown_anyway(author))
            .collect();
        authors.sort_unstable();
        authors.dedup();
        let followed = self.followed_among(user, &authors).await?;
        drop(authors);
        Ok(entries
            .into_iter()
            .filter(|entry| {
                shown_anyway(&entry.author_id) || followed.contains(entry.author_id.as_str())
            })
            .collect())
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
