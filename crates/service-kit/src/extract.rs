//! Extractors whose rejections are [`Problem`]s, so malformed input gets the
//! same error shape as everything else (and never a `500`).
//!
//! Syntax errors are `400`; well-formed JSON of the wrong shape (unknown
//! fields, wrong types, out-of-range numbers) is `422`; a missing JSON content
//! type is `415`; a body over the limit is `413`.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};

use crate::Problem;

/// `axum::Json` with problem+json rejections. Also a response body.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with problem+json rejections.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with problem+json rejections.
#[derive(Debug, Clone, Copy, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let detail = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => Problem::validation(detail),
            JsonRejection::JsonSyntaxError(_) => {
                Problem::new(status, "malformed-json", "Malformed JSON").with_detail(detail)
            }
            _ => Problem::from_status(status).with_detail(detail),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::new(
            rejection.status(),
            "invalid-query",
            "Invalid Query Parameters",
        )
        .with_detail(rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Problem::new(rejection.status(), "invalid-path", "Invalid Path Parameter")
            .with_detail(rejection.body_text())
    }
}
