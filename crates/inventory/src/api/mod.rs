//! The HTTP API under `/v1`: DTOs, validation at the edge, thin handlers.

mod products;
mod reservations;

use std::sync::Arc;

use axum::extract::FromRef;
use service_kit::auth::Authenticator;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use crate::config::ReservationSettings;
use crate::store::PgStore;

/// The scope that lets a caller create and change products.
pub const ADMIN_SCOPE: &str = "inventory:admin";

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: PgStore,
    pub reservations: ReservationSettings,
    /// Verifies bearer tokens (see [`service_kit::auth::Caller`]).
    pub auth: Arc<Authenticator>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CAP inventory service",
        description = "Strongly consistent (CP) stock on PostgreSQL: optimistic locking, \
                       all-or-nothing reservations, no oversell, ever. When the database is \
                       unreachable the service refuses (503 + Retry-After) rather than guesses.",
    ),
    components(schemas(
        service_kit::Problem,
        service_kit::problem::ValidationProblem,
        crate::domain::Sku,
        crate::domain::ProductName,
        crate::domain::Quantity,
        crate::domain::StockLevel,
        crate::error::InsufficientStockProblem,
        crate::error::UnknownSkuProblem,
        crate::error::StaleVersionProblem,
        crate::error::ReservationStateProblem,
        crate::error::ReservationUnavailableProblem,
    )),
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
