//! The three ways a reservation can take stock without overselling.
//!
//! All three run inside the reservation transaction, touch product rows in sku
//! order, and leave the same result; they differ in who waits and who retries.

use sqlx::{PgConnection, Postgres, Transaction};

use crate::domain::ReservationLines;
use crate::error::{InventoryError, ShortItem};

/// How concurrent reservations of the same product are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LockingStrategy {
    /// Read `(available, version)`, then compare-and-set on `version`; a
    /// concurrent change means roll back and retry. No lock is held while
    /// deciding; under heavy contention most attempts lose and retry.
    Optimistic,
    /// `SELECT … FOR UPDATE` the rows first; concurrent reservations queue on
    /// the row lock and never retry (except after a detected deadlock).
    Pessimistic,
    /// One conditional `UPDATE … WHERE available >= $q` per line: the check
    /// and the write are one statement, so nothing can change in between.
    Guarded,
}

impl LockingStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Optimistic => "optimistic",
            Self::Pessimistic => "pessimistic",
            Self::Guarded => "guarded",
        }
    }
}

/// Whether the stock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    Yes,
    /// A concurrent writer changed a product first; retry the transaction.
    Conflict,
}

/// Moves every line's quantity from `available` to `reserved`, or fails with
/// `UnknownSkus` / `InsufficientStock` having moved nothing that will commit.
pub(super) async fn take_stock(
    tx: &mut Transaction<'_, Postgres>,
    lines: &ReservationLines,
    strategy: LockingStrategy,
) -> Result<Taken, InventoryError> {
    match strategy {
        LockingStrategy::Optimistic => optimistic(tx, lines).await,
        LockingStrategy::Pessimistic => pessimistic(tx, lines).await,
        LockingStrategy::Guarded => guarded(tx, lines).await,
    }
}

async fn optimistic(
    tx: &mut PgConnection,
    lines: &ReservationLines,
) -> Result<Taken, InventoryError> {
    let stock = read_stock(tx, lines, false).await?;
    check_stock(lines, &stock)?;
    for (line, (sku, _, version)) in lines.iter().zip(&stock) {
        let updated = sqlx::query(
            "UPDATE products
             SET available = available - $3, reserved = reserved + $3,
                 version = version + 1, updated_at = now()
             WHERE sku = $1 AND version = $2",
        )
        .bind(sku)
        .bind(version)
        .bind(line.quantity.get())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(Taken::Conflict);
        }
    }
    Ok(Taken::Yes)
}

async fn pessimistic(
    tx: &mut PgConnection,
    lines: &ReservationLines,
) -> Result<Taken, InventoryError> {
    let stock = read_stock(tx, lines, true).await?;
    check_stock(lines, &stock)?;
    for line in lines.iter() {
        sqlx::query(
            "UPDATE products
             SET available = available - $2, reserved = reserved + $2,
                 version = version + 1, updated_at = now()
             WHERE sku = $1",
        )
        .bind(line.sku.as_str())
        .bind(line.quantity.get())
        .execute(&mut *tx)
        .await?;
    }
    Ok(Taken::Yes)
}

async fn guarded(tx: &mut PgConnection, lines: &ReservationLines) -> Result<Taken, InventoryError> {
    // A savepoint, so a line that does not fit undoes the lines before it
    // while the transaction (and its idempotency claim) lives on.
    sqlx::query("SAVEPOINT take_stock")
        .execute(&mut *tx)
        .await?;
    for line in lines.iter() {
        let updated = sqlx::query(
            "UPDATE products
             SET available = available - $2, reserved = reserved + $2,
                 version = version + 1, updated_at = now()
             WHERE sku = $1 AND available >= $2",
        )
        .bind(line.sku.as_str())
        .bind(line.quantity.get())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            sqlx::query("ROLLBACK TO SAVEPOINT take_stock")
                .execute(&mut *tx)
                .await?;
            // Say why: an unknown sku or the short items. If everything fits
            // now, stock came back in between: retry.
            let stock = read_stock(tx, lines, false).await?;
            check_stock(lines, &stock)?;
            return Ok(Taken::Conflict);
        }
    }
    sqlx::query("RELEASE SAVEPOINT take_stock")
        .execute(&mut *tx)
        .await?;
    Ok(Taken::Yes)
}

/// `(sku, available, version)` of every line's product, in sku order;
/// `for_update` locks the rows (in that order) until the transaction ends.
async fn read_stock(
    tx: &mut PgConnection,
    lines: &ReservationLines,
    for_update: bool,
) -> Result<Vec<(String, i64, i64)>, InventoryError> {
    let query = if for_update {
        "SELECT sku, available, version FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE"
    } else {
        "SELECT sku, available, version FROM products WHERE sku = ANY($1) ORDER BY sku"
    };
    Ok(sqlx::query_as(query)
        .bind(lines.skus())
        .fetch_all(&mut *tx)
        .await?)
}

/// Every line names a product (else `404`) with enough available (else `409`
/// listing each short line).
fn check_stock(
    lines: &ReservationLines,
    stock: &[(String, i64, i64)],
) -> Result<(), InventoryError> {
    let skus = lines.skus();
    if stock.len() != skus.len() {
        let missing = skus
            .into_iter()
            .filter(|sku| !stock.iter().any(|(found, _, _)| found == sku))
            .collect();
        return Err(InventoryError::UnknownSkus(missing));
    }
    // Both lists are in sku order.
    let short: Vec<ShortItem> = lines
        .iter()
        .zip(stock)
        .filter(|(line, (_, available, _))| line.quantity.get() > *available)
        .map(|(line, (sku, available, _))| ShortItem {
            sku: sku.clone(),
            requested: line.quantity.get(),
            available: *available,
        })
        .collect();
    if short.is_empty() {
        Ok(())
    } else {
        Err(InventoryError::InsufficientStock(short))
    }
}
