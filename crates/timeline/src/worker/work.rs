//! What each fan-out message does: a post (written directly, or split into
//! chunk messages), a chunk, a follow (backfill), an unfollow (clean-up).

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::{Failure, Worker};
use crate::domain::UserId;
use crate::messages::{Envelope, FanoutMessage, PostPayload};
use crate::store::{PostRecord, StoreError};

/// Most posts an unfollow removes (those within the TTL window, newest first).
const UNFOLLOW_REMOVE_LIMIT: usize = 10_000;

impl Worker {
    pub(super) async fn process(&self, message: FanoutMessage) -> Result<(), Failure> {
        match message {
            FanoutMessage::Post { post } => self.fan_out_post(post).await,
            FanoutMessage::Chunk {
                post, followers, ..
            } => {
                let record = record(&post);
                self.write_rows(&record, &followers).await?;
                observe_lag(&post);
                Ok(())
            }
            FanoutMessage::Follow {
                follower, followee, ..
            } => self.backfill(&follower, &followee).await,
            FanoutMessage::Unfollow {
                follower,
                followee,
                since,
                ..
            } => self.remove_followee(&follower, &followee, since).await,
        }
    }

    async fn fan_out_post(&self, post: PostPayload) -> Result<(), Failure> {
        let author = &post.author_id;
        if self.store.is_celebrity(author).await? {
            metrics::counter!("timeline_fanout_celebrity_skips_total").increment(1);
            return Ok(());
        }
        let threshold = self.config.feed.celebrity_threshold;
        let chunk_size = self.config.fanout.chunk_size();
        let mut followers = Vec::new();
        let mut paging_state = None;
        loop {
            let page = self
                .store
                .followers_for_fanout(
                    author,
                    i32::try_from(chunk_size).unwrap_or(500),
                    paging_state,
                )
                .await?;
            followers.extend(page.items);
            if followers.len() > threshold {
                tracing::info!(%author, threshold, "author passed the celebrity threshold; merged at read time from now on");
                self.store.mark_celebrity(author).await?;
                metrics::counter!("timeline_fanout_celebrity_skips_total").increment(1);
                return Ok(());
            }
            match page.paging_state {
                Some(state) => paging_state = Some(state),
                None => break,
            }
        }
        if followers.len() <= chunk_size {
            self.write_rows(&record(&post), &followers).await?;
            observe_lag(&post);
            return Ok(());
        }
        // Publish every chunk, then wait for all the acks.
        let chunks = followers
            .chunks(chunk_size)
            .enumerate()
            .map(|(index, chunk)| {
                let message = FanoutMessage::Chunk {
                    post: post.clone(),
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    followers: chunk.to_vec(),
                };
                let subject = self.publisher.subjects().work(message.kind());
                let msg_id = message.message_id();
                let payload = Envelope::new(message).to_bytes();
                async move {
                    self.publisher
                        .publish(&subject, &msg_id, payload, None)
                        .await
                }
            });
        let published = futures::future::join_all(chunks).await;
        let count = published.len();
        published.into_iter().collect::<Result<Vec<()>, _>>()?;
        metrics::counter!("timeline_fanout_chunks_total").increment(count as u64);
        Ok(())
    }

    /// Writes `post` into each user's timeline, a bounded number at a time.
    async fn write_rows(&self, post: &PostRecord, users: &[UserId]) -> Result<(), StoreError> {
        futures::stream::iter(users.iter().cloned())
            .map(|user| {
                let (store, post) = (self.store.clone(), post.clone());
                async move { store.write_timeline_row(&user, &post).await }
            })
            .buffer_unordered(self.config.fanout.write_concurrency())
            .try_for_each(|_| async { Ok(()) })
            .await?;
        metrics::counter!("timeline_fanout_rows_written_total").increment(users.len() as u64);
        Ok(())
    }

    async fn backfill(&self, follower: &UserId, followee: &UserId) -> Result<(), Failure> {
        if !self.store.is_following(follower, followee).await?
            || self.store.is_celebrity(followee).await?
        {
            return Ok(()); // undone meanwhile, or merged at read time
        }
        let posts = self
            .store
            .recent_posts(followee, self.config.feed.backfill_posts)
            .await?;
        for post in &posts {
            self.store.write_timeline_row(follower, post).await?;
        }
        // An unfollow may have been processed while we wrote: undo.
        if !self.store.is_following(follower, followee).await? {
            for post in &posts {
                self.store.delete_timeline_row(follower, post).await?;
            }
        }
        metrics::counter!("timeline_backfilled_posts_total").increment(posts.len() as u64);
        Ok(())
    }

    /// Clean-up after an unfollow (reads already leave the followee out):
    /// deletes only rows that can exist, the followee's posts since the follow
    /// was made and the backfilled ones just before it, so an unfollow never
    /// writes tombstones for rows that were never there.
    async fn remove_followee(
        &self,
        follower: &UserId,
        followee: &UserId,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), Failure> {
        if self.store.is_following(follower, followee).await? {
            return Ok(()); // followed again since
        }
        let posts = self
            .store
            .recent_posts(followee, UNFOLLOW_REMOVE_LIMIT)
            .await?;
        let backfill = self.config.feed.backfill_posts;
        let (after, before): (Vec<_>, Vec<_>) = posts
            .into_iter()
            .partition(|post| since.is_some_and(|since| post.created_at >= since));
        let removable: Vec<PostRecord> = after
            .into_iter()
            .chain(before.into_iter().take(backfill))
            .collect();
        metrics::counter!("timeline_unfollow_rows_removed_total").increment(removable.len() as u64);
        futures::stream::iter(removable)
            .map(|post| {
                let (store, follower) = (self.store.clone(), follower.clone());
                async move { store.delete_timeline_row(&follower, &post).await }
            })
            .buffer_unordered(self.config.fanout.write_concurrency())
            .try_for_each(|()| async { Ok(()) })
            .await?;
        Ok(())
    }
}

fn record(post: &PostPayload) -> PostRecord {
    PostRecord {
        id: post.id,
        author_id: post.author_id.as_str().to_owned(),
        content: post.content.clone(),
        created_at: post.created_at,
    }
}

/// Post accepted → its rows written.
fn observe_lag(post: &PostPayload) {
    let lag = (Utc::now() - post.created_at).num_milliseconds().max(0);
    #[allow(clippy::cast_precision_loss)] // milliseconds fit an f64 exactly
    metrics::histogram!("timeline_fanout_lag_seconds").record(lag as f64 / 1000.0);
}
