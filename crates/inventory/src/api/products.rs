//! `/v1/products`: create, read, update with `If-Match`, ledger pages.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use headers::{ETag, HeaderMapExt, IfMatch};
use serde::{Deserialize, Serialize};
use service_kit::extract::{Json, Path, Query};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::{Invalid, ProductName, Sku, StockLevel};
use crate::error::InventoryError;
use crate::store::{LedgerRow, ProductRow};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product))
        .routes(routes!(get_product, update_product))
        .routes(routes!(list_ledger))
}

/// A new product and the stock it starts with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(example = "SKU-1")]
    pub sku: String,
    /// 1–200 characters.
    #[schema(example = "Limited sneaker")]
    pub name: String,
    /// Units received, `0..=1_000_000_000`.
    #[schema(example = 100)]
    pub stock: i64,
}

/// Changes to a product: a new name, more stock, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    pub name: Option<String>,
    /// Units received now, added to `available`; `1..=1_000_000_000`.
    pub restock: Option<i64>,
}

/// A product and its stock. `available + reserved + sold` is everything received.
#[derive(Debug, Serialize, ToSchema)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    /// Bumped by every change; the `ETag` is this number in quotes.
    pub version: i64,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Self {
            sku: row.sku,
            name: row.name,
            available: row.available,
            reserved: row.reserved,
            sold: row.sold,
            version: row.version,
        }
    }
}

/// One stock movement.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: i64,
    /// `received`, `reserved`, `released`, `expired`, `sold` or `adjusted`.
    pub kind: String,
    pub quantity: i64,
    pub reservation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(row: LedgerRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            quantity: row.quantity,
            reservation_id: row.reservation_id,
            created_at: row.created_at,
        }
    }
}

/// A page of stock movements, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    pub items: Vec<LedgerEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Entries per page, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The product as the body, its version as the `ETag`, and on `201` its `Location`.
/// (A quoted number and a validated sku are always valid header values; the
/// `if let`s only keep this path free of panics.)
fn with_etag(status: StatusCode, product: ProductRow) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", product.version));
    let location = HeaderValue::from_str(&format!("/v1/products/{}", product.sku));
    let mut response = (status, Json(Product::from(product))).into_response();
    if let Ok(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if let (StatusCode::CREATED, Ok(location)) = (status, location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Create a product with its initial stock.
#[utoipa::path(
    post, path = "/v1/products", tag = "products",
    request_body = CreateProduct,
    responses(
        (status = 201, description = "Created", body = Product, headers(("ETag" = String), ("Location" = String))),
        (status = 409, description = "A product with this sku exists", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unreachable", body = service_kit::Problem, content_type = "application/problem+json"),
    )
)]
async fn create_product(
    State(state): State<AppState>,
    Json(body): Json<CreateProduct>,
) -> Result<Response, InventoryError> {
    let sku = Sku::parse(&body.sku)?;
    let name = ProductName::parse(&body.name)?;
    let stock = StockLevel::parse(body.stock, "stock")?;
    let product = state.store.create_product(&sku, &name, stock).await?;
    Ok(with_etag(StatusCode::CREATED, product))
}

/// Read a product's current stock (always the latest committed state).
#[utoipa::path(
    get, path = "/v1/products/{sku}", tag = "products",
    params(("sku" = String, Path, description = "Product sku")),
    responses(
        (status = 200, description = "The product", body = Product, headers(("ETag" = String))),
        (status = 404, description = "No such product", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unreachable", body = service_kit::Problem, content_type = "application/problem+json"),
    )
)]
async fn get_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Response, InventoryError> {
    let sku = Sku::parse(&sku)?;
    let product = state.store.product(&sku).await?;
    Ok(with_etag(StatusCode::OK, product))
}

/// Rename and/or restock a product. Needs `If-Match` with its current `ETag`.
#[utoipa::path(
    patch, path = "/v1/products/{sku}", tag = "products",
    params(
        ("sku" = String, Path, description = "Product sku"),
        ("If-Match" = String, Header, description = "The product's current ETag, e.g. \"3\", a list of them, or *"),
    ),
    request_body = UpdateProduct,
    responses(
        (status = 200, description = "Updated", body = Product, headers(("ETag" = String))),
        (status = 404, description = "No such product", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 400, description = "If-Match is not a list of entity tags", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names no current version (strong comparison; `*` matches any); `current_version` says the current one", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field or nothing to change", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 428, description = "If-Match missing", body = service_kit::Problem, content_type = "application/problem+json"),
    )
)]
async fn update_product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateProduct>,
) -> Result<Response, InventoryError> {
    let sku = Sku::parse(&sku)?;
    let if_match = parse_if_match(&headers)?;
    let name = body.name.as_deref().map(ProductName::parse).transpose()?;
    let restock = body
        .restock
        .map(|units| match units {
            1.. => StockLevel::parse(units, "restock"),
            _ => Err(Invalid::new(
                "restock",
                format!("restock must be positive (got {units})"),
            )),
        })
        .transpose()?;
    if name.is_none() && restock.is_none() {
        return Err(Invalid::new("name", "nothing to update: give name, restock or both").into());
    }
    let precondition = |version: i64| if_match.precondition_passes(&etag(version));
    let product = state
        .store
        .update_product(&sku, &precondition, name.as_ref(), restock)
        .await?;
    Ok(with_etag(StatusCode::OK, product))
}

/// The strong entity tag of a product version: the number in quotes.
fn etag(version: i64) -> ETag {
    format!("\"{version}\"")
        .parse()
        .expect("a quoted decimal number is a valid entity tag")
}

/// `If-Match` as RFC 9110 §13.1.1 reads it (`*`, or a list of entity tags,
/// compared strongly: weak tags never match, `"07"` is not `"7"`, entries that
/// are not entity tags match nothing); no header → `428`; a header the crate
/// cannot read at all → `400`.
fn parse_if_match(headers: &HeaderMap) -> Result<IfMatch, InventoryError> {
    match headers.typed_try_get::<IfMatch>() {
        Ok(Some(if_match)) => Ok(if_match),
        Ok(None) => Err(InventoryError::PreconditionRequired),
        Err(_) => Err(InventoryError::BadQuery(
            "If-Match must be * or a list of entity tags such as \"3\"".into(),
        )),
    }
}

/// Stock movements of a product, newest first.
#[utoipa::path(
    get, path = "/v1/products/{sku}/ledger", tag = "products",
    params(("sku" = String, Path, description = "Product sku"), LedgerQuery),
    responses(
        (status = 200, description = "A page of movements", body = LedgerPage),
        (status = 400, description = "Bad cursor or limit", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = service_kit::Problem, content_type = "application/problem+json"),
    )
)]
async fn list_ledger(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    Query(query): Query<LedgerQuery>,
) -> Result<Json<LedgerPage>, InventoryError> {
    let sku = Sku::parse(&sku)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(InventoryError::BadQuery(format!(
            "limit must be between 1 and 200 (got {limit})"
        )));
    }
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                InventoryError::BadQuery("cursor is not one this service issued".into())
            })
        })
        .transpose()?;
    let (rows, next) = state.store.ledger(&sku, before, limit).await?;
    Ok(Json(LedgerPage {
        items: rows.into_iter().map(LedgerEntry::from).collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(value: &str, version: i64) -> Option<bool> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_MATCH,
            HeaderValue::from_str(value).expect("valid"),
        );
        parse_if_match(&headers)
            .ok()
            .map(|if_match| if_match.precondition_passes(&etag(version)))
    }

    #[test]
    fn if_match_follows_rfc_9110() {
        assert_eq!(passes("\"7\"", 7), Some(true));
        assert_eq!(passes("*", 7), Some(true));
        assert_eq!(passes("\"1\", \"7\"", 7), Some(true));
        assert_eq!(passes("\"1\", \"2\"", 7), Some(false));
        assert_eq!(
            passes("W/\"7\"", 7),
            Some(false),
            "weak tags never match a write"
        );
        assert_eq!(
            passes("\"07\"", 7),
            Some(false),
            "strong comparison is byte for byte"
        );
        assert!(matches!(
            parse_if_match(&HeaderMap::new()),
            Err(InventoryError::PreconditionRequired)
        ));
    }
}
