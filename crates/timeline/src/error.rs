//! The one error type of the timeline API and its problem+json mapping.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::Problem;

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
    #[error("{0}")]
    NotFound(String),
    /// The store is not connected or migrated yet, or cannot serve right now.
    #[error("the timeline store is not available")]
    Unavailable,
    #[error(transparent)]
    Store(Box<StoreError>),
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::BadPagingState(_) => {
                Self::BadParameter(Invalid("cursor is not one this service issued".into()))
            }
            error => Self::Store(Box::new(error)),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::BadParameter(invalid) => Problem::bad_request(invalid.0),
            Self::Validation(invalid) => Problem::validation(invalid.0),
            Self::SelfFollow => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "self-follow",
                "Self-Follow",
            )
            .with_detail("a user cannot follow themselves"),
            Self::NotFound(detail) => Problem::not_found(detail),
            Self::Unavailable => Problem::unavailable("the timeline store is not available", 1),
            Self::Store(error) if error.is_unavailable() => {
                tracing::warn!(%error, "store unavailable");
                Problem::unavailable("the timeline store is not available", 1)
            }
            Self::Store(error) => Problem::internal(&*error),
        };
        problem.into_response()
    }
}
