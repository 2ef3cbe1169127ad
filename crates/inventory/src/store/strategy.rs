//! The three ways a batch of reservations can take stock without overselling.
//!
//! A batch is one or more reservation requests applied in one transaction (one
//! request when coalescing is off or nobody else is waiting; see `coalesce`).
//! Every strategy reads the stock of the batch's products once, allocates it
//! to the requests in arrival order in memory (each request all-or-nothing
//! across its lines), and writes each product once with the batch's total:
//! one compare-and-set, one locked `UPDATE` or one guarded `UPDATE` per
//! product per batch, all of them in one statement. Product rows are touched
//! in sku order (the store's lock order). The strategies differ in who waits
//! and who retries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::PgConnection;

use super::StoreError;
use super::lock_products;
use crate::domain::{ReservationLines, ShortItem};

/// How concurrent reservations of the same product are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LockingStrategy {
    /// Read `(available, version)`, then compare-and-set on `version`; a
    /// concurrent change means roll back and retry. No lock is held while
    /// deciding; under heavy contention most attempts lose and retry (which
    /// coalescing avoids within one process: one compare-and-set per batch).
    Optimistic,
    /// `SELECT … FOR UPDATE` the rows first; concurrent batches queue on the
    /// row lock and never retry (except after a detected deadlock).
    Pessimistic,
    /// Read, then one conditional `UPDATE … WHERE available >= total` per
    /// product: the check and the write are one statement, so a concurrent
    /// take can never push the stock below zero; a guard that fails retries.
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

/// What the stock allowed each request of a batch, in the batch's order:
/// `Ok(())` when its lines were taken, else its refusal (`UnknownSkus`,
/// `InsufficientStock` naming the stock it saw).
pub(super) type Allocation = Vec<Result<(), StoreError>>;

/// Takes the stock of every request in `batch` that fits, in arrival order,
/// and refuses the others. `None` when a concurrent writer changed a product
/// between the read and the write: the caller rolls back and runs the whole
/// batch again.
pub(super) async fn take_stock(
    tx: &mut PgConnection,
    batch: &[&ReservationLines],
    strategy: LockingStrategy,
) -> Result<Option<Allocation>, StoreError> {
    let skus: Vec<String> = batch
        .iter()
        .flat_map(|lines| lines.iter().map(|line| line.sku.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let stock = read_stock(tx, &skus, strategy == LockingStrategy::Pessimistic).await?;
    let (allocation, takes) = allocate(batch, &stock);
    if takes.is_empty() {
        return Ok(Some(allocation));
    }
    let written = match strategy {
        LockingStrategy::Optimistic => compare_and_set(tx, &takes).await?,
        LockingStrategy::Pessimistic => {
            move_to_reserved(tx, &takes).await?;
            true
        }
        LockingStrategy::Guarded => guarded_update(tx, &takes).await?,
    };
    Ok(written.then_some(allocation))
}

/// What a batch takes from one product.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Take {
    /// The units all the batch's granted requests take from it.
    quantity: i64,
    /// `available` and `version` as the batch read them.
    available: i64,
    version: i64,
    /// A request of the batch was refused for this product's stock after
    /// others took from it: the write must find exactly the stock the batch
    /// read, or that refusal would name a stock that never existed.
    exact: bool,
}

/// Allocates the stock read to the requests in arrival order, each one
/// all-or-nothing: a request whose lines do not all fit in what is left takes
/// nothing and is refused with what it saw, and the requests after it still
/// get their turn. Returns each request's outcome and the totals by sku
/// (sorted: the lock order).
fn allocate(
    batch: &[&ReservationLines],
    stock: &HashMap<String, StockRow>,
) -> (Allocation, BTreeMap<String, Take>) {
    let mut left: HashMap<&str, i64> = stock
        .iter()
        .map(|(sku, row)| (sku.as_str(), row.available))
        .collect();
    let mut takes: BTreeMap<String, Take> = BTreeMap::new();
    let mut refused_for_stock: BTreeSet<String> = BTreeSet::new();
    let allocation = batch
        .iter()
        .map(|lines| {
            let missing: Vec<String> = lines
                .iter()
                .filter(|line| !left.contains_key(line.sku.as_str()))
                .map(|line| line.sku.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::UnknownSkus(missing));
            }
            let short: Vec<ShortItem> = lines
                .iter()
                .filter(|line| line.quantity.get() > left[line.sku.as_str()])
                .map(|line| ShortItem {
                    sku: line.sku.to_string(),
                    requested: line.quantity.get(),
                    available: left[line.sku.as_str()],
                })
                .collect();
            if !short.is_empty() {
                refused_for_stock.extend(short.iter().map(|item| item.sku.clone()));
                return Err(StoreError::InsufficientStock(short));
            }
            for line in lines.iter() {
                let sku = line.sku.as_str();
                let quantity = line.quantity.get();
                if let Some(units) = left.get_mut(sku) {
                    *units -= quantity;
                }
                let row = &stock[sku];
                takes
                    .entry(sku.to_owned())
                    .or_insert(Take {
                        quantity: 0,
                        available: row.available,
                        version: row.version,
                        exact: false,
                    })
                    .quantity += quantity;
            }
            Ok(())
        })
        .collect();
    for (sku, take) in &mut takes {
        take.exact = refused_for_stock.contains(sku);
    }
    (allocation, takes)
}

/// The totals as parallel arrays, in sku order, for `UNNEST`.
struct Columns {
    skus: Vec<String>,
    quantities: Vec<i64>,
    available: Vec<i64>,
    versions: Vec<i64>,
    exact: Vec<bool>,
}

impl Columns {
    fn of(takes: &BTreeMap<String, Take>) -> Self {
        Self {
            skus: takes.keys().cloned().collect(),
            quantities: takes.values().map(|take| take.quantity).collect(),
            available: takes.values().map(|take| take.available).collect(),
            versions: takes.values().map(|take| take.version).collect(),
            exact: takes.values().map(|take| take.exact).collect(),
        }
    }
}

/// Optimistic: every product must still carry the version read.
async fn compare_and_set(
    tx: &mut PgConnection,
    takes: &BTreeMap<String, Take>,
) -> Result<bool, StoreError> {
    let columns = Columns::of(takes);
    if takes.len() > 1 {
        // Lock the rows whose version is still the one read, in sku order. A
        // row changed meanwhile drops out (PostgreSQL re-checks the join
        // condition on the newest row version after waiting for its lock).
        let still_current = sqlx::query_scalar!(
            r#"SELECT p.sku AS "sku!" FROM products p
               JOIN UNNEST($1::TEXT[], $2::BIGINT[]) AS l(sku, version)
                 ON p.sku = l.sku AND p.version = l.version
               ORDER BY p.sku
               FOR UPDATE OF p"#,
            &columns.skus,
            &columns.versions,
        )
        .fetch_all(&mut *tx)
        .await?;
        if still_current.len() != takes.len() {
            return Ok(false);
        }
    }
    let updated = sqlx::query!(
        "UPDATE products p
         SET available = p.available - l.quantity, reserved = p.reserved + l.quantity,
             version = p.version + 1, updated_at = now()
         FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS l(sku, version, quantity)
         WHERE p.sku = l.sku AND p.version = l.version",
        &columns.skus,
        &columns.versions,
        &columns.quantities,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(updated == takes.len() as u64)
}

/// Guarded: each product must still have the batch's total available (and
/// exactly what was read, where the batch refused someone for its stock).
async fn guarded_update(
    tx: &mut PgConnection,
    takes: &BTreeMap<String, Take>,
) -> Result<bool, StoreError> {
    let columns = Columns::of(takes);
    if takes.len() > 1 {
        lock_products(tx, &columns.skus).await?;
    }
    let updated = sqlx::query!(
        "UPDATE products p
         SET available = p.available - l.quantity, reserved = p.reserved + l.quantity,
             version = p.version + 1, updated_at = now()
         FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BOOLEAN[])
              AS l(sku, quantity, seen, exact)
         WHERE p.sku = l.sku AND p.available >= l.quantity
           AND (NOT l.exact OR p.available = l.seen)",
        &columns.skus,
        &columns.quantities,
        &columns.available,
        &columns.exact,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(updated == takes.len() as u64)
}

/// Pessimistic: the rows are locked and the stock checked; move the totals.
async fn move_to_reserved(
    tx: &mut PgConnection,
    takes: &BTreeMap<String, Take>,
) -> Result<(), StoreError> {
    let columns = Columns::of(takes);
    sqlx::query!(
        "UPDATE products p
         SET available = p.available - l.quantity, reserved = p.reserved + l.quantity,
             version = p.version + 1, updated_at = now()
         FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS l(sku, quantity)
         WHERE p.sku = l.sku",
        &columns.skus,
        &columns.quantities,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The stock of every product in `skus` that exists, by sku; `for_update`
/// locks the rows, in sku order, until the transaction ends.
async fn read_stock(
    tx: &mut PgConnection,
    skus: &[String],
    for_update: bool,
) -> Result<HashMap<String, StockRow>, StoreError> {
    let rows = if for_update {
        sqlx::query_as!(
            StockRow,
            "SELECT sku, available, version FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
            skus,
        )
        .fetch_all(&mut *tx)
        .await?
    } else {
        sqlx::query_as!(
            StockRow,
            "SELECT sku, available, version FROM products WHERE sku = ANY($1)",
            skus,
        )
        .fetch_all(&mut *tx)
        .await?
    };
    Ok(rows.into_iter().map(|row| (row.sku.clone(), row)).collect())
}

/// A product's stock as a batch reads it.
#[derive(Debug)]
struct StockRow {
    sku: String,
    available: i64,
    version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Quantity, ReservationLine, Sku};

    fn lines(items: &[(&str, i64)]) -> ReservationLines {
        ReservationLines::new(
            items
                .iter()
                .map(|&(sku, quantity)| ReservationLine {
                    sku: Sku::parse(sku).expect("valid sku"),
                    quantity: Quantity::parse(quantity).expect("valid quantity"),
                })
                .collect(),
        )
        .expect("valid lines")
    }

    fn stock(rows: &[(&str, i64)]) -> HashMap<String, StockRow> {
        rows.iter()
            .map(|&(sku, available)| {
                (
                    sku.to_owned(),
                    StockRow {
                        sku: sku.to_owned(),
                        available,
                        version: 7,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn units_go_to_requests_in_arrival_order() {
        let requests = [lines(&[("A", 2)]), lines(&[("A", 2)]), lines(&[("A", 1)])];
        let batch: Vec<&ReservationLines> = requests.iter().collect();
        let (allocation, takes) = allocate(&batch, &stock(&[("A", 3)]));
        assert!(allocation[0].is_ok());
        let Err(StoreError::InsufficientStock(short)) = &allocation[1] else {
            panic!("the second request does not fit: {allocation:?}");
        };
        assert_eq!(
            short,
            &[ShortItem {
                sku: "A".into(),
                requested: 2,
                available: 1
            }],
            "the refusal names the stock the request saw"
        );
        assert!(
            allocation[2].is_ok(),
            "a later request that fits still gets its turn"
        );
        assert_eq!(takes["A"].quantity, 3);
        assert!(takes["A"].exact, "a refusal pins the stock it saw");
    }

    #[test]
    fn a_basket_that_does_not_fit_takes_nothing() {
        let requests = [
            lines(&[("A", 1), ("B", 2)]),
            lines(&[("A", 1), ("B", 1)]),
            lines(&[("A", 1)]),
        ];
        let batch: Vec<&ReservationLines> = requests.iter().collect();
        let (allocation, takes) = allocate(&batch, &stock(&[("A", 5), ("B", 2)]));
        assert!(allocation[0].is_ok());
        assert!(matches!(
            allocation[1],
            Err(StoreError::InsufficientStock(ref short)) if short.len() == 1 && short[0].sku == "B"
        ));
        assert!(allocation[2].is_ok());
        assert_eq!(takes["A"].quantity, 2, "the refused basket took no A");
        assert_eq!(takes["B"].quantity, 2);
        assert!(!takes["A"].exact);
        assert!(takes["B"].exact);
    }

    #[test]
    fn unknown_skus_are_refused_before_stock_is_counted() {
        let requests = [lines(&[("A", 1), ("NOPE", 1)]), lines(&[("A", 1)])];
        let batch: Vec<&ReservationLines> = requests.iter().collect();
        let (allocation, takes) = allocate(&batch, &stock(&[("A", 1)]));
        assert!(matches!(&allocation[0], Err(StoreError::UnknownSkus(skus)) if skus == &["NOPE"]));
        assert!(allocation[1].is_ok());
        assert_eq!(takes.len(), 1);
    }
}
