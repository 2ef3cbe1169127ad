//! The `/v1` HTTP API: thin handlers that validate at the edge, call the
//! store and the publisher, and shape responses. One router per resource
//! ([`graph`], [`posts`], [`timeline`]), merged here with the OpenAPI document.

mod graph;
mod posts;
mod timeline;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use serde::Deserialize;
use service_kit::auth::Authenticator;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::domain::{PageLimit, UserId};
use crate::error::Error;
use crate::publisher::FanoutPublisher;
use crate::store::StoreSlot;

pub use graph::{UserEdge, UserPage};
pub use posts::{NewPost, PostPage, PostView};
pub use timeline::{READ_CONSISTENCY_HEADER, TimelineParams};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: StoreSlot,
    pub publisher: FanoutPublisher,
    /// Verifies bearer tokens and limits each subject's writes.
    pub auth: Arc<Authenticator>,
    /// How long an `Idempotency-Key` of `POST /v1/posts` is remembered.
    pub post_key_retention: Duration,
}

/// What the [`service_kit::auth::Caller`] extractor verifies tokens with.
impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CAP timeline service",
        description = "Eventually consistent home timelines: posts stored at QUORUM on Cassandra, \
                       fanned out to followers over NATS JetStream, celebrities merged at read time."
    ),
    components(schemas(
        service_kit::Problem,
        service_kit::problem::ValidationProblem,
        crate::domain::UserId,
        crate::domain::PostId,
        crate::domain::Content,
    )),
    tags(
        (name = "posts", description = "Posting and reading posts"),
        (name = "graph", description = "Who follows whom"),
        (name = "timeline", description = "Home timelines"),
    )
)]
struct ApiDoc;

/// The `/v1` routes and their OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(graph::router())
        .merge(posts::router())
        .merge(timeline::router())
}

/// Paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(schema_with = PageLimit::schema)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (opaque: only one this service issued).
    pub cursor: Option<String>,
}

fn user(raw: &str) -> Result<UserId, Error> {
    UserId::parse(raw).map_err(Error::BadParameter)
}
