//! Releasing holds that are past their expiry.
//!
//! The background sweeper releases them in batches. A reservation releases the
//! due holds on its own products first, in a transaction of its own, so a
//! buyer is never refused for stock that an expired hold still counts. Reads
//! release nothing: they subtract due holds in the query (see `products.rs`).

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use super::retry::{Step, in_transaction};
use super::{PgStore, lock_products_of};

/// Which expired holds to release.
#[derive(Debug, Clone, Copy)]
pub enum ExpiryScope<'a> {
    /// Up to `n` of the oldest expired holds (the sweeper's batch). Holds
    /// another transaction has locked are skipped (`SKIP LOCKED`): that
    /// transaction is confirming, cancelling or expiring them itself.
    Oldest(i64),
    /// Every expired hold with a line on one of these skus. Holds another
    /// transaction has locked are waited for (up to the lock timeout), not
    /// skipped: once it commits, a hold it released no longer qualifies and one
    /// it left is released here, so the caller never counts an expired hold.
    Skus(&'a [String]),
}

impl ExpiryScope<'_> {
    /// Marks the selected expired holds `expired`, gives their stock back to
    /// `available` and appends `expired` ledger rows, within `tx`. The holds are
    /// locked in id order, then their products in sku order (the store's lock
    /// order). Returns how many were released.
    pub async fn release(self, tx: &mut PgConnection) -> Result<usize, sqlx::Error> {
        let due: Vec<Uuid> = match self {
            Self::Oldest(limit) => {
                sqlx::query_scalar!(
                    "SELECT id FROM reservations
                     WHERE status = 'held' AND expires_at <= now()
                     ORDER BY expires_at
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED",
                    limit,
                )
                .fetch_all(&mut *tx)
                .await?
            }
            Self::Skus(skus) => {
                sqlx::query_scalar!(
                    "SELECT r.id FROM reservations r
                     WHERE r.status = 'held' AND r.expires_at <= now()
                       AND EXISTS (SELECT 1 FROM reservation_items i
                                   WHERE i.reservation_id = r.id AND i.sku = ANY($1))
                     ORDER BY r.id
                     FOR UPDATE OF r",
                    skus,
                )
                .fetch_all(&mut *tx)
                .await?
            }
        };
        if due.is_empty() {
            return Ok(0);
        }
        release_holds(tx, &due, "expired").await?;
        Ok(due.len())
    }
}

/// Whether any hold past its expiry still counts against one of `skus`.
/// One cheap, lock-free query that spares the common case a transaction.
pub(super) async fn has_due_holds(
    conn: &mut PgConnection,
    skus: &[String],
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
             WHERE r.status = 'held' AND r.expires_at <= now() AND i.sku = ANY($1)
           ) AS "due!""#,
        skus,
    )
    .fetch_one(conn)
    .await
}

/// Ends the given holds (already locked by the caller) with `status`
/// (`expired` or `cancelled`): their stock goes back to `available`, and each
/// line gets a ledger row (`expired` or `released`). One statement per step.
pub(super) async fn release_holds(
    tx: &mut PgConnection,
    ids: &[Uuid],
    status: &'static str,
) -> Result<(), sqlx::Error> {
    let ledger_kind = if status == "expired" {
        "expired"
    } else {
        "released"
    };
    lock_products_of(tx, ids).await?;
    sqlx::query!(
        "UPDATE products p
         SET available = p.available + moved.quantity,
             reserved = p.reserved - moved.quantity,
             version = p.version + 1,
             updated_at = now()
         FROM (SELECT sku, SUM(quantity)::BIGINT AS quantity
               FROM reservation_items WHERE reservation_id = ANY($1)
               GROUP BY sku) AS moved
         WHERE p.sku = moved.sku",
        ids,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
         SELECT sku, $2, quantity, reservation_id
         FROM reservation_items WHERE reservation_id = ANY($1)
         ORDER BY reservation_id, sku",
        ids,
        ledger_kind,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE reservations SET status = $2, updated_at = now() WHERE id = ANY($1)",
        ids,
        status,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl PgStore {
    /// Releases up to `batch` expired holds in one transaction; returns how many.
    #[tracing::instrument(skip(self))]
    pub async fn sweep_expired(&self, batch: i64) -> Result<usize, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let released = in_transaction!(&mut conn, &self.settings.retry, "sweep", |tx| async move {
            Ok(Step::Commit(ExpiryScope::Oldest(batch).release(tx).await?))
        });
        Ok(released)
    }

    /// Releases the due holds on `skus`, if there are any, in a transaction of
    /// their own (see the module documentation of `store` for why).
    pub(super) async fn release_due_holds(
        &self,
        conn: &mut PgConnection,
        skus: &[String],
    ) -> Result<(), StoreError> {
        if !has_due_holds(conn, skus).await? {
            return Ok(());
        }
        in_transaction!(
            &mut *conn,
            &self.settings.retry,
            "expire",
            |tx| async move { Ok(Step::Commit(ExpiryScope::Skus(skus).release(tx).await?)) }
        );
        Ok(())
    }

    /// Forgets idempotency keys first used more than `retention` ago.
    #[tracing::instrument(skip(self))]
    pub async fn purge_idempotency_keys(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let deleted = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
            retention.as_secs_f64(),
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }
}
