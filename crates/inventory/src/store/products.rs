//! Products: create, read, update with optimistic locking, ledger pages.

use super::StoreError;
use super::retry::{Step, in_transaction};
use super::{LedgerRow, PgStore, ProductRow};
use crate::domain::{ProductName, Sku, StockLevel};

impl PgStore {
    /// Creates a product with `stock` received, and its `received` ledger row.
    #[tracing::instrument(skip(self, name), fields(sku = %sku))]
    pub async fn create_product(
        &self,
        sku: &Sku,
        name: &ProductName,
        stock: StockLevel,
    ) -> Result<ProductRow, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let product = in_transaction!(
            &mut conn,
            &self.settings.retry,
            "create_product",
            |tx| async move {
                let inserted = sqlx::query_as!(
                    ProductRow,
                    "INSERT INTO products (sku, name, received, available, reserved, sold)
                 VALUES ($1, $2, $3, $3, 0, 0)
                 ON CONFLICT (sku) DO NOTHING
                 RETURNING sku, name, received, available, reserved, sold, version",
                    sku.as_str(),
                    name.as_str(),
                    stock.get(),
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(product) = inserted else {
                    return Err(StoreError::DuplicateSku(sku.to_string()));
                };
                if stock.get() > 0 {
                    record_received(tx, sku, stock.get()).await?;
                }
                Ok(Step::Commit(product))
            }
        );
        Ok(product)
    }

    /// Reads a product, without taking a lock. Holds on it that are past
    /// their expiry but not released yet count as available, as they will once
    /// released, so a read never counts an expired hold and never waits for a
    /// writer.
    #[tracing::instrument(skip(self), fields(sku = %sku))]
    pub async fn product(&self, sku: &Sku) -> Result<ProductRow, StoreError> {
        sqlx::query_as!(
            ProductRow,
            r#"SELECT p.sku, p.name, p.received,
                      p.available + due.quantity AS "available!",
                      p.reserved - due.quantity AS "reserved!",
                      p.sold, p.version
               FROM products p,
                    LATERAL (SELECT COALESCE(SUM(i.quantity), 0)::BIGINT AS quantity
                             FROM reservations r
                             JOIN reservation_items i ON i.reservation_id = r.id
                             WHERE r.status = 'held' AND r.expires_at <= now()
                               AND i.sku = p.sku) AS due
               WHERE p.sku = $1"#,
            sku.as_str(),
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::ProductNotFound(sku.to_string()))
    }

    /// Renames and/or restocks a product if `precondition` accepts its current
    /// version (the `If-Match` check, made on the locked row); otherwise `412`
    /// with the current version.
    #[tracing::instrument(skip(self, precondition, name), fields(sku = %sku))]
    pub async fn update_product(
        &self,
        sku: &Sku,
        precondition: &(dyn Fn(i64) -> bool + Sync),
        name: Option<&ProductName>,
        restock: Option<StockLevel>,
    ) -> Result<ProductRow, StoreError> {
        let restock = restock.map_or(0, StockLevel::get);
        let mut conn = self.pool.acquire().await?;
        let product = in_transaction!(
            &mut conn,
            &self.settings.retry,
            "update_product",
            |tx| async move {
                let current = sqlx::query_scalar!(
                    "SELECT version FROM products WHERE sku = $1 FOR UPDATE",
                    sku.as_str(),
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(current_version) = current else {
                    return Err(StoreError::ProductNotFound(sku.to_string()));
                };
                if !precondition(current_version) {
                    return Err(StoreError::VersionMismatch { current_version });
                }
                let updated = sqlx::query_as!(
                    ProductRow,
                    "UPDATE products
                 SET name = COALESCE($2, name),
                     received = received + $3,
                     available = available + $3,
                     version = version + 1,
                     updated_at = now()
                 WHERE sku = $1
                 RETURNING sku, name, received, available, reserved, sold, version",
                    sku.as_str(),
                    name.map(ProductName::as_str),
                    restock,
                )
                .fetch_one(&mut *tx)
                .await?;
                if restock > 0 {
                    record_received(tx, sku, restock).await?;
                }
                Ok(Step::Commit(updated))
            }
        );
        Ok(product)
    }

    /// A page of a product's stock movements, newest first, strictly older
    /// than `before` (a ledger id) when given. Returns the rows and the cursor
    /// for the next page.
    #[tracing::instrument(skip(self), fields(sku = %sku))]
    pub async fn ledger(
        &self,
        sku: &Sku,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<LedgerRow>, Option<i64>), StoreError> {
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM products WHERE sku = $1) AS "exists!""#,
            sku.as_str(),
        )
        .fetch_one(&self.pool)
        .await?;
        if !exists {
            return Err(StoreError::ProductNotFound(sku.to_string()));
        }
        let mut rows = sqlx::query_as!(
            LedgerRow,
            "SELECT id, kind, quantity, reservation_id, created_at
             FROM stock_ledger
             WHERE sku = $1 AND ($2::BIGINT IS NULL OR id < $2)
             ORDER BY id DESC
             LIMIT $3",
            sku.as_str(),
            before,
            limit + 1,
        )
        .fetch_all(&self.pool)
        .await?;
        let next = if rows.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
            rows.pop();
            rows.last().map(|r| r.id)
        } else {
            None
        };
        Ok((rows, next))
    }
}

async fn record_received(
    tx: &mut sqlx::PgConnection,
    sku: &Sku,
    quantity: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO stock_ledger (sku, kind, quantity) VALUES ($1, 'received', $2)",
        sku.as_str(),
        quantity,
    )
    .execute(tx)
    .await?;
    Ok(())
}
