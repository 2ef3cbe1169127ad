//! `/v1/products`: create, read, update with `If-Match`, ledger pages.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use headers::{ETag, HeaderMapExt, IfMatch};
use serde::{Deserialize, Serialize};
use service_kit::extract::{Json, Path, Query};
use service_kit::validate::{present_whole_number, whole_number};
use utoipa::openapi::Required;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use service_kit::auth::Caller;

use super::{ADMIN_SCOPE, AppState};
use crate::domain::{
    DEFAULT_LEDGER_PAGE, Invalid, MAX_LEDGER_PAGE, ProductName, Sku, StockLevel,
    ledger_limit_schema, restock_schema,
};
use crate::error::{InventoryError, StaleVersionProblem};
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
    #[schema(value_type = Sku, example = "SKU-1")]
    pub sku: String,
    #[schema(value_type = ProductName, example = "Limited sneaker")]
    pub name: String,
    /// Units received.
    #[serde(deserialize_with = "whole_number")]
    #[schema(value_type = StockLevel, example = 100)]
    pub stock: i64,
}

/// Changes to a product: a new name, more stock, or both (at least one).
/// `null` is not a value of either: leave the member out instead.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UpdateProduct {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = ProductName, required = false)]
    pub name: Option<String>,
    /// Units received now, added to `available`.
    #[serde(default, deserialize_with = "present_whole_number")]
    #[schema(schema_with = restock_schema, required = false)]
    pub restock: Option<i64>,
}

/// A member that, when present, must hold a value (`null` is refused).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
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
    #[param(schema_with = ledger_limit_schema)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page: the id of the oldest entry seen
    /// (entries before it come next).
    #[param(schema_with = ledger_cursor_schema)]
    pub cursor: Option<String>,
}

/// Most digits of a ledger cursor (an entry id): any such number fits an `i64`.
const LEDGER_CURSOR_DIGITS: usize = 18;
/// What a ledger cursor is: 1–[`LEDGER_CURSOR_DIGITS`] decimal digits.
const LEDGER_CURSOR_PATTERN: &str = "^[0-9]{1,18}$";

fn ledger_cursor_schema() -> utoipa::openapi::Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(LEDGER_CURSOR_DIGITS))
        .pattern(Some(LEDGER_CURSOR_PATTERN))
        .into()
}

/// The entry id a cursor names, if it is one ([`LEDGER_CURSOR_PATTERN`]).
fn parse_ledger_cursor(raw: &str) -> Option<i64> {
    let digits = !raw.is_empty()
        && raw.len() <= LEDGER_CURSOR_DIGITS
        && raw.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| raw.parse().ok()).flatten()
}

/// What `If-Match` may be (RFC 9110 §13.1.1): `*`, or a list of entity tags,
/// strong or weak, of visible ASCII.
const IF_MATCH_PATTERN: &str = r#"^(?:\*|(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:W/)?"[!#-~]*")*)$"#;

/// Whether `raw` is an `If-Match` value of [`IF_MATCH_PATTERN`]. (The `headers`
/// crate reads any list and lets the entries it cannot read match nothing; a
/// client that sends those gets `400`, not a `412` it cannot act on.)
fn is_if_match(raw: &str) -> bool {
    fn skip_ows(bytes: &[u8]) -> &[u8] {
        let start = bytes
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(bytes.len());
        &bytes[start..]
    }
    if raw == "*" {
        return true;
    }
    let mut rest = raw.as_bytes();
    loop {
        rest = skip_ows(rest);
        rest = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(tag) = rest.strip_prefix(b"\"") else {
            return false;
        };
        let Some(end) = tag.iter().position(|&b| b == b'"') else {
            return false;
        };
        let etagc = |b: &u8| *b == b'!' || (b'#'..=b'~').contains(b);
        if !tag[..end].iter().all(etagc) {
            return false;
        }
        rest = skip_ows(&tag[end + 1..]);
        match rest.split_first() {
            None => return true,
            Some((b',', after)) => rest = after,
            Some(_) => return false,
        }
    }
}

/// The required `If-Match` header of `PATCH`, for the document.
struct IfMatchHeader;

impl IntoParams for IfMatchHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<utoipa::openapi::path::Parameter> {
        vec![if_match_parameter()]
    }
}

fn if_match_parameter() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("If-Match")
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(
            "The product's current ETag (e.g. \"3\"), a list of entity tags, or `*`",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(IF_MATCH_PATTERN)),
        ))
        .build()
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
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Product,
            headers(("ETag" = String, description = "The version in quotes"), ("Location" = String)),
            links(
                ("GetProduct" = (operation_id = "get_product", parameters(("sku" = "$response.body#/sku")))),
                ("UpdateProduct" = (operation_id = "update_product", parameters(("sku" = "$response.body#/sku"), ("header.If-Match" = "$response.header.ETag")))),
                ("ListLedger" = (operation_id = "list_ledger", parameters(("sku" = "$response.body#/sku")))),
                ("ReserveOne" = (operation_id = "create_reservation", request_body = json!({"items": [{"sku": "$response.body#/sku", "quantity": 1}]}))),
            )),
        (status = 403, description = "The token does not grant `inventory:admin`", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A product with this sku exists", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (`field` names it), or the JSON has the wrong shape", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
    )
)]
async fn create_product(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateProduct>,
) -> Result<Response, InventoryError> {
    caller.require_scope(ADMIN_SCOPE)?;
    let sku = Sku::parse(&body.sku)?;
    let name = ProductName::parse(&body.name)?;
    let stock = StockLevel::parse(body.stock, "stock")?;
    let product = state.store.create_product(&sku, &name, stock).await?;
    Ok(with_etag(StatusCode::CREATED, product))
}

/// Read a product's current stock (always the latest committed state).
#[utoipa::path(
    get, path = "/v1/products/{sku}", tag = "products",
    params(("sku" = Sku, Path, description = "Product sku")),
    responses(
        (status = 200, description = "The product", body = Product,
            headers(("ETag" = String, description = "The version in quotes")),
            links(
                ("UpdateProduct" = (operation_id = "update_product", parameters(("sku" = "$response.body#/sku"), ("header.If-Match" = "$response.header.ETag")))),
            )),
        (status = 404, description = "No such product", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed sku (`field` names it)", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
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
    params(("sku" = Sku, Path, description = "Product sku"), IfMatchHeader),
    request_body = UpdateProduct,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Product, headers(("ETag" = String, description = "The new version in quotes"))),
        (status = 400, description = "If-Match is not `*` or a list of entity tags, or the JSON is malformed", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token does not grant `inventory:admin`", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names no current version (strong comparison; `*` matches any); `current_version` says the current one", body = StaleVersionProblem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (`field` names it), nothing to change, or the JSON has the wrong shape", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
        (status = 428, description = "If-Match missing", body = service_kit::Problem, content_type = "application/problem+json"),
    )
)]
async fn update_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(sku): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateProduct>,
) -> Result<Response, InventoryError> {
    caller.require_scope(ADMIN_SCOPE)?;
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
    let well_formed = headers
        .get_all(header::IF_MATCH)
        .iter()
        .all(|value| value.to_str().is_ok_and(is_if_match));
    if !well_formed {
        return Err(InventoryError::BadQuery(
            "If-Match must be * or a list of entity tags such as \"3\"".into(),
        ));
    }
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
    params(("sku" = Sku, Path, description = "Product sku"), LedgerQuery),
    responses(
        (status = 200, description = "A page of movements", body = LedgerPage),
        (status = 400, description = "Bad cursor or limit", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = service_kit::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed sku (`field` names it)", body = service_kit::problem::ValidationProblem, content_type = "application/problem+json"),
    )
)]
async fn list_ledger(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    Query(query): Query<LedgerQuery>,
) -> Result<Json<LedgerPage>, InventoryError> {
    let sku = Sku::parse(&sku)?;
    let limit = query.limit.unwrap_or(DEFAULT_LEDGER_PAGE);
    if !(1..=MAX_LEDGER_PAGE).contains(&limit) {
        return Err(InventoryError::BadQuery(format!(
            "limit must be between 1 and {MAX_LEDGER_PAGE} (got {limit})"
        )));
    }
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            parse_ledger_cursor(c).ok_or_else(|| {
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
    fn if_match_syntax_is_what_the_document_says() {
        for good in [
            "*",
            "\"7\"",
            "W/\"7\"",
            "\"\"",
            "\"a,b\"",
            "\"1\", \"2\"",
            "\"1\",W/\"2\"\t,\t\"3\"",
        ] {
            assert!(is_if_match(good), "{good}");
        }
        for bad in [
            "",
            "7",
            "\"7",
            "**",
            "*, \"1\"",
            "\"1\",",
            ",\"1\"",
            "\"1\" \"2\"",
            "w/\"1\"",
            "\"a\\\"b\"",
        ] {
            assert!(!is_if_match(bad), "{bad}");
        }
        assert!(
            IF_MATCH_PATTERN.contains("[!#-~]"),
            "etagc as the check reads it"
        );
    }

    #[test]
    fn ledger_cursors_are_what_the_document_says() {
        assert!(LEDGER_CURSOR_PATTERN.ends_with(&format!("{{1,{LEDGER_CURSOR_DIGITS}}}$")));
        assert_eq!(parse_ledger_cursor("0"), Some(0));
        assert_eq!(parse_ledger_cursor("0042"), Some(42));
        assert_eq!(
            parse_ledger_cursor(&"9".repeat(LEDGER_CURSOR_DIGITS)),
            Some(999_999_999_999_999_999)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            " 1",
            "x",
            &"9".repeat(LEDGER_CURSOR_DIGITS + 1),
        ] {
            assert_eq!(parse_ledger_cursor(bad), None, "{bad}");
        }
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
