//! `/v1/reservations`: hold stock for every item or none; confirm; cancel.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::extract::{Json, Path};
use service_kit::idempotency::REPLAYED as IDEMPOTENT_REPLAYED;
use service_kit::openapi::idempotency_key_parameter;
use utoipa::openapi::Ref;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::ArrayBuilder;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use service_kit::auth::Caller;

use super::AppState;
use crate::domain::{
    Invalid, MAX_ITEMS, Quantity, ReservationLine, ReservationLines, ReservationStatus, Sku,
    ttl_schema,
};
use crate::error::{
    self, InsufficientStockProblem, InventoryError, ReservationStateProblem,
    ReservationUnavailableProblem, UnknownSkuProblem,
};
use crate::store::{
    IdempotentRequest, NewReservation, Outcome, ReservationRecord, ReservationRequest, Reserved,
    StoreError,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_reservation))
        .routes(routes!(get_reservation))
        .routes(routes!(confirm_reservation))
        .routes(routes!(cancel_reservation))
}

/// Units of one product to hold.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationItem {
    #[schema(value_type = Sku, example = "SKU-1")]
    pub sku: String,
    #[serde(deserialize_with = "service_kit::validate::whole_number")]
    #[schema(value_type = Quantity, example = 1)]
    pub quantity: i64,
}

/// Hold stock for every item, or for none.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservation {
    /// 1–100 items, one per sku.
    #[schema(schema_with = items_schema)]
    pub items: Vec<ReservationItem>,
    #[serde(
        default,
        deserialize_with = "service_kit::validate::optional_whole_number"
    )]
    #[schema(schema_with = ttl_schema, required = false)]
    pub ttl_seconds: Option<i64>,
}

/// 1–[`MAX_ITEMS`] lines, one per sku (two equal lines are one sku twice).
fn items_schema() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(ReservationItem::name()))
        .min_items(Some(1))
        .max_items(Some(MAX_ITEMS))
        .unique_items(true)
        .description(Some("1-100 lines, one per sku"))
        .build()
}

/// A reservation and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reservation {
    pub id: Uuid,
    pub status: ReservationStatus,
    pub items: Vec<ReservationItem>,
    pub created_at: DateTime<Utc>,
    /// When an unconfirmed hold is released.
    pub expires_at: DateTime<Utc>,
}

impl From<ReservationRecord> for Reservation {
    fn from(record: ReservationRecord) -> Self {
        Self {
            id: record.id,
            status: record.status,
            items: record
                .items
                .into_iter()
                .map(|item| ReservationItem {
                    sku: item.sku,
                    quantity: item.quantity,
                })
                .collect(),
            created_at: record.created_at,
            expires_at: record.expires_at,
        }
    }
}

/// Hold stock for all items or none.
///
/// With an `Idempotency-Key`, a retry of the same request answers the original
/// status and body (`Idempotent-Replayed: true`), and concurrent duplicates
/// create one reservation. Holds and refusals (unknown sku, insufficient
/// stock) are recorded; transient failures (`503`) and invalid requests are
/// not, so those can be retried with the same key.
#[utoipa::path(
    post, path = "/v1/reservations", tag = "reservations",
    params(IdempotencyKeyHeader),
    request_body = CreateReservation,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Held", body = Reservation,
            headers(("Location" = String), ("Idempotent-Replayed" = String, description = "`true` on a replay")),
            links(
                ("GetReservation" = (operation_id = "get_reservation", parameters(("id" = "$response.body#/id")))),
                ("ConfirmReservation" = (operation_id = "confirm_reservation", parameters(("id" = "$response.body#/id")))),
                ("CancelReservation" = (operation_id = "cancel_reservation", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 404, description = "Unknown sku; `skus` lists them", body = UnknownSkuProblem, content_type = "application/problem+json"),
        (status = 409, description = "Insufficient stock; `items` lists each short item with its `available`", body = InsufficientStockProblem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid items, ttl or Idempotency-Key (`field` names it), a sku twice, JSON of the wrong shape, or an Idempotency-Key reused with a different body", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
        (status = 503, description = "Contention outlasted the retry budget (`attempts`), a product is locked past the lock timeout, or the database is unreachable; see Retry-After", body = ReservationUnavailableProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
async fn create_reservation(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<CreateReservation>,
) -> Result<Response, InventoryError> {
    let outcome = reserve(&state, caller, &headers, body).await;
    let label = match &outcome {
        Ok(Reserved::Created(_)) => "created",
        Ok(Reserved::Replayed(_)) => "replayed",
        Err(InventoryError::Store(StoreError::InsufficientStock(_))) => "insufficient_stock",
        Err(InventoryError::Store(StoreError::Contention { .. })) => "contention",
        Err(InventoryError::Store(StoreError::Unavailable(_))) => "unavailable",
        Err(InventoryError::Store(StoreError::Busy(_))) => "busy",
        Err(InventoryError::Store(StoreError::Database(_))) => "error",
        Err(_) => "rejected",
    };
    metrics::counter!("inventory_reservations_total", "outcome" => label).increment(1);

    Ok(match outcome? {
        Reserved::Created(record) => created(
            StatusCode::CREATED,
            record.id,
            Json(Reservation::from(record)).into_response(),
        ),
        Reserved::Replayed(outcome) => {
            let mut response = match outcome {
                Outcome::Held { reservation } => created(
                    StatusCode::CREATED,
                    reservation.id,
                    Json(Reservation::from(reservation)).into_response(),
                ),
                // A recorded refusal: the same problem document as the first time.
                Outcome::InsufficientStock { items } => {
                    error::insufficient_stock(&items).into_response()
                }
                Outcome::UnknownSkus { skus } => error::unknown_skus(&skus).into_response(),
            };
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            response
        }
    })
}

async fn reserve(
    state: &AppState,
    caller: Caller,
    headers: &HeaderMap,
    body: CreateReservation,
) -> Result<Reserved, InventoryError> {
    let key =
        service_kit::idempotency::key(headers).map_err(InventoryError::InvalidIdempotencyKey)?;
    let settings = state.reservations;
    let fingerprint = serde_json::to_value(&body)
        .map_err(|_| Invalid::new("items", "request is not serializable"))?;
    let lines = body
        .items
        .iter()
        .map(|item| {
            Ok(ReservationLine {
                sku: Sku::parse(&item.sku)?,
                quantity: Quantity::parse(item.quantity)?,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    let ttl = match body.ttl_seconds {
        None => settings.default_ttl,
        Some(secs @ 1..) if Duration::from_secs(secs.unsigned_abs()) <= settings.max_ttl => {
            Duration::from_secs(secs.unsigned_abs())
        }
        Some(secs) => {
            return Err(Invalid::new(
                "ttl_seconds",
                format!(
                    "ttl_seconds must be between 1 and {} (got {secs})",
                    settings.max_ttl.as_secs()
                ),
            )
            .into());
        }
    };
    let request = NewReservation {
        lines: ReservationLines::new(lines)?,
        ttl_seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
    };
    let idempotency = key.map(|key| IdempotentRequest {
        key: key.to_owned(),
        fingerprint,
    });
    state
        .store
        .reserve(ReservationRequest {
            owner: caller.subject,
            reservation: request,
            idempotency,
        })
        .await
        .map_err(InventoryError::from)
}

/// The optional `Idempotency-Key` header, for the document.
struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![idempotency_key_parameter(
            "Makes retries safe: same key and body → same answer (`Idempotent-Replayed: true`); \
             the same key with another body → 422",
        )]
    }
}

fn created(status: StatusCode, id: Uuid, mut response: Response) -> Response {
    *response.status_mut() = status;
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/reservations/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A reservation id from the path: a malformed one is `400`; a well-formed
/// one that names nothing is the store's `404`.
fn parse_id(raw: &str) -> Result<Uuid, InventoryError> {
    raw.parse()
        .map_err(|_| InventoryError::MalformedId { field: "id" })
}

/// Read a reservation. A hold past its expiry reads as `expired`.
#[utoipa::path(
    get, path = "/v1/reservations/{id}", tag = "reservations",
    params(("id" = Uuid, Path, description = "Reservation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The reservation", body = Reservation),
        (status = 400, description = "Malformed id (not a UUID); `field` names it", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
        (status = 404, description = "No such reservation of the token's subject (another subject's reads as not found)", body = service_kit::Problem, content_type = "application/problem+json"),
    )
)]
async fn get_reservation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Reservation>, InventoryError> {
    let record = state
        .store
        .reservation(parse_id(&id)?, &caller.subject)
        .await?;
    Ok(Json(record.into()))
}

/// Held → confirmed: the held units are sold.
#[utoipa::path(
    post, path = "/v1/reservations/{id}/confirm", tag = "reservations",
    params(("id" = Uuid, Path, description = "Reservation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Confirmed (also when already confirmed)", body = Reservation),
        (status = 400, description = "Malformed id (not a UUID); `field` names it", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
        (status = 404, description = "No such reservation of the token's subject (another subject's reads as not found)", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Cancelled or expired; `reservation_status` says which", body = ReservationStateProblem, content_type = "application/problem+json"),
    )
)]
async fn confirm_reservation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Reservation>, InventoryError> {
    let record = state.store.confirm(parse_id(&id)?, &caller.subject).await?;
    Ok(Json(record.into()))
}

/// Held → cancelled: the held units go back to available. Idempotent.
#[utoipa::path(
    post, path = "/v1/reservations/{id}/cancel", tag = "reservations",
    params(("id" = Uuid, Path, description = "Reservation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled (also when already cancelled)", body = Reservation),
        (status = 400, description = "Malformed id (not a UUID); `field` names it", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
        (status = 404, description = "No such reservation of the token's subject (another subject's reads as not found)", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Confirmed or expired; `reservation_status` says which", body = ReservationStateProblem, content_type = "application/problem+json"),
    )
)]
async fn cancel_reservation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Reservation>, InventoryError> {
    let record = state.store.cancel(parse_id(&id)?, &caller.subject).await?;
    Ok(Json(record.into()))
}
