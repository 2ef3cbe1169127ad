//! RFC 9457 problem details: the one error shape every endpoint answers with.
//!
//! A [`Problem`] carries the standard members (`type`, `title`, `status`,
//! `detail`) plus typed extension members, and the response headers that go
//! with it (`Retry-After` on a `503`). Internal errors never carry driver or SQL
//! text: [`Problem::internal`] logs the cause once and answers an opaque `500`.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Members RFC 9457 defines; extensions may not reuse these names.
const STANDARD_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "instance"];

/// An RFC 9457 problem document and the response it becomes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "/problems/not-found",
    "title": "Not Found",
    "status": 404,
    "detail": "no product with sku 'ABC-1'"
}))]
pub struct Problem {
    /// A URI reference naming the problem type; relative, under `/problems/`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the problem type; the same for every occurrence.
    pub title: String,
    /// The HTTP status code of this occurrence.
    pub status: u16,
    /// What went wrong this time, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members specific to the problem type.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
    /// Headers sent with the response, such as `Retry-After`.
    #[serde(skip)]
    #[schema(ignore)]
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A problem that names the request field at fault: the `422` of a refused
/// value, and the `400` of a malformed parameter where a service names it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation",
    "title": "Validation Failed",
    "status": 422,
    "detail": "quantity must be between 1 and 1000000 (got 0)",
    "field": "quantity"
}))]
pub struct ValidationProblem {
    #[serde(flatten)]
    pub problem: Problem,
    /// The request field at fault (a JSON member, a path segment, a query
    /// parameter or a header); absent when the body as a whole has the wrong
    /// shape (an unknown field, a wrong type).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
}

impl Problem {
    /// A problem of type `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            type_uri: format!("/problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    /// A problem that says no more than its status, for bare framework errors.
    pub fn from_status(status: StatusCode) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        let slug = title.to_ascii_lowercase().replace([' ', '\''], "-");
        Self::new(status, &slug, title)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member. The standard members' names are refused (an
    /// extension must never shadow `status` or `type`), and so are values that
    /// fail to serialize.
    pub fn with_extension(mut self, key: &str, value: impl Serialize) -> Self {
        if STANDARD_MEMBERS.contains(&key) {
            tracing::error!(
                key,
                "problem extension would shadow a standard member; dropped"
            );
            return self;
        }
        if let Ok(value) = serde_json::to_value(value) {
            self.extensions.insert(key.to_owned(), value);
        }
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad Request").with_detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not Found").with_detail(detail)
    }

    /// The request was well-formed but its content is not acceptable.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Validation Failed",
        )
        .with_detail(detail)
    }

    /// A dependency cannot serve now; the client should retry after a
    /// [`retry_after`] of 1–3 seconds, at random, so that clients refused
    /// together (a flash sale, an outage) do not all come back in the same second.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::unavailable_after(detail, retry_after())
    }

    /// A dependency cannot serve now; the client should retry after `retry_after_secs`.
    pub fn unavailable_after(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service Unavailable",
        )
        .with_detail(detail)
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// An opaque `500`. The cause is logged here, once, and never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
        )
        .with_detail("the server failed to handle the request; it has been logged")
    }
}

/// The range [`Problem::unavailable`] picks its `Retry-After` from, in seconds.
pub const RETRY_AFTER_SECS: std::ops::RangeInclusive<u64> = 1..=3;

/// A `Retry-After` in [`RETRY_AFTER_SECS`], at random.
pub fn retry_after() -> u64 {
    use rand::Rng;
    rand::rng().random_range(RETRY_AFTER_SECS)
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_standard_and_extension_members() {
        let problem =
            Problem::validation("quantity must be positive").with_extension("field", "quantity");
        let value = serde_json::to_value(&problem).expect("serializable");
        assert_eq!(value["type"], "/problems/validation");
        assert_eq!(value["status"], 422);
        assert_eq!(value["detail"], "quantity must be positive");
        assert_eq!(value["field"], "quantity");
    }

    #[test]
    fn extensions_cannot_shadow_standard_members() {
        let problem = Problem::not_found("gone").with_extension("status", "held");
        let value = serde_json::to_value(&problem).expect("serializable");
        assert_eq!(value["status"], 404);
    }

    #[test]
    fn unavailable_sets_retry_after() {
        let response = Problem::unavailable_after("database unreachable", 2).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn unavailable_jitters_retry_after() {
        let seen: std::collections::BTreeSet<String> = (0..200)
            .map(|_| {
                let response = Problem::unavailable("busy").into_response();
                response.headers()[header::RETRY_AFTER]
                    .to_str()
                    .expect("ascii")
                    .to_owned()
            })
            .collect();
        assert_eq!(seen, ["1", "2", "3"].map(String::from).into());
    }

    #[test]
    fn internal_hides_the_cause() {
        let problem = Problem::internal(&"relation \"products\" does not exist");
        let text = serde_json::to_string(&problem).expect("serializable");
        assert!(!text.contains("relation"));
        assert_eq!(problem.status, 500);
    }

    #[test]
    fn from_status_uses_the_reason_phrase() {
        let problem = Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(problem.title, "Payload Too Large");
        assert_eq!(problem.type_uri, "/problems/payload-too-large");
    }
}
