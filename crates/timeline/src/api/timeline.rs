//! `/v1/users/{id}/timeline`: the home timeline, at a chosen consistency.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use service_kit::Problem;
use service_kit::auth::Caller;
use service_kit::extract::{Json, Path, Query};
use service_kit::problem::ValidationProblem;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, PostPage, PostView, user};
use crate::cursor;
use crate::domain::{PageLimit, ReadConsistency, UserId};
use crate::error::Error;
use crate::store::{Position, TimelineSlice};

/// The response header that echoes the consistency level a timeline was read at.
pub const READ_CONSISTENCY_HEADER: &str = "read-consistency";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(read_timeline))
}

/// Paging and consistency of a timeline read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(schema_with = PageLimit::schema)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Consistency level of the read: `one` (default), `quorum` or `all`.
    #[param(inline)]
    pub consistency: Option<ReadConsistency>,
}

/// The user's home timeline, newest first: their own posts, the posts fanned
/// out to them, and the posts of celebrities they follow merged at read time.
/// Only its owner reads it: `id` must be the bearer token's subject.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/timeline",
    tag = "timeline",
    security(("bearer" = [])),
    params(("id" = UserId, Path, description = "The reader"), TimelineParams),
    responses(
        (status = 200, description = "A page of the timeline", body = PostPage,
            headers(("read-consistency" = String, description = "The consistency level the page was read at"))),
        (status = 400, description = "Malformed user id, limit, cursor or consistency (`field` names it where one is at fault)", body = ValidationProblem, content_type = "application/problem+json"),
        (status = 403, description = "`id` is not the token's subject: a home timeline is read only by its owner", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not enough replicas answered, or store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn read_timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<TimelineParams>,
) -> Result<Response, Error> {
    caller.require_subject(&id, "read the home timeline")?;
    let reader = user(&id)?;
    let limit = PageLimit::parse(params.limit).map_err(Error::BadParameter)?;
    let consistency = params.consistency.unwrap_or_default();
    let position = params
        .cursor
        .as_deref()
        .map(|raw| cursor::parse_timeline(raw, &reader))
        .transpose()
        .map_err(Error::BadParameter)?
        .unwrap_or(Position::Newest);
    let store = state.store.get()?;
    // One more than asked tells whether a next page exists.
    let TimelineSlice { mut items, resume } = store
        .timeline(&reader, position, limit.get() + 1, consistency)
        .await?;
    let next_cursor = if items.len() > limit.get() {
        items.truncate(limit.get());
        items.last().map(|last| {
            let bucket = store.bucketing().bucket_of(last.created_at);
            cursor::timeline(&reader, bucket, last.id)
        })
    } else {
        match resume {
            Some(Position::Before { bucket, post_id }) => {
                Some(cursor::timeline(&reader, bucket, post_id))
            }
            _ => None,
        }
    };
    let page = PostPage {
        items: items.into_iter().map(PostView::from).collect(),
        next_cursor,
    };
    let mut response = Json(page).into_response();
    response.headers_mut().insert(
        READ_CONSISTENCY_HEADER,
        HeaderValue::from_static(consistency.as_str()),
    );
    Ok(response)
}
