//! The store of a process that starts before its cluster does: empty until
//! the background set-up (connect, migrate, prepare) succeeds.

use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use super::*;

/// The store once it is connected, migrated and prepared; empty before.
#[derive(Debug, Clone, Default)]
pub struct StoreSlot {
    store: Arc<OnceCell<TimelineStore>>,
    /// Wakes the tasks in [`StoreSlot::wait`] when the store is set.
    filled: Arc<Notify>,
}

impl StoreSlot {
    /// The store, or [`StoreError::NotReady`] while it is being set up.
    pub fn get(&self) -> Result<&TimelineStore, StoreError> {
        self.store.get().ok_or(StoreError::NotReady)
    }

    /// Waits until the store is set up (or forever, if it never is).
    pub async fn wait(&self) -> &TimelineStore {
        loop {
            // Register for the wake-up before looking, so a fill in between is not missed.
            let filled = self.filled.notified();
            if let Some(store) = self.store.get() {
                return store;
            }
            filled.await;
        }
    }

    /// Cassandra readiness: the store is set up and the cluster answers a query.
    pub fn readiness_check(&self) -> service_kit::health::CassandraCheck {
        let store = Arc::clone(&self.store);
        service_kit::health::CassandraCheck::deferred(move || {
            store.get().map(|store| Arc::clone(store.session()))
        })
    }

    /// Connects, migrates and prepares, retrying with back-off until it
    /// succeeds or `shutdown` is cancelled.
    pub async fn fill(
        &self,
        cassandra: CassandraConfig,
        feed: FeedConfig,
        shutdown: CancellationToken,
    ) {
        let connected =
            service_kit::retry::until_cancelled("the timeline store", &shutdown, || {
                TimelineStore::connect(&cassandra, &feed)
            })
            .await;
        if let Some(store) = connected {
            tracing::info!(keyspace = %cassandra.cassandra_keyspace, "timeline store ready");
            let _ = self.store.set(store);
            self.filled.notify_waiters();
        }
    }
}
