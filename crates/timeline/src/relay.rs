//! The outbox relay: re-publishes fan-out messages that the request that wrote
//! them could not publish (NATS away, an ack that never came).
//!
//! Every API process runs one. The relays of a deployment share its outbox
//! shards by rendezvous hashing over the ids of the live relays (each writes a
//! heartbeat row with a short TTL every tick and reads the others'), so N
//! processes do the work once, not N times; while membership changes, two
//! relays may briefly relay the same shard, which is harmless: JetStream drops
//! a duplicate message id and timeline rows are idempotent.
//!
//! Each owned shard is scanned from its watermark, one time bucket per query,
//! up to the bucket `relay_after` ago. Rows found are published with bounded
//! concurrency, and the acked ones deleted with one statement per batch; a
//! bucket is read batch after batch while they come back full. A
//! prefix of buckets found empty and old enough (see [`OUTBOX_RETIRE_MARGIN`])
//! moves the watermark past them for good, so the tombstones of relayed (and
//! normally published) rows are read only while their bucket is recent.

use std::hash::Hasher;
use std::time::Duration;

use futures::StreamExt;
use scylla::value::CqlTimeuuid;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::OutboxConfig;
use crate::publisher::{FanoutPublisher, PublishError};
use crate::store::{StoreError, StoreSlot, TimelineStore, outbox_bucketing};

/// Outbox rows the relay reads per query.
const RELAY_BATCH: i32 = 100;
/// Batches of one bucket one pass relays at most, so one tick stays bounded.
const BATCHES_PER_BUCKET: usize = 20;
/// Publishes one relay has waiting for their acks at the same time.
const PUBLISHES_IN_FLIGHT: usize = 32;
/// Most buckets of one shard the relay reads per tick, so catching up after a
/// long stop takes several ticks rather than one unbounded one.
const RELAY_BUCKETS_PER_TICK: i64 = 64;
/// How long past its end (and past `relay_after`) a bucket must be before an
/// empty scan of it moves the watermark past it: longer than a batch write
/// can take (the driver's request timeout and its retries) plus the clock
/// skew between API processes, so no row can land in a bucket already passed.
pub const OUTBOX_RETIRE_MARGIN: Duration = Duration::from_secs(60);
/// Ticks a relay's heartbeat outlives: a relay missing this many is taken
/// for gone and its shards move to the others.
const HEARTBEAT_TICKS: u32 = 5;

/// Why one shard's relay pass stopped early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("reading the outbox: {0}")]
    Store(#[from] StoreError),
    #[error("publishing: {0}")]
    Publish(#[from] PublishError),
}

/// The shards of `shards` that `relay` owns among `relays`: each shard goes to
/// the relay with the highest SipHash-1-3 (fixed keys, so every process and
/// build agrees) of (relay, shard). Every relay that sees the same list
/// computes the same split, with no coordination.
pub fn owned_shards(relay: Uuid, relays: &[Uuid], shards: i32) -> Vec<i32> {
    let score = |candidate: &Uuid, shard: i32| {
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0, 0);
        hasher.write(candidate.as_bytes());
        hasher.write(&shard.to_be_bytes());
        hasher.finish()
    };
    (0..shards)
        .filter(|&shard| {
            relays
                .iter()
                .max_by_key(|candidate| (score(candidate, shard), **candidate))
                == Some(&relay)
        })
        .collect()
}

/// Re-publishes outbox rows older than `relay_after` until `shutdown`.
pub async fn relay_outbox(
    store: StoreSlot,
    publisher: FanoutPublisher,
    config: OutboxConfig,
    shutdown: CancellationToken,
) {
    let me = Uuid::new_v4();
    let heartbeat = (config.relay_interval() * HEARTBEAT_TICKS).max(Duration::from_secs(3));
    let topic = publisher.subjects().prefix().to_owned();
    let mut tick = tokio::time::interval(config.relay_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream_ready = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(store) = store.get() else { continue };
        if publisher.is_connected() && !stream_ready {
            match publisher.ensure_stream().await {
                Ok(_) => stream_ready = true,
                Err(error) => tracing::warn!(%error, "cannot create the fan-out stream yet"),
            }
        }
        let relays = match store.outbox_relays(&topic, me, heartbeat).await {
            Ok(relays) => relays,
            Err(error) => {
                tracing::warn!(%error, "cannot read the outbox relays");
                continue;
            }
        };
        let shards = owned_shards(me, &relays, config.outbox_shards);
        #[allow(clippy::cast_precision_loss)] // a handful of shards
        metrics::gauge!("timeline_outbox_shards_owned").set(shards.len() as f64);
        // Without NATS the passes still move watermarks over empty buckets;
        // they stop at the first row due.
        for shard in shards {
            match relay_shard(store, &publisher, &config, &topic, shard).await {
                Ok(()) => {}
                Err(RelayError::Store(error)) => {
                    tracing::warn!(%error, "cannot read or clear the outbox; retrying next tick");
                    break;
                }
                Err(RelayError::Publish(error)) => {
                    if publisher.is_connected() {
                        tracing::warn!(%error, "outbox relay cannot publish; retrying later");
                    }
                    // The stream may be gone (a fresh server): re-create it next tick.
                    stream_ready = false;
                    break;
                }
            }
        }
    }
}

/// Publishes `rows` (of one outbox partition) with bounded concurrency and
/// deletes the acked ones with one statement; then the first failure, if any
/// (a publish, or the delete).
async fn relay_rows(
    store: &TimelineStore,
    publisher: &FanoutPublisher,
    topic: &str,
    shard: i32,
    bucket: i64,
    rows: &[crate::store::OutboxEntry],
) -> Result<(), RelayError> {
    let publishes: Vec<_> = rows
        .iter()
        .map(|entry| async move { (entry.id, publisher.publish_entry(entry).await) })
        .collect();
    let published: Vec<(CqlTimeuuid, Result<(), PublishError>)> = futures::stream::iter(publishes)
        .buffer_unordered(PUBLISHES_IN_FLIGHT)
        .collect()
        .await;
    let mut acked = Vec::with_capacity(published.len());
    let mut failure = None;
    for (id, outcome) in published {
        match outcome {
            Ok(()) => acked.push(id),
            Err(error) => failure = Some(error),
        }
    }
    metrics::counter!("timeline_outbox_relayed_total").increment(acked.len() as u64);
    // A failed delete ends the pass: reading the bucket again would publish
    // the same rows again. The next tick relays them (harmlessly) once more.
    store
        .delete_outbox_ids(topic, shard, bucket, &acked)
        .await?;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// One pass over one shard of the deployment's outbox.
async fn relay_shard(
    store: &TimelineStore,
    publisher: &FanoutPublisher,
    config: &OutboxConfig,
    topic: &str,
    shard: i32,
) -> Result<(), RelayError> {
    let Some(watermark) = store.outbox_watermark(topic, shard).await? else {
        return Ok(()); // never written
    };
    let bucketing = outbox_bucketing();
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(config.relay_after()).unwrap_or_default();
    let due = bucketing.bucket_of(cutoff);
    // Buckets below this one ended more than the margin before the cutoff.
    let retire_below = bucketing
        .bucket_of(cutoff - chrono::Duration::from_std(OUTBOX_RETIRE_MARGIN).unwrap_or_default());
    let mut advance_to = watermark;
    let last = due.min(watermark.saturating_add(RELAY_BUCKETS_PER_TICK - 1));
    for bucket in watermark..=last {
        // Batch after batch while they come back full (a backlog), up to a bound per tick.
        for batch in 0..BATCHES_PER_BUCKET {
            let rows = store
                .due_outbox(topic, shard, bucket, cutoff, RELAY_BATCH)
                .await?;
            if rows.is_empty() {
                if batch == 0 && advance_to == bucket && bucket < retire_below {
                    advance_to = bucket + 1;
                }
                break;
            }
            relay_rows(store, publisher, topic, shard, bucket, &rows).await?;
            if rows.len() < RELAY_BATCH as usize {
                break;
            }
        }
    }
    if advance_to > watermark {
        store
            .advance_outbox_watermark(topic, shard, advance_to)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_has_exactly_one_owner_and_the_work_is_shared() {
        // Fixed ids: the split is a pure function of them.
        let relays: Vec<Uuid> = (1..=3_u128)
            .map(|n| Uuid::from_u128(n * 0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut owners = vec![0; 64];
        for relay in &relays {
            let owned = owned_shards(*relay, &relays, 64);
            assert!(
                (8..=40).contains(&owned.len()),
                "a fair share, not all or nothing: {}",
                owned.len()
            );
            for shard in owned {
                owners[usize::try_from(shard).expect("shard")] += 1;
            }
        }
        assert!(owners.iter().all(|count| *count == 1), "{owners:?}");
        // Alone, a relay owns every shard.
        assert_eq!(
            owned_shards(relays[0], &relays[..1], 8),
            (0..8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_relay_leaving_moves_only_its_own_shards() {
        let relays: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect(); // any ids
        let before = owned_shards(relays[0], &relays, 64);
        let after = owned_shards(relays[0], &relays[..3], 64);
        assert!(
            before.iter().all(|shard| after.contains(shard)),
            "kept its shards"
        );
    }
}
