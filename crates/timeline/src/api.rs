//! The `/v1` HTTP API: thin handlers that validate at the edge, call the
//! store and the publisher, and shape responses. Documented with utoipa; the
//! OpenAPI document is generated from these annotations.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::Problem;
use service_kit::extract::{Json, Path, Query};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::cursor;
use crate::domain::{Content, Invalid, PageLimit, PostId, ReadConsistency, UserId};
use crate::error::Error;
use crate::messages::{FanoutMessage, PostPayload};
use crate::store::{Edge, KeyClaim, Position, PostRecord, TimelineSlice};

/// The response header that echoes the consistency level a timeline was read at.
pub const READ_CONSISTENCY_HEADER: &str = "read-consistency";

/// The routes of the API, with their OpenAPI operations.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(follow_user, unfollow_user))
        .routes(routes!(list_following))
        .routes(routes!(list_followers))
        .routes(routes!(create_post))
        .routes(routes!(get_post))
        .routes(routes!(list_user_posts))
        .routes(routes!(read_timeline))
}

/// A new post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPost {
    /// The author; `^[A-Za-z0-9_.-]{1,64}$`.
    #[schema(example = "ann", pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub author_id: String,
    /// The text: 1 to 500 characters (Unicode scalar values), not all blank.
    #[schema(example = "hello, world", min_length = 1, max_length = 500)]
    pub content: String,
}

/// A post as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostView {
    /// A timeuuid: ids sort by creation time.
    pub id: Uuid,
    pub author_id: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

impl From<PostRecord> for PostView {
    fn from(post: PostRecord) -> Self {
        Self {
            id: post.id.uuid(),
            author_id: post.author_id,
            content: post.content,
            created_at: post.created_at,
        }
    }
}

/// A page of posts, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostPage {
    pub items: Vec<PostView>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
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

/// Paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Paging and consistency of a timeline read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Consistency level of the read: `one` (default), `quorum` or `all`.
    #[param(inline)]
    pub consistency: Option<ReadConsistency>,
}

fn user(raw: &str) -> Result<UserId, Error> {
    UserId::parse(raw).map_err(Error::BadParameter)
}

/// Follow `target` (idempotent). Their recent posts are backfilled into the timeline asynchronously.
#[utoipa::path(
    put,
    path = "/v1/users/{id}/following/{target}",
    tag = "graph",
    params(("id" = String, Path, description = "The follower"), ("target" = String, Path, description = "The user to follow")),
    responses(
        (status = 204, description = "Following"),
        (status = 400, description = "Malformed user id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Self-follow", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn follow_user(
    State(state): State<AppState>,
    Path((id, target)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let (id, target) = (user(&id)?, user(&target)?);
    if id == target {
        return Err(Error::SelfFollow);
    }
    let store = state.store.get()?;
    let entry = state.publisher.outbox_entry(FanoutMessage::Follow {
        follower: id.clone(),
        followee: target.clone(),
        event_id: Uuid::now_v7(),
    });
    store.follow(&id, &target, &entry).await?;
    state.publisher.publish_and_clear(store, &entry).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop following `target` (idempotent). Their posts leave the timeline at
/// once for reads (pages are filtered against the reader's follows); the rows
/// themselves are removed asynchronously. Unfollowing someone not followed
/// changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}/following/{target}",
    tag = "graph",
    params(("id" = String, Path, description = "The follower"), ("target" = String, Path, description = "The user to unfollow")),
    responses(
        (status = 204, description = "Not following"),
        (status = 400, description = "Malformed user id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Self-unfollow", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn unfollow_user(
    State(state): State<AppState>,
    Path((id, target)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let (id, target) = (user(&id)?, user(&target)?);
    if id == target {
        return Err(Error::Validation(Invalid(
            "a user cannot unfollow themselves".into(),
        )));
    }
    let store = state.store.get()?;
    // Nothing to undo: no write, no fan-out work.
    let Some(since) = store.follow_since(&id, &target).await? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let entry = state.publisher.outbox_entry(FanoutMessage::Unfollow {
        follower: id.clone(),
        followee: target.clone(),
        event_id: Uuid::now_v7(),
        since: Some(since),
    });
    store.unfollow(&id, &target, &entry).await?;
    state.publisher.publish_and_clear(store, &entry).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn graph_page(
    state: &AppState,
    id: &str,
    followers: bool,
    params: PageParams,
) -> Result<Json<UserPage>, Error> {
    let id = user(id)?;
    let limit = PageLimit::parse(params.limit).map_err(Error::BadParameter)?;
    let paging_state = params
        .cursor
        .as_deref()
        .map(|raw| cursor::parse_graph(raw, &id, followers))
        .transpose()
        .map_err(Error::BadParameter)?;
    let page = state
        .store
        .get()?
        .graph_page(&id, followers, limit.as_i32(), paging_state)
        .await?;
    Ok(Json(UserPage {
        items: page
            .items
            .into_iter()
            .map(|Edge { user_id, since }| UserEdge { user_id, since })
            .collect(),
        next_cursor: page
            .paging_state
            .map(|state| cursor::graph(&id, followers, &state)),
    }))
}

/// Whom the user follows.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/following",
    tag = "graph",
    params(("id" = String, Path, description = "The user"), PageParams),
    responses(
        (status = 200, description = "A page of followed users", body = UserPage),
        (status = 400, description = "Malformed user id, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_following(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<UserPage>, Error> {
    graph_page(&state, &id, false, params).await
}

/// Who follows the user.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/followers",
    tag = "graph",
    params(("id" = String, Path, description = "The user"), PageParams),
    responses(
        (status = 200, description = "A page of followers", body = UserPage),
        (status = 400, description = "Malformed user id, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_followers(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<UserPage>, Error> {
    graph_page(&state, &id, true, params).await
}

/// Store a post durably (QUORUM) and enqueue its fan-out. The author sees it
/// in their own timeline as soon as this answers; followers eventually.
///
/// With an `Idempotency-Key` (scoped to the author), a retry of the same post
/// answers the original `202` body with `Idempotent-Replayed: true` and makes
/// no second post, even when the first attempt failed half-way: the retry
/// writes the same post (same id) again, which changes nothing that landed.
/// The same key with another content is `422`.
#[utoipa::path(
    post,
    path = "/v1/posts",
    tag = "posts",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: same key and body → same post")),
    request_body = NewPost,
    responses(
        (status = 202, description = "Stored; fan-out enqueued", body = PostView,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad author id, empty or oversized content, unknown field, invalid Idempotency-Key, or the key reused with another post", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewPost>,
) -> Result<Response, Error> {
    let key = service_kit::idempotency::key(&headers).map_err(Error::InvalidIdempotencyKey)?;
    let author = UserId::parse(&body.author_id).map_err(Error::Validation)?;
    let content = Content::parse(body.content)
        .map_err(Error::Validation)?
        .into_inner();
    let store = state.store.get()?;
    let mut id = PostId::generate();
    let mut replayed = false;
    if let Some(key) = key {
        match store
            .claim_post_key(&author, key, id, &content, state.post_key_retention)
            .await?
        {
            KeyClaim::Ours => {}
            KeyClaim::Earlier {
                post_id,
                content: original,
            } if original == content => {
                id = post_id;
                replayed = true;
            }
            KeyClaim::Earlier { .. } => return Err(Error::IdempotencyKeyReused),
        }
    }
    let post = PostRecord {
        id,
        author_id: author.as_str().to_owned(),
        content,
        created_at: id.created_at(),
    };
    // A replay whose post landed is answered from it; one whose first attempt
    // never finished writes the same post again (every write is an upsert by id).
    if !(replayed && store.post(id).await?.is_some()) {
        let entry = state.publisher.outbox_entry(FanoutMessage::Post {
            post: PostPayload {
                id,
                author_id: author,
                content: post.content.clone(),
                created_at: post.created_at,
            },
        });
        store.create_post(&post, &entry).await?;
        if !replayed {
            metrics::counter!("timeline_posts_accepted_total").increment(1);
        }
        state.publisher.publish_and_clear(store, &entry).await;
    }
    let mut response = (StatusCode::ACCEPTED, Json(PostView::from(post))).into_response();
    if replayed {
        response.headers_mut().insert(
            service_kit::idempotency::REPLAYED,
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Read one post.
#[utoipa::path(
    get,
    path = "/v1/posts/{id}",
    tag = "posts",
    params(("id" = String, Path, description = "The post id (a timeuuid)")),
    responses(
        (status = 200, description = "The post", body = PostView),
        (status = 400, description = "Not a timeuuid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PostView>, Error> {
    let id = PostId::parse(&id).map_err(Error::BadParameter)?;
    match state.store.get()?.post(id).await? {
        Some(post) => Ok(Json(post.into())),
        None => Err(Error::NotFound(format!("no post with id {id}"))),
    }
}

/// The user's own posts, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/posts",
    tag = "posts",
    params(("id" = String, Path, description = "The author"), PageParams),
    responses(
        (status = 200, description = "A page of posts", body = PostPage),
        (status = 400, description = "Malformed user id, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_user_posts(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<PostPage>, Error> {
    let author = user(&id)?;
    let limit = PageLimit::parse(params.limit).map_err(Error::BadParameter)?;
    let start = params
        .cursor
        .as_deref()
        .map(|raw| cursor::parse_posts(raw, &author))
        .transpose()
        .map_err(Error::BadParameter)?;
    let page = state
        .store
        .get()?
        .author_posts_page(&author, limit.get(), start)
        .await?;
    Ok(Json(PostPage {
        items: page.items.into_iter().map(PostView::from).collect(),
        next_cursor: page
            .next
            .map(|(bucket, state)| cursor::posts(&author, bucket, state.as_deref())),
    }))
}

/// The user's home timeline, newest first: their own posts, the posts fanned
/// out to them, and the posts of celebrities they follow merged at read time.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/timeline",
    tag = "timeline",
    params(("id" = String, Path, description = "The reader"), TimelineParams),
    responses(
        (status = 200, description = "A page of the timeline", body = PostPage,
            headers(("read-consistency" = String, description = "The consistency level the page was read at"))),
        (status = 400, description = "Malformed user id, limit, cursor or consistency", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not enough replicas answered, or store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn read_timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<TimelineParams>,
) -> Result<Response, Error> {
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
