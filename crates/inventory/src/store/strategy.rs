//! The three ways a reservation can take stock without overselling.
//!
//! All three run inside the reservation transaction, touch product rows in sku
//! order, and leave the same result; they differ in who waits and who retries.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::lock_products;

use super::StoreError;
use crate::domain::ReservationLines;
use crate::domain::ShortItem;

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
/// One statement per step, whatever the number of lines; product rows are
/// locked in sku order before any multi-row `UPDATE` (see the store's lock order).
pub(super) async fn take_stock(
    tx: &mut PgConnection,
    lines: &ReservationLines,
    strategy: LockingStrategy,
) -> Result<Taken, StoreError> {
    match strategy {
        LockingStrategy::Optimistic => optimistic(tx, lines).await,
        LockingStrategy::Pessimistic => pessimistic(tx, lines).await,
        LockingStrategy::Guarded => guarded(tx, lines).await,
    }
}

async fn optimistic(tx: &mut PgConnection, lines: &ReservationLines) -> Result<Taken, StoreError> {
    let stock = read_stock(tx, lines, false).await?;
    check_stock(lines, &stock)?;
    let skus = lines.skus();
    let versions: Vec<i64> = lines
        .iter()
        .map(|line| stock[line.sku.as_str()].version)
        .collect();
    if lines.len() > 1 {
        // Lock the rows whose version is still the one read, in sku order. A
        // row changed meanwhile drops out (PostgreSQL re-checks the join
        // condition on the newest row version after waiting for its lock).
        let still_current = sqlx::query_scalar!(
            r#"SELECT p.sku AS "sku!" FROM products p
               JOIN UNNEST($1::TEXT[], $2::BIGINT[]) AS l(sku, version)
                 ON p.sku = l.sku AND p.version = l.version
               ORDER BY p.sku
               FOR UPDATE OF p"#,
            &skus,
            &versions,
        )
        .fetch_all(&mut *tx)
        .await?;
        if still_current.len() != lines.len() {
            return Ok(Taken::Conflict);
        }
    }
    // The compare-and-set: every row must still carry the version read.
    let updated = sqlx::query!(
        "UPDATE products p
         SET available = p.available - l.quantity, reserved = p.reserved + l.quantity,
             version = p.version + 1, updated_at = now()
         FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS l(sku, version, quantity)
         WHERE p.sku = l.sku AND p.version = l.version",
        &skus,
        &versions,
        &lines.quantities(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated != lines.len() as u64 {
        return Ok(Taken::Conflict);
    }
    Ok(Taken::Yes)
}

async fn pessimistic(tx: &mut PgConnection, lines: &ReservationLines) -> Result<Taken, StoreError> {
    let stock = read_stock(tx, lines, true).await?;
    check_stock(lines, &stock)?;
    move_to_reserved(tx, lines).await?;
    Ok(Taken::Yes)
}

async fn guarded(tx: &mut PgConnection, lines: &ReservationLines) -> Result<Taken, StoreError> {
    // With several lines, lock them in sku order, and take a savepoint so the
    // lines that fit are undone when another does not while the transaction
    // (and its idempotency claim) lives on. One line cannot half-succeed.
    let several = lines.len() > 1;
    if several {
        lock_products(tx, &lines.skus()).await?;
        sqlx::query("SAVEPOINT take_stock")
            .execute(&mut *tx)
            .await?;
    }
    let updated = sqlx::query!(
        "UPDATE products p
         SET available = p.available - l.quantity, reserved = p.reserved + l.quantity,
             version = p.version + 1, updated_at = now()
         FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS l(sku, quantity)
         WHERE p.sku = l.sku AND p.available >= l.quantity",
        &lines.skus(),
        &lines.quantities(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated != lines.len() as u64 {
        if several {
            sqlx::query("ROLLBACK TO SAVEPOINT take_stock")
                .execute(&mut *tx)
                .await?;
        }
        // Say why: an unknown sku or the short items. If everything fits
        // now, stock came back in between: retry.
        let stock = read_stock(tx, lines, false).await?;
        check_stock(lines, &stock)?;
        return Ok(Taken::Conflict);
    }
    if several {
        sqlx::query("RELEASE SAVEPOINT take_stock")
            .execute(&mut *tx)
            .await?;
    }
    Ok(Taken::Yes)
}

/// Moves every line's quantity from `available` to `reserved`, unconditionally
/// (the caller holds the rows' locks and has checked the stock).
async fn move_to_reserved(
    tx: &mut PgConnection,
    lines: &ReservationLines,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE products p
         SET available = p.available - l.quantity, reserved = p.reserved + l.quantity,
             version = p.version + 1, updated_at = now()
         FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS l(sku, quantity)
         WHERE p.sku = l.sku",
        &lines.skus(),
        &lines.quantities(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The stock of every line's product that exists, by sku; `for_update` locks
/// the rows, in sku order, until the transaction ends.
async fn read_stock(
    tx: &mut PgConnection,
    lines: &ReservationLines,
    for_update: bool,
) -> Result<HashMap<String, StockRow>, StoreError> {
    let rows = if for_update {
        sqlx::query_as!(
            StockRow,
            "SELECT sku, available, version FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
            &lines.skus(),
        )
        .fetch_all(&mut *tx)
        .await?
    } else {
        sqlx::query_as!(
            StockRow,
            "SELECT sku, available, version FROM products WHERE sku = ANY($1) ORDER BY sku",
            &lines.skus(),
        )
        .fetch_all(&mut *tx)
        .await?
    };
    Ok(rows.into_iter().map(|row| (row.sku.clone(), row)).collect())
}

/// A product's stock as a reservation reads it.
#[derive(Debug)]
struct StockRow {
    sku: String,
    available: i64,
    version: i64,
}

/// Every line names a product (else `404`) with enough available (else `409`
/// listing each short line).
fn check_stock(
    lines: &ReservationLines,
    stock: &HashMap<String, StockRow>,
) -> Result<(), StoreError> {
    let missing: Vec<String> = lines
        .iter()
        .filter(|line| !stock.contains_key(line.sku.as_str()))
        .map(|line| line.sku.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::UnknownSkus(missing));
    }
    let short: Vec<ShortItem> = lines
        .iter()
        .map(|line| (line, &stock[line.sku.as_str()]))
        .filter(|(line, row)| line.quantity.get() > row.available)
        .map(|(line, row)| ShortItem {
            sku: row.sku.clone(),
            requested: line.quantity.get(),
            available: row.available,
        })
        .collect();
    if short.is_empty() {
        Ok(())
    } else {
        Err(StoreError::InsufficientStock(short))
    }
}
