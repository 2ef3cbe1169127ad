//! The one error type of the inventory service's API and the problem each
//! becomes. The store's own errors ([`StoreError`]) are one variant of it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service_kit::Problem;
use utoipa::ToSchema;

use crate::domain::{Invalid, ReservationStatus, ShortItem};
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
    /// `401`, `403` or `429` from the bearer token and its subject.
    #[error(transparent)]
    Auth(#[from] service_kit::auth::AuthError),
}

impl From<sqlx::Error> for InventoryError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::from(error))
    }
}

// The problem types with extension members, as the OpenAPI documents show them.
// The functions below build the real ones; the tests hold both to the same members.

/// `409 insufficient-stock`: nothing was reserved; `items` lists each short line.
#[derive(Debug, Serialize, ToSchema)]
pub struct InsufficientStockProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// Each line that did not fit, with the units available now.
    pub items: Vec<ShortItem>,
}

/// `404 unknown-sku`: items name products that do not exist; `skus` lists them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnknownSkuProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// The skus no product has.
    pub skus: Vec<String>,
}

/// `412 stale-version`: `If-Match` names no current version; `current_version` is it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaleVersionProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// The product's version now (its `ETag` is this number in quotes).
    pub current_version: i64,
}

/// `409 reservation-state`: the reservation is not in a state that allows this.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationStateProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// Where the reservation stands.
    pub reservation_status: ReservationStatus,
}

/// `503 unavailable` of a reservation: contention outlasted the retry budget
/// (`attempts` says how many transactions were tried), or the database cannot serve.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationUnavailableProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// Transactions tried before giving up; only when contention was the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub attempts: Option<u32>,
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
            InventoryError::Auth(refusal) => refusal.into(),
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

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    /// The extension members the documents show are the ones the problems carry.
    #[test]
    fn documented_problem_members_are_the_ones_sent() {
        let schema_has = |schema: utoipa::openapi::RefOr<utoipa::openapi::Schema>, member: &str| {
            serde_json::to_string(&schema)
                .expect("serializable")
                .contains(&format!("\"{member}\""))
        };
        let sent = [
            (insufficient_stock(&[]), "items"),
            (unknown_skus(&[]), "skus"),
            (
                InventoryError::Store(StoreError::Contention { attempts: 3 }).into(),
                "attempts",
            ),
        ];
        for (problem, member) in sent {
            let value = serde_json::to_value(&problem).expect("serializable");
            assert!(value.get(member).is_some(), "{member} in {value}");
        }
        assert!(schema_has(InsufficientStockProblem::schema(), "items"));
        assert!(schema_has(UnknownSkuProblem::schema(), "skus"));
        assert!(schema_has(
            ReservationUnavailableProblem::schema(),
            "attempts"
        ));
        assert!(schema_has(StaleVersionProblem::schema(), "current_version"));
        assert!(schema_has(
            ReservationStateProblem::schema(),
            "reservation_status"
        ));
    }
}
