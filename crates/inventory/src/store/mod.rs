//! PostgreSQL access: every query the service runs lives in this module.
//!
//! Queries are checked against the schema at compile time (`sqlx::query!`;
//! the offline data in `.sqlx/` lets the workspace build without a database).
//! Each public method is one ACID transaction. Each step locks product rows in
//! sku order (byte order, `COLLATE "C"` in the schema), so reservations do not
//! deadlock on each other; a deadlock with a step that releases expired holds
//! on other skus first remains possible, is detected by PostgreSQL, and is
//! retried like a version conflict.

mod expiry;
mod products;
mod reservations;
mod strategy;

pub use expiry::ExpiryScope;
pub use reservations::{ContentionPolicy, IdempotentRequest, NewReservation, Reserved};
pub use strategy::LockingStrategy;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::ReservationStatus;

/// The inventory store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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
/// expiry reads as expired even before the sweeper has released it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRecord {
    pub id: Uuid,
    pub status: ReservationStatus,
    pub items: Vec<(String, i64)>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Is this error one that a retry of the whole transaction can cure?
/// (serialization failure, deadlock detected)
fn is_retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}
