//! The outbox: fan-out messages waiting for a publish ack, sharded and bucketed by time, and the per-shard watermarks the relay scans from.

use super::*;

impl TimelineStore {
    /// The oldest outbox bucket of `topic`'s `shard` that may still hold
    /// rows; `None` when the shard never had a row.
    pub async fn outbox_watermark(
        &self,
        topic: &str,
        shard: i32,
    ) -> Result<Option<i64>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.select_outbox_watermark, (topic, shard))
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        let row = result.maybe_first_row::<(i64,)>().map_err(rows_error)?;
        Ok(row.map(|(bucket,)| bucket))
    }

    /// Records that `topic`'s `shard` has no rows below `bucket` (an
    /// ordinary write: it outranks the floors the batches write).
    pub async fn advance_outbox_watermark(
        &self,
        topic: &str,
        shard: i32,
        bucket: i64,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.statements.advance_outbox_watermark,
                (topic, shard, bucket),
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` outbox rows of one bucket of `topic`'s `shard`, made before `cutoff`.
    pub async fn due_outbox(
        &self,
        topic: &str,
        shard: i32,
        bucket: i64,
        cutoff: DateTime<Utc>,
        limit: i32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let result = self
            .session
            .execute_unpaged(
                &self.statements.select_outbox_due,
                (topic, shard, bucket, cutoff, limit),
            )
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        result
            .rows::<OutboxRow>()
            .map_err(rows_error)?
            .map(|row| {
                row.map(|r| OutboxEntry {
                    topic: r.topic,
                    shard: r.shard,
                    bucket: r.bucket,
                    id: r.id,
                    subject: r.subject,
                    msg_id: r.msg_id,
                    payload: r.payload,
                })
                .map_err(rows_error)
            })
            .collect()
    }

    /// Deletes rows of one outbox partition (`topic`, `shard`, `bucket`) by id,
    /// in one statement.
    pub async fn delete_outbox_ids(
        &self,
        topic: &str,
        shard: i32,
        bucket: i64,
        ids: &[CqlTimeuuid],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.session
            .execute_unpaged(
                &self.statements.delete_outbox_ids,
                (topic, shard, bucket, ids),
            )
            .await?;
        Ok(())
    }

    /// Says that relay `relay` of `topic` is alive for `ttl`, and returns
    /// every relay of `topic` alive now (this one included).
    pub async fn outbox_relays(
        &self,
        topic: &str,
        relay: uuid::Uuid,
        ttl: Duration,
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        let ttl = i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX).max(1);
        self.session
            .execute_unpaged(&self.statements.heartbeat_outbox_relay, (topic, relay, ttl))
            .await?;
        let rows = self
            .session
            .execute_unpaged(&self.statements.select_outbox_relays, (topic,))
            .await?
            .into_rows_result()
            .map_err(rows_error)?;
        let mut relays = rows
            .rows::<(uuid::Uuid,)>()
            .map_err(rows_error)?
            .map(|row| row.map(|(id,)| id).map_err(rows_error))
            .collect::<Result<Vec<_>, _>>()?;
        if !relays.contains(&relay) {
            relays.push(relay);
        }
        Ok(relays)
    }

    pub async fn delete_outbox(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.statements.delete_outbox,
                (entry.topic.as_str(), entry.shard, entry.bucket, entry.id),
            )
            .await?;
        Ok(())
    }
}

pub(super) type OutboxValues<'a> = (&'a str, i32, i64, CqlTimeuuid, &'a str, &'a str, &'a [u8]);

pub(super) fn outbox_values(entry: &OutboxEntry) -> OutboxValues<'_> {
    (
        entry.topic.as_str(),
        entry.shard,
        entry.bucket,
        entry.id,
        entry.subject.as_str(),
        entry.msg_id.as_str(),
        entry.payload.as_slice(),
    )
}

/// The watermark floor of an outbox row: its bucket, written at a timestamp
/// that is larger the older the bucket (so the oldest floor wins) and smaller
/// than any real write (so a relay's advance wins).
pub(super) fn watermark_floor_values(entry: &OutboxEntry) -> (&str, i32, i64, i64) {
    (
        entry.topic.as_str(),
        entry.shard,
        entry.bucket,
        WATERMARK_FLOOR_TIMESTAMP - entry.bucket.clamp(0, WATERMARK_FLOOR_TIMESTAMP - 1),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    pub(super) fn entry() -> OutboxEntry {
        OutboxEntry::new(
            "t".into(),
            "t.fanout.post".into(),
            "m".into(),
            Vec::new(),
            DEFAULT_OUTBOX_SHARDS,
        )
    }

    #[test]
    pub(super) fn outbox_rows_of_one_process_spread_over_the_shards() {
        let shards: BTreeSet<i32> = (0..200).map(|_| entry().shard).collect();
        assert!(
            shards.len() > DEFAULT_OUTBOX_SHARDS as usize / 2,
            "{shards:?}"
        );
        assert!(
            shards
                .iter()
                .all(|s| (0..DEFAULT_OUTBOX_SHARDS).contains(s))
        );
        let wide: BTreeSet<i32> = (0..2000)
            .map(|_| OutboxEntry::new("t".into(), "s".into(), "m".into(), Vec::new(), 300).shard)
            .collect();
        assert!(wide.len() > 250 && wide.iter().all(|s| (0..300).contains(s)));
    }

    #[test]
    pub(super) fn an_outbox_row_sits_in_the_bucket_of_its_id() {
        let entry = entry();
        let at = PostId::from_timeuuid(entry.id).created_at();
        assert_eq!(entry.bucket, outbox_bucketing().bucket_of(at));
    }

    #[test]
    pub(super) fn watermark_floors_rank_older_buckets_higher_and_below_real_writes() {
        let mut older = entry();
        older.bucket -= 1;
        let (newer, older) = (entry(), older);
        let (_, _, _, newer_ts) = watermark_floor_values(&newer);
        let (_, _, _, older_ts) = watermark_floor_values(&older);
        assert!(older_ts > newer_ts);
        // A real write timestamp: microseconds since 1970.
        let real = Utc::now().timestamp_micros();
        assert!(older_ts > 0 && older_ts < real / 1000);
    }
}
