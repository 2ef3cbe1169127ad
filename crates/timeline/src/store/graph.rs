//! The social graph, both ways, and who counts as a celebrity.

use super::*;
use crate::domain::Direction;

impl TimelineStore {
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

    /// A page of whom `user` follows, or of who follows `user`.
    #[tracing::instrument(skip(self, paging_state))]
    pub async fn graph_page(
        &self,
        user: &UserId,
        direction: Direction,
        limit: i32,
        paging_state: Option<Vec<u8>>,
    ) -> Result<Paged<Edge>, StoreError> {
        let mut statement = match direction {
            Direction::Followers => self.statements.select_followers.clone(),
            Direction::Following => self.statements.select_following.clone(),
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
        Ok(self.follow_since(user, target).await?.is_some())
    }

    /// When `user` started following `target`, read at QUORUM (so a follow or
    /// unfollow the API acknowledged is seen); `None` when not following.
    pub async fn follow_since(
        &self,
        user: &UserId,
        target: &UserId,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut statement = self.statements.select_is_following.clone();
        statement.set_consistency(Consistency::Quorum);
        let result = self
            .session
            .execute_unpaged(&statement, (user.as_str(), target.as_str()))
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        let row = result
            .maybe_first_row::<(Option<DateTime<Utc>>,)>()
            .map_err(rows_error)?;
        Ok(row.map(|(since,)| since.unwrap_or_default()))
    }

    /// Which of `authors` `user` follows now: one `IN` query, at QUORUM (the
    /// reader's own follows and unfollows are seen at once), falling back to
    /// ONE when no quorum answers.
    pub async fn followed_among(
        &self,
        user: &UserId,
        authors: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if authors.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let read = |level| async move {
            let statement = with_consistency(&self.statements.select_following_among, level);
            let rows = self
                .session
                .execute_unpaged(&statement, (user.as_str(), authors))
                .await?
                .into_rows_result()
                .map_err(rows_error)?;
            rows.rows::<(String,)>()
                .map_err(rows_error)?
                .map(|row| row.map(|(id,)| id).map_err(rows_error))
                .collect::<Result<std::collections::HashSet<_>, StoreError>>()
        };
        match read(Consistency::Quorum).await {
            Err(error) if error.is_unavailable() => {
                tracing::debug!(%error, "follows read at ONE: no quorum");
                read(Consistency::One).await
            }
            result => result,
        }
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
}
