//! `/v1/users/{id}/following` and `/followers`: follow, unfollow, and the
//! graph lists both ways.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::Problem;
use service_kit::auth::Caller;
use service_kit::extract::{Json, Path, Query};
use service_kit::problem::ValidationProblem;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, PageParams, user};
use crate::cursor;
use crate::domain::{Direction, Invalid, PageLimit, UserId};
use crate::error::Error;
use crate::messages::FanoutMessage;
use crate::store::Edge;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(follow_user, unfollow_user))
        .routes(routes!(list_following))
        .routes(routes!(list_followers))
}

/// One user in a graph list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserEdge {
    pub user_id: String,
    /// When the follow was made.
    pub since: DateTime<Utc>,
}

/// A page of a graph list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserEdge>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Follow `target` (idempotent). Their recent posts are backfilled into the timeline asynchronously.
/// The follower `id` is the caller: the bearer token's subject.
#[utoipa::path(
    put,
    path = "/v1/users/{id}/following/{target}",
    tag = "graph",
    security(("bearer" = [])),
    params(("id" = UserId, Path, description = "The follower"), ("target" = UserId, Path, description = "The user to follow")),
    responses(
        (status = 204, description = "Following"),
        (status = 400, description = "Malformed user id; `field` names it", body = ValidationProblem, content_type = "application/problem+json"),
        (status = 403, description = "`id` is not the token's subject: nobody follows or unfollows for someone else", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Self-follow", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn follow_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, target)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    caller.require_subject(&id, "follow")?;
    change_follow(&state, &id, &target, Change::Follow).await
}

/// Stop following `target` (idempotent). Their posts leave the timeline at
/// once for reads (pages are filtered against the reader's follows); the rows
/// themselves are removed asynchronously. Unfollowing someone not followed
/// changes nothing. The follower `id` is the caller: the bearer token's subject.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}/following/{target}",
    tag = "graph",
    security(("bearer" = [])),
    params(("id" = UserId, Path, description = "The follower"), ("target" = UserId, Path, description = "The user to unfollow")),
    responses(
        (status = 204, description = "Not following"),
        (status = 400, description = "Malformed user id; `field` names it", body = ValidationProblem, content_type = "application/problem+json"),
        (status = 403, description = "`id` is not the token's subject: nobody follows or unfollows for someone else", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Self-unfollow; `field` names the target", body = ValidationProblem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn unfollow_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, target)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    caller.require_subject(&id, "unfollow")?;
    change_follow(&state, &id, &target, Change::Unfollow).await
}

/// A follow or an unfollow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Follow,
    Unfollow,
}

/// Writes the change both ways with its fan-out message in one logged batch,
/// then publishes the message. Following oneself, or unfollowing oneself, is
/// `422`; unfollowing someone not followed changes nothing (no write, no
/// message).
async fn change_follow(
    state: &AppState,
    id: &str,
    target: &str,
    change: Change,
) -> Result<StatusCode, Error> {
    let (id, target) = (user(id)?, user(target)?);
    if id == target {
        return Err(match change {
            Change::Follow => Error::SelfFollow,
            Change::Unfollow => {
                Error::Validation(Invalid::new("target", "a user cannot unfollow themselves"))
            }
        });
    }
    let store = state.store.get()?;
    let (follower, followee, event_id) = (id.clone(), target.clone(), Uuid::now_v7());
    let message = match change {
        Change::Follow => FanoutMessage::Follow {
            follower,
            followee,
            event_id,
        },
        Change::Unfollow => {
            let Some(since) = store.follow_since(&id, &target).await? else {
                return Ok(StatusCode::NO_CONTENT);
            };
            FanoutMessage::Unfollow {
                follower,
                followee,
                event_id,
                since: Some(since),
            }
        }
    };
    let entry = state.publisher.outbox_entry(message);
    match change {
        Change::Follow => store.follow(&id, &target, &entry).await?,
        Change::Unfollow => store.unfollow(&id, &target, &entry).await?,
    }
    state.publisher.publish_and_clear(store, &entry).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn graph_page(
    state: &AppState,
    id: &str,
    direction: Direction,
    params: PageParams,
) -> Result<Json<UserPage>, Error> {
    let id = user(id)?;
    let limit = PageLimit::parse(params.limit).map_err(Error::BadParameter)?;
    let paging_state = params
        .cursor
        .as_deref()
        .map(|raw| cursor::parse_graph(raw, &id, direction))
        .transpose()
        .map_err(Error::BadParameter)?;
    let page = state
        .store
        .get()?
        .graph_page(&id, direction, limit.as_i32(), paging_state)
        .await?;
    Ok(Json(UserPage {
        items: page
            .items
            .into_iter()
            .map(|Edge { user_id, since }| UserEdge { user_id, since })
            .collect(),
        next_cursor: page
            .paging_state
            .map(|state| cursor::graph(&id, direction, &state)),
    }))
}

/// Whom the user follows.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/following",
    tag = "graph",
    params(("id" = UserId, Path, description = "The user"), PageParams),
    responses(
        (status = 200, description = "A page of followed users", body = UserPage),
        (status = 400, description = "Malformed user id, limit or cursor (`field` names it where one is at fault)", body = ValidationProblem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_following(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<UserPage>, Error> {
    graph_page(&state, &id, Direction::Following, params).await
}

/// Who follows the user.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/followers",
    tag = "graph",
    params(("id" = UserId, Path, description = "The user"), PageParams),
    responses(
        (status = 200, description = "A page of followers", body = UserPage),
        (status = 400, description = "Malformed user id, limit or cursor (`field` names it where one is at fault)", body = ValidationProblem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_followers(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<UserPage>, Error> {
    graph_page(&state, &id, Direction::Followers, params).await
}
