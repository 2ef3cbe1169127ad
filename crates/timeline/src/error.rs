//! The one error type of the timeline API and its problem+json mapping.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::Problem;
use service_kit::auth::AuthError;

use crate::domain::Invalid;
use crate::store::StoreError;

/// Everything a timeline request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path or query parameter is malformed (user id, cursor, limit).
    #[error("{0}")]
    BadParameter(Invalid),
    /// The body is well-formed but its content is not acceptable.
    #[error("{0}")]
    Validation(Invalid),
    #[error("a user cannot follow themselves")]
    SelfFollow,
    /// The `Idempotency-Key` header is malformed.
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(service_kit::validate::Invalid),
    /// The `Idempotency-Key` was used by the same author with another post.
    #[error("Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("{0}")]
    NotFound(String),
    /// The token does not allow this: acting for another user (`403`).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The store is not connected or migrated yet, or cannot serve right now.
    #[error("the timeline store is not available")]
    Unavailable,
    #[error(transparent)]
    Store(Box<StoreError>),
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::BadPagingState(_) => Self::BadParameter(Invalid::new(
                "cursor",
                "cursor is not one this service issued",
            )),
            error => Self::Store(Box::new(error)),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::BadParameter(invalid) => {
                Problem::bad_request(invalid.message).with_extension("field", invalid.field)
            }
            Self::Validation(invalid) => invalid.into(),
            Self::SelfFollow => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "self-follow",
                "Self-Follow",
            )
            .with_detail("a user cannot follow themselves"),
            Self::InvalidIdempotencyKey(invalid) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-idempotency-key",
                "Invalid Idempotency Key",
            )
            .with_detail(invalid.message)
            .with_extension("field", invalid.field),
            Self::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency Key Reused",
            )
            .with_detail("this Idempotency-Key was used with a different post by the same author"),
            Self::NotFound(detail) => Problem::not_found(detail),
            Self::Auth(error) => error.into(),
            Self::Unavailable => Problem::unavailable("the timeline store is not available"),
            Self::Store(error) if error.is_unavailable() => {
                tracing::warn!(%error, "store unavailable");
                Problem::unavailable("the timeline store is not available")
            }
            Self::Store(error) => Problem::internal(&*error),
        };
        problem.into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header;
    use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
    use scylla::statement::Consistency;

    use super::*;

    fn store_error(db: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, "driver text".into()))
    }

    #[test]
    fn a_refused_paging_state_is_a_bad_cursor() {
        let error = Error::from(StoreError::BadPagingState(Box::new(store_error(
            DbError::ProtocolError,
        ))));
        assert!(matches!(&error, Error::BadParameter(_)));
        assert_eq!(error.into_response().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_unavailable_store_is_a_503_to_retry() {
        let error = Error::from(StoreError::from(store_error(DbError::Unavailable {
            consistency: Consistency::Quorum,
            required: 2,
            alive: 1,
        })));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry_after: u64 = response.headers()[header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!(service_kit::problem::RETRY_AFTER_SECS.contains(&retry_after));
    }

    #[test]
    fn any_other_store_error_is_an_opaque_500() {
        let error = Error::from(StoreError::from(store_error(DbError::ServerError)));
        assert!(matches!(&error, Error::Store(_)));
        assert_eq!(
            error.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
