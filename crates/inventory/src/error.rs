//! The one error type of the inventory service and the problem each becomes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service_kit::Problem;

use crate::domain::{Invalid, ReservationStatus};

/// A line the store could not fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShortItem {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// Everything that can go wrong in the inventory service.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    BadQuery(String),
    #[error("no product with sku '{0}'")]
    ProductNotFound(String),
    #[error("unknown skus: {0:?}")]
    UnknownSkus(Vec<String>),
    #[error("a product with sku '{0}' already exists")]
    DuplicateSku(String),
    #[error("If-Match is required to update a product")]
    PreconditionRequired,
    #[error("If-Match does not match the current version {current_version}")]
    VersionMismatch { current_version: i64 },
    #[error("insufficient stock")]
    InsufficientStock(Vec<ShortItem>),
    #[error("no reservation with id '{0}'")]
    ReservationNotFound(String),
    #[error("{field} is not a well-formed id (a UUID)")]
    MalformedId { field: &'static str },
    #[error("reservation is {status:?}; it cannot be {action}")]
    ReservationState {
        status: ReservationStatus,
        action: &'static str,
    },
    #[error("contention outlasted the retry budget of {attempts} attempts")]
    Contention { attempts: u32 },
    #[error("Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(Invalid),
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A lock wait or a statement outlasted its timeout (`lock_timeout`,
    /// `statement_timeout`): a row is held elsewhere or the database is slow.
    #[error("database busy: {0}")]
    Busy(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for InventoryError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) => Self::Unavailable(error),
            // Class 08 (connection exception), 53300 (too many connections),
            // 57P01-03 (admin or crash shutdown, cannot connect now): the
            // database cannot serve right now, which a retry may cure.
            E::Database(db)
                if db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(code.as_ref(), "53300" | "57P01" | "57P02" | "57P03")
                }) =>
            {
                Self::Unavailable(error)
            }
            // 55P03 lock_not_available (lock_timeout), 57014 query_canceled
            // (statement_timeout): refused now so the connection is free again.
            E::Database(db) if matches!(db.code().as_deref(), Some("55P03" | "57014")) => {
                Self::Busy(error)
            }
            _ => Self::Database(error),
        }
    }
}

impl InventoryError {
    /// The problem to record with an idempotency key: refusals that the same
    /// request would meet again (unknown sku, insufficient stock). Transient
    /// failures (contention, outage) are not recorded, so a retry can succeed.
    pub fn recordable_problem(&self) -> Option<Problem> {
        match self {
            Self::UnknownSkus(skus) => Some(Self::UnknownSkus(skus.clone()).into()),
            Self::InsufficientStock(items) => Some(Self::InsufficientStock(items.clone()).into()),
            _ => None,
        }
    }
}

/// How long a client should wait before retrying a `503`, in seconds: a
/// random whole number in this range, so the buyers refused together in a
/// flash sale do not all come back in the same second.
pub const RETRY_AFTER_SECS: std::ops::RangeInclusive<u64> = 1..=3;

fn retry_after() -> u64 {
    use rand::Rng;
    rand::rng().random_range(RETRY_AFTER_SECS)
}

impl From<InventoryError> for Problem {
    fn from(error: InventoryError) -> Self {
        let detail = error.to_string();
        match error {
            InventoryError::Invalid(invalid) => invalid.into(),
            InventoryError::BadQuery(_) => Problem::bad_request(detail),
            InventoryError::ProductNotFound(_) | InventoryError::ReservationNotFound(_) => {
                Problem::not_found(detail)
            }
            InventoryError::MalformedId { field } => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-id", "Malformed Id")
                    .with_detail(detail)
                    .with_extension("field", field)
            }
            InventoryError::UnknownSkus(skus) => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-sku", "Unknown SKU")
                    .with_detail("some items name products that do not exist")
                    .with_extension("skus", skus)
            }
            InventoryError::DuplicateSku(_) => {
                Problem::new(StatusCode::CONFLICT, "duplicate-sku", "Duplicate SKU")
                    .with_detail(detail)
            }
            InventoryError::PreconditionRequired => Problem::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "Precondition Required",
            )
            .with_detail("send If-Match with the product's ETag to update it"),
            InventoryError::VersionMismatch { current_version } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "stale-version",
                "Stale Version",
            )
            .with_detail(detail)
            .with_extension("current_version", current_version),
            InventoryError::InsufficientStock(items) => Problem::new(
                StatusCode::CONFLICT,
                "insufficient-stock",
                "Insufficient Stock",
            )
            .with_detail("not enough stock for every item; nothing was reserved")
            .with_extension("items", items),
            InventoryError::ReservationState { status, .. } => Problem::new(
                StatusCode::CONFLICT,
                "reservation-state",
                "Reservation State Conflict",
            )
            .with_detail(detail)
            .with_extension("reservation_status", status),
            InventoryError::Contention { attempts } => Problem::unavailable(
                "the stock is too contended right now; retry shortly",
                retry_after(),
            )
            .with_extension("attempts", attempts),
            InventoryError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency Key Reused",
            )
            .with_detail(detail),
            InventoryError::InvalidIdempotencyKey(invalid) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-idempotency-key",
                "Invalid Idempotency Key",
            )
            .with_detail(detail)
            .with_extension("field", invalid.field),
            InventoryError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Problem::unavailable(
                    "the inventory database is unreachable or saturated; retry shortly",
                    retry_after(),
                )
            }
            InventoryError::Busy(cause) => {
                tracing::warn!(error = %cause, "database lock or statement timeout");
                Problem::unavailable(
                    "the product is locked by another transaction or the database is slow; retry shortly",
                    retry_after(),
                )
            }
            InventoryError::Database(cause) => Problem::internal(&cause),
        }
    }
}

impl IntoResponse for InventoryError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
