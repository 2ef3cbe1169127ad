//! PostgreSQL access: every query the service runs lives in this module.
//!
//! Queries are checked against the schema at compile time (`sqlx::query!`;
//! the offline data in `.sqlx/` lets the workspace build without a database).
//!
//! # Transactions and locks
//!
//! Each public method that writes is one transaction run by
//! [`retry::in_transaction`] (READ COMMITTED, retried on serialization
//! failures, deadlocks and lost version compare-and-sets). Rows are locked in
//! one global order, so writers of this service cannot deadlock each other:
//!
//! 1. reservation rows, by id (at most the holds the transaction ends);
//! 2. then product rows, by sku in byte order (`COLLATE "C"` in the schema),
//!    all of a transaction's products in one `SELECT … ORDER BY sku FOR UPDATE`
//!    before any multi-row `UPDATE` touches them.
//!
//! A reservation would break that order if it released the due holds on its
//! products in its own transaction (it would lock the products of *those*
//! holds, then its own). So it releases them first, in a short transaction of
//! their own ([`ExpiryScope::Skus`]), and then takes its stock.
//!
//! Reads never lock: a hold past its expiry that the sweeper has not released
//! yet is subtracted in the read query itself.
//!
//! Every connection carries `lock_timeout`, `statement_timeout` and
//! `idle_in_transaction_session_timeout` (see `app::connect`), so a row locked
//! from outside the service costs a request at most the lock timeout (`503`),
//! never a pooled connection for longer.

mod coalesce;
mod error;
mod expiry;
mod finish;
mod products;
mod reservations;
mod retry;
mod strategy;

pub use coalesce::BatchSettings;
pub use error::StoreError;
pub use expiry::ExpiryScope;
pub use reservations::{IdempotentRequest, NewReservation, Outcome, ReservationRequest, Reserved};
pub use retry::RetryPolicy;
pub use strategy::LockingStrategy;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::ReservationStatus;

/// The inventory store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    settings: StoreSettings,
    /// Batches concurrent reservations, when coalescing is on.
    coalescer: Option<Arc<coalesce::Coalescer>>,
}

/// How the store writes: how reservations take stock, how hard writes retry.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    /// How concurrent reservations of one product are kept apart.
    pub strategy: LockingStrategy,
    /// Retries of every write transaction.
    pub retry: RetryPolicy,
    /// Coalescing of concurrent reservations of one product into batches;
    /// `None` applies every request in a transaction of its own.
    pub coalescing: Option<BatchSettings>,
}

impl PgStore {
    pub fn new(pool: PgPool, settings: StoreSettings) -> Self {
        Self {
            pool,
            settings,
            coalescer: settings
                .coalescing
                .map(|batches| Arc::new(coalesce::Coalescer::new(batches))),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn strategy(&self) -> LockingStrategy {
        self.settings.strategy
    }
}

/// A product's counters as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub sku: String,
    pub name: String,
    pub received: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    pub version: i64,
}

/// One stock movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub id: i64,
    pub kind: String,
    pub quantity: i64,
    pub reservation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A reservation with its lines, as a reader should see it: a hold past its
/// expiry reads as expired even before the sweeper has released it. Kept as
/// JSON with an idempotency key (see [`Outcome`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReservationRecord {
    pub id: Uuid,
    pub status: ReservationStatus,
    pub items: Vec<HeldItem>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Units of one product held by a reservation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldItem {
    pub sku: String,
    pub quantity: i64,
}

/// Locks the products named by `skus` in byte order, in one statement. Every
/// transaction that changes more than one product calls this (or
/// [`lock_products_of`]) first.
async fn lock_products(tx: &mut PgConnection, skus: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT 1 AS locked FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
        skus,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(())
}

/// Locks the products of the given reservations in byte order, in one
/// statement: a bulk `UPDATE` would lock them in whatever order its plan visits them.
async fn lock_products_of(tx: &mut PgConnection, reservations: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT 1 AS locked FROM products
         WHERE sku IN (SELECT sku FROM reservation_items WHERE reservation_id = ANY($1))
         ORDER BY sku
         FOR UPDATE",
        reservations,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(())
}
