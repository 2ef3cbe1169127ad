//! The one error type of the inventory service's API and the problem each
//! becomes. The store's own errors ([`StoreError`]) are one variant of it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::Problem;

use crate::domain::{Invalid, ShortItem};
use crate::store::StoreError;

/// Everything that can go wrong in a request to the inventory service.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    BadQuery(String),
    #[error("If-Match is required to update a product")]
    PreconditionRequired,
    #[error("{field} is not a well-formed id (a UUID)")]
    MalformedId { field: &'static str },
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for InventoryError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::from(error))
    }
}

/// The `409` of a reservation that does not fit, listing each short line.
pub fn insufficient_stock(items: &[ShortItem]) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "insufficient-stock",
        "Insufficient Stock",
    )
    .with_detail("not enough stock for every item; nothing was reserved")
    .with_extension("items", items)
}

/// The `404` of a reservation naming products that do not exist.
pub fn unknown_skus(skus: &[String]) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "unknown-sku", "Unknown SKU")
        .with_detail("some items name products that do not exist")
        .with_extension("skus", skus)
}

impl From<InventoryError> for Problem {
    fn from(error: InventoryError) -> Self {
        let detail = error.to_string();
        match error {
            InventoryError::Invalid(invalid) => invalid.into(),
            InventoryError::BadQuery(_) => Problem::bad_request(detail),
            InventoryError::PreconditionRequired => Problem::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "Precondition Required",
            )
            .with_detail("send If-Match with the product's ETag to update it"),
            InventoryError::MalformedId { field } => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-id", "Malformed Id")
                    .with_detail(detail)
                    .with_extension("field", field)
            }
            InventoryError::InvalidIdempotencyKey(invalid) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-idempotency-key",
                "Invalid Idempotency Key",
            )
            .with_detail(detail)
            .with_extension("field", invalid.field),
            InventoryError::Store(error) => store_problem(error, detail),
        }
    }
}

fn store_problem(error: StoreError, detail: String) -> Problem {
    match error {
        StoreError::ProductNotFound(_) | StoreError::ReservationNotFound(_) => {
            Problem::not_found(detail)
        }
        StoreError::UnknownSkus(skus) => unknown_skus(&skus),
        StoreError::DuplicateSku(_) => {
            Problem::new(StatusCode::CONFLICT, "duplicate-sku", "Duplicate SKU").with_detail(detail)
        }
        StoreError::VersionMismatch { current_version } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "stale-version",
            "Stale Version",
        )
        .with_detail(detail)
        .with_extension("current_version", current_version),
        StoreError::InsufficientStock(items) => insufficient_stock(&items),
        StoreError::ReservationState { status, .. } => Problem::new(
            StatusCode::CONFLICT,
            "reservation-state",
            "Reservation State Conflict",
        )
        .with_detail(detail)
        .with_extension("reservation_status", status),
        StoreError::Contention { attempts } => {
            Problem::unavailable("the stock is too contended right now; retry shortly")
                .with_extension("attempts", attempts)
        }
        StoreError::IdempotencyKeyReused => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency Key Reused",
        )
        .with_detail(detail),
        StoreError::Unavailable(cause) => {
            tracing::warn!(error = %cause, "database unavailable");
            Problem::unavailable(
                "the inventory database is unreachable or saturated; retry shortly",
            )
        }
        StoreError::Busy(cause) => {
            tracing::warn!(error = %cause, "database lock or statement timeout");
            Problem::unavailable(
                "the product is locked by another transaction or the database is slow; retry shortly",
            )
        }
        StoreError::Database(cause) => Problem::internal(&cause),
    }
}

impl IntoResponse for InventoryError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
