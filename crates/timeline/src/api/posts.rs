//! `/v1/posts` and `/v1/users/{id}/posts`: posting (idempotently, with a
//! key) and reading posts back.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::Problem;
use service_kit::auth::Caller;
use service_kit::extract::{Json, Path, Query};
use service_kit::openapi::idempotency_key_parameter;
use service_kit::problem::ValidationProblem;
use utoipa::IntoParams;
use utoipa::ToSchema;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, PageParams, user};
use crate::cursor;
use crate::domain::{Content, PageLimit, PostId, UserId};
use crate::error::Error;
use crate::messages::{FanoutMessage, PostPayload};
use crate::store::{KeyClaim, PostRecord};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_post))
        .routes(routes!(get_post))
        .routes(routes!(list_user_posts))
}

/// A new post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPost {
    /// The author.
    #[schema(value_type = UserId, example = "ann")]
    pub author_id: String,
    #[schema(value_type = Content, example = "hello, world")]
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

/// Store a post durably (QUORUM) and enqueue its fan-out. The author sees it
/// in their own timeline as soon as this answers; followers eventually.
/// (Where the service runs with `POST_WRITE_CONSISTENCY=one`, one replica has
/// the post when this answers, and a failed post may have left part of it.)
///
/// With an `Idempotency-Key` (scoped to the author), a retry of the same post
/// answers the original `202` body with `Idempotent-Replayed: true` and makes
/// no second post, even when the first attempt failed half-way: the retry
/// writes the same post (same id) again, which changes nothing that landed.
/// The same key with another content is `422`.
///
/// The author is the caller: `author_id` must be the bearer token's subject
/// (`403` otherwise, and nothing is written).
#[utoipa::path(
    post,
    path = "/v1/posts",
    tag = "posts",
    security(("bearer" = [])),
    params(IdempotencyKeyHeader),
    request_body = NewPost,
    responses(
        (status = 202, description = "Stored; fan-out enqueued", body = PostView,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replay")),
            links(
                ("GetPost" = (operation_id = "get_post", parameters(("id" = "$response.body#/id")))),
                ("ListAuthorPosts" = (operation_id = "list_user_posts", parameters(("id" = "$response.body#/author_id")))),
                ("ReadAuthorTimeline" = (operation_id = "read_timeline", parameters(("id" = "$response.body#/author_id")))),
            )),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`author_id` is not the token's subject: nobody posts for someone else", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad author id, empty or oversized content, unknown field, invalid Idempotency-Key (`field` names it), or the key reused with another post", body = ValidationProblem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_post(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<NewPost>,
) -> Result<Response, Error> {
    // Before anything is claimed or written: a forbidden post changes nothing.
    caller.require_subject(&body.author_id, "post")?;
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

/// The optional `Idempotency-Key` header, for the document.
struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![idempotency_key_parameter(
            "Makes retries safe, per author: same key and post → same post \
             (`Idempotent-Replayed: true`); the same key with another post → 422",
        )]
    }
}

/// Read one post.
#[utoipa::path(
    get,
    path = "/v1/posts/{id}",
    tag = "posts",
    params(("id" = PostId, Path, description = "The post id (a timeuuid)")),
    responses(
        (status = 200, description = "The post", body = PostView),
        (status = 400, description = "Not a timeuuid; `field` names it", body = ValidationProblem, content_type = "application/problem+json"),
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
    params(("id" = UserId, Path, description = "The author"), PageParams),
    responses(
        (status = 200, description = "A page of posts", body = PostPage),
        (status = 400, description = "Malformed user id, limit or cursor (`field` names it where one is at fault)", body = ValidationProblem, content_type = "application/problem+json"),
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
