//! The HTTP API under `/v1`: DTOs, validation at the edge, thin handlers.

mod products;
mod reservations;

use std::time::Duration;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::store::{ContentionPolicy, PgStore};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: PgStore,
    pub reservations: ReservationSettings,
}

/// Limits of `POST /v1/reservations`, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ReservationSettings {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub contention: ContentionPolicy,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CAP inventory service",
        description = "Strongly consistent (CP) stock on PostgreSQL: optimistic locking, \
                       all-or-nothing reservations, no oversell, ever. When the database is \
                       unreachable the service refuses (503 + Retry-After) rather than guesses.",
    ),
    components(schemas(service_kit::Problem)),
    tags(
        (name = "products", description = "Products and their stock"),
        (name = "reservations", description = "Holds on stock: reserve, confirm, cancel"),
    )
)]
struct ApiDoc;

/// The `/v1` routes and their OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(products::router())
        .merge(reservations::router())
}
