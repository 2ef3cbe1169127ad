//! The background sweeper: releases expired holds, forgets old idempotency keys.
//!
//! Any number of service instances may run it at once: each batch takes its
//! holds with `FOR UPDATE SKIP LOCKED`, so two sweepers never release the same
//! hold and never wait on each other.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::PgStore;

/// How often and how much the sweeper works.
#[derive(Debug, Clone, Copy)]
pub struct SweeperSettings {
    pub interval: Duration,
    pub batch_size: i64,
    pub idempotency_retention: Duration,
}

/// Runs until `shutdown` is cancelled; a batch in progress is finished first.
pub async fn run(store: PgStore, settings: SweeperSettings, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Keep going while batches come back full: there is a backlog.
        loop {
            match store.sweep_expired(settings.batch_size).await {
                Ok(released) => {
                    metrics::counter!("inventory_holds_expired_total").increment(released as u64);
                    if (released as i64) < settings.batch_size || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "sweeping expired holds failed; will retry");
                    break;
                }
            }
        }
        ticks += 1;
        // About once a minute at the default interval.
        if ticks.is_multiple_of(120)
            && let Err(error) = store
                .purge_idempotency_keys(settings.idempotency_retention)
                .await
        {
            tracing::warn!(%error, "purging idempotency keys failed; will retry");
        }
    }
    tracing::info!("sweeper stopped");
}
