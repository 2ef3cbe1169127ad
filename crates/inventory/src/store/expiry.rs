//! Releasing holds that are past their expiry.
//!
//! The background sweeper releases them in batches; reads and reservations of a
//! product release the ones on that product first, so no reader ever counts an
//! expired hold as held, whatever the sweeper's pace.

use sqlx::PgConnection;
use uuid::Uuid;

/// Which expired holds to release.
#[derive(Debug, Clone, Copy)]
pub enum ExpiryScope<'a> {
    /// Up to `n` of the oldest expired holds (the sweeper's batch).
    Oldest(i64),
    /// Every expired hold with a line on one of these skus. Holds another
    /// transaction has locked are waited for, not skipped: once it commits, a
    /// hold it released no longer qualifies and one it left is released here,
    /// so the caller's next read never counts an expired hold.
    Skus(&'a [String]),
    /// This reservation, if it is an expired hold.
    Reservation(Uuid),
}

impl ExpiryScope<'_> {
    /// Marks the selected expired holds `expired`, gives their stock back to
    /// `available` and appends `expired` ledger rows, within `tx`. The sweeper's
    /// and a single reservation's scopes skip holds another transaction has
    /// locked (`SKIP LOCKED`): that transaction is confirming, cancelling or
    /// expiring them itself. Returns how many were released.
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
                     FOR UPDATE OF r",
                    skus,
                )
                .fetch_all(&mut *tx)
                .await?
            }
            Self::Reservation(id) => {
                sqlx::query_scalar!(
                    "SELECT id FROM reservations
                     WHERE id = $1 AND status = 'held' AND expires_at <= now()
                     FOR UPDATE SKIP LOCKED",
                    id,
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

/// Ends the given holds (already locked by the caller) with `status`
/// (`expired` or `cancelled`): their stock goes back to `available`, and each
/// line gets a ledger row (`expired` or `released`).
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
    // Lock the products in sku order first: the bulk UPDATE below would
    // otherwise lock them in whatever order its plan visits them.
    sqlx::query!(
        "SELECT 1 AS locked FROM products
         WHERE sku IN (SELECT sku FROM reservation_items WHERE reservation_id = ANY($1))
         ORDER BY sku
         FOR UPDATE",
        ids,
    )
    .fetch_all(&mut *tx)
    .await?;
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

impl super::PgStore {
    /// Releases up to `batch` expired holds in one transaction; returns how many.
    #[tracing::instrument(skip(self))]
    pub async fn sweep_expired(&self, batch: i64) -> Result<usize, crate::error::InventoryError> {
        let mut tx = self.pool.begin().await?;
        let released = ExpiryScope::Oldest(batch).release(&mut tx).await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Forgets idempotency keys first used more than `retention` ago.
    #[tracing::instrument(skip(self))]
    pub async fn purge_idempotency_keys(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, crate::error::InventoryError> {
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
