//! Products: create, read, update with optimistic locking, ledger pages.

use super::{ExpiryScope, LedgerRow, PgStore, ProductRow};
use crate::domain::{ProductName, Sku, StockLevel};
use crate::error::InventoryError;

impl PgStore {
    /// Creates a product with `stock` received, and its `received` ledger row.
    #[tracing::instrument(skip(self, name), fields(sku = %sku))]
    pub async fn create_product(
        &self,
        sku: &Sku,
        name: &ProductName,
        stock: StockLevel,
    ) -> Result<ProductRow, InventoryError> {
        let mut tx = self.pool.begin().await?;
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
            return Err(InventoryError::DuplicateSku(sku.to_string()));
        };
        if stock.get() > 0 {
            record_received(&mut tx, sku, stock.get()).await?;
        }
        tx.commit().await?;
        Ok(product)
    }

    /// Reads a product. Holds on it that are past their expiry are released
    /// first, so the counters never include an expired hold.
    #[tracing::instrument(skip(self), fields(sku = %sku))]
    pub async fn product(&self, sku: &Sku) -> Result<ProductRow, InventoryError> {
        let mut tx = self.pool.begin().await?;
        ExpiryScope::Skus(&[sku.as_str().to_owned()])
            .release(&mut tx)
            .await?;
        let product = fetch_product(&mut tx, sku).await?;
        tx.commit().await?;
        product.ok_or_else(|| InventoryError::ProductNotFound(sku.to_string()))
    }

    /// Renames and/or restocks a product if its version is still
    /// `expected_version` (compare-and-set); otherwise `412` with the current one.
    #[tracing::instrument(skip(self, name), fields(sku = %sku))]
    pub async fn update_product(
        &self,
        sku: &Sku,
        expected_version: Option<i64>,
        name: Option<&ProductName>,
        restock: Option<StockLevel>,
    ) -> Result<ProductRow, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let Some(current) = fetch_product(&mut tx, sku).await? else {
            return Err(InventoryError::ProductNotFound(sku.to_string()));
        };
        let Some(expected_version) = expected_version else {
            return Err(InventoryError::VersionMismatch {
                current_version: current.version,
            });
        };
        let restock = restock.map_or(0, StockLevel::get);
        let updated = sqlx::query_as!(
            ProductRow,
            "UPDATE products
             SET name = COALESCE($3, name),
                 received = received + $4,
                 available = available + $4,
                 version = version + 1,
                 updated_at = now()
             WHERE sku = $1 AND version = $2
             RETURNING sku, name, received, available, reserved, sold, version",
            sku.as_str(),
            expected_version,
            name.map(ProductName::as_str),
            restock,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(updated) = updated else {
            // Another writer got there first; report the version it left.
            let current = fetch_product(&mut tx, sku).await?;
            return Err(InventoryError::VersionMismatch {
                current_version: current.map_or(0, |p| p.version),
            });
        };
        if restock > 0 {
            record_received(&mut tx, sku, restock).await?;
        }
        tx.commit().await?;
        Ok(updated)
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
    ) -> Result<(Vec<LedgerRow>, Option<i64>), InventoryError> {
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM products WHERE sku = $1) AS "exists!""#,
            sku.as_str(),
        )
        .fetch_one(&self.pool)
        .await?;
        if !exists {
            return Err(InventoryError::ProductNotFound(sku.to_string()));
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

async fn fetch_product(
    tx: &mut sqlx::PgConnection,
    sku: &Sku,
) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as!(
        ProductRow,
        "SELECT sku, name, received, available, reserved, sold, version FROM products WHERE sku = $1",
        sku.as_str(),
    )
    .fetch_optional(tx)
    .await
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
