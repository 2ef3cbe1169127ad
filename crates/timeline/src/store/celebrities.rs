//! The celebrity set: authors merged into timelines at read time instead of
//! fanned out. Cached in each API process, because every timeline read needs
//! it and it only grows (an author is marked once and never unmarked).

use std::future::Future;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;

use super::*;

/// `IN` queries that check a reader's follows against the celebrity set at the same time.
const FOLLOW_CHECKS_IN_FLIGHT: usize = 4;

/// A copy of the celebrity set, read again once it is older than `refresh`.
#[derive(Debug)]
pub(super) struct CelebrityCache {
    refresh: Duration,
    /// When the copy was read, and the copy. Held across the read of a new
    /// copy, so concurrent readers of a stale set wait for one read, not each
    /// make their own.
    current: Mutex<Option<(Instant, Arc<[String]>)>>,
}

impl CelebrityCache {
    pub(super) fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            current: Mutex::new(None),
        }
    }

    /// The set, from the copy if it is fresh enough, else from `load`.
    pub(super) async fn get<F, Fut>(&self, load: F) -> Result<Arc<[String]>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<String>, StoreError>>,
    {
        let mut current = self.current.lock().await;
        if let Some((read_at, set)) = current.as_ref()
            && read_at.elapsed() < self.refresh
        {
            return Ok(Arc::clone(set));
        }
        let set: Arc<[String]> = load().await?.into();
        metrics::counter!("timeline_celebrity_set_reads_total").increment(1);
        *current = Some((Instant::now(), Arc::clone(&set)));
        Ok(set)
    }
}

impl TimelineStore {
    /// The celebrities `user` follows: the cached celebrity set, checked
    /// against `user`'s follows a chunk at a time with bounded `IN` queries.
    pub(super) async fn followed_celebrities(
        &self,
        user: &UserId,
        consistency: Consistency,
    ) -> Result<Vec<String>, StoreError> {
        let all = self
            .celebrities
            .get(|| self.all_celebrities(consistency))
            .await?;
        let among = with_consistency(&self.statements.select_following_among, consistency);
        let chunk = usize::try_from(self.celebrity_chunk).unwrap_or(100).max(1);
        let checks: Vec<_> = all
            .chunks(chunk)
            .map(|ids| {
                let among = &among;
                async move {
                    let rows = self
                        .session
                        .execute_unpaged(among, (user.as_str(), ids))
                        .await?
                        .into_rows_result()
                        .map_err(rows_error)?;
                    rows.rows::<(String,)>()
                        .map_err(rows_error)?
                        .map(|row| row.map(|(id,)| id).map_err(rows_error))
                        .collect::<Result<Vec<_>, StoreError>>()
                }
            })
            .collect();
        let followed: Vec<Vec<String>> = futures::stream::iter(checks)
            .buffer_unordered(FOLLOW_CHECKS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(followed.into_iter().flatten().collect())
    }

    /// Every celebrity, a page of `celebrity_chunk` at a time.
    async fn all_celebrities(&self, consistency: Consistency) -> Result<Vec<String>, StoreError> {
        let mut statement = with_consistency(&self.statements.select_celebrities, consistency);
        statement.set_page_size(self.celebrity_chunk);
        let mut paging = PagingState::start();
        let mut all = Vec::new();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&statement, (), paging)
                .await?;
            for row in result
                .into_rows_result()
                .map_err(rows_error)?
                .rows::<(String,)>()
                .map_err(rows_error)?
            {
                all.push(row.map_err(rows_error)?.0);
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(all),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn the_set_is_read_once_per_refresh_interval() {
        let reads = AtomicUsize::new(0);
        let load = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(vec!["star".to_owned()])
        };
        let cache = CelebrityCache::new(Duration::from_millis(200));
        for _ in 0..5 {
            assert_eq!(&*cache.get(load).await.expect("set"), ["star".to_owned()]);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "fresh copies are reused");
        tokio::time::sleep(Duration::from_millis(250)).await;
        cache.get(load).await.expect("set");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "a stale copy is read again"
        );

        let uncached = CelebrityCache::new(Duration::ZERO);
        uncached.get(load).await.expect("set");
        uncached.get(load).await.expect("set");
        assert_eq!(reads.load(Ordering::SeqCst), 4, "0 reads it every time");
    }
}
