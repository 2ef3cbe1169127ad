//! Domain values, each validated once at the edge and trusted after.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest quantity one reservation line may ask for.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Largest stock a product may be created with or restocked by at once.
pub const MAX_STOCK: i64 = 1_000_000_000;
/// Most lines one reservation may hold.
pub const MAX_ITEMS: usize = 100;
/// Most characters a product name may have.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest hold any deployment may configure (`RESERVATION_MAX_TTL_SECS`), in seconds.
pub const MAX_TTL_SECS: i64 = 30 * 24 * 3600;
/// Most entries one ledger page may hold.
pub const MAX_LEDGER_PAGE: i64 = 200;
/// Entries per ledger page when the client does not say.
pub const DEFAULT_LEDGER_PAGE: i64 = 50;

use service_kit::openapi::{identifier_schema, integer_schema, or_null, text_schema};
pub use service_kit::validate::Invalid;
use service_kit::validate::{identifier, no_control_characters};
use utoipa::openapi::{RefOr, Schema};

/// A stock-keeping unit: 1–64 of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        identifier("sku", raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The document's schema of a sku: the rule [`Sku::parse`] checks.
impl utoipa::PartialSchema for Sku {
    fn schema() -> RefOr<Schema> {
        identifier_schema("A stock-keeping unit: 1-64 characters of `A-Z a-z 0-9 . _ -`").into()
    }
}

impl utoipa::ToSchema for Sku {}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product's display name: 1–200 characters, not only whitespace, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let length = raw.chars().count();
        if raw.trim().is_empty() || length > MAX_NAME_CHARS {
            return Err(Invalid::new(
                "name",
                format!("name must be 1-{MAX_NAME_CHARS} characters and not blank (got {length})"),
            ));
        }
        no_control_characters("name", raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The document's schema of a name: the rule [`ProductName::parse`] checks.
impl utoipa::PartialSchema for ProductName {
    fn schema() -> RefOr<Schema> {
        text_schema(
            "A product's display name: 1-200 characters, not blank, no control characters",
            MAX_NAME_CHARS,
            true,
        )
        .into()
    }
}

impl utoipa::ToSchema for ProductName {}

/// A positive number of units, at most [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        if !(1..=MAX_QUANTITY).contains(&raw) {
            return Err(Invalid::new(
                "quantity",
                format!("quantity must be between 1 and {MAX_QUANTITY} (got {raw})"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The document's schema of a quantity: the rule [`Quantity::parse`] checks.
impl utoipa::PartialSchema for Quantity {
    fn schema() -> RefOr<Schema> {
        integer_schema("Units of one product", 1, MAX_QUANTITY).into()
    }
}

impl utoipa::ToSchema for Quantity {}

/// Units received into stock: `0..=MAX_STOCK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel(i64);

impl StockLevel {
    pub fn parse(raw: i64, field: &'static str) -> Result<Self, Invalid> {
        if !(0..=MAX_STOCK).contains(&raw) {
            return Err(Invalid::new(
                field,
                format!("{field} must be between 0 and {MAX_STOCK} (got {raw})"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The document's schema of a stock level: the rule [`StockLevel::parse`] checks.
impl utoipa::PartialSchema for StockLevel {
    fn schema() -> RefOr<Schema> {
        integer_schema("Units received into stock", 0, MAX_STOCK).into()
    }
}

impl utoipa::ToSchema for StockLevel {}

/// The schema of a restock: a [`StockLevel`] above zero (`PATCH` refuses `0`).
pub fn restock_schema() -> Schema {
    integer_schema("Units received now, added to `available`", 1, MAX_STOCK)
}

/// The schema of a hold's length, in seconds: at least 1, at most what the
/// deployment configures (`RESERVATION_MAX_TTL_SECS`, never above [`MAX_TTL_SECS`]).
pub fn ttl_schema() -> Schema {
    or_null(integer_schema(
        "How long the hold lasts, in seconds; at most the deployment's RESERVATION_MAX_TTL_SECS \
         (default 3600; a longer one is 422). Absent or null: RESERVATION_DEFAULT_TTL_SECS",
        1,
        MAX_TTL_SECS,
    ))
}

/// The schema of a ledger page size.
pub fn ledger_limit_schema() -> Schema {
    integer_schema("Entries per page (default 50)", 1, MAX_LEDGER_PAGE)
}

/// A line the store could not fill: what was asked, what was there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShortItem {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// One line of a reservation request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// The lines of a reservation: 1..=[`MAX_ITEMS`], one per sku, sorted by sku.
///
/// Sorting here is what makes every transaction lock product rows in the same
/// order, so two reservations can never deadlock on each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationLines(Vec<ReservationLine>);

impl ReservationLines {
    pub fn new(mut lines: Vec<ReservationLine>) -> Result<Self, Invalid> {
        if lines.is_empty() || lines.len() > MAX_ITEMS {
            return Err(Invalid::new(
                "items",
                format!("items must hold 1-{MAX_ITEMS} lines (got {})", lines.len()),
            ));
        }
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        if let Some(pair) = lines.windows(2).find(|w| w[0].sku == w[1].sku) {
            return Err(Invalid::new(
                "items",
                format!("sku '{}' appears more than once in items", pair[0].sku),
            ));
        }
        Ok(Self(lines))
    }

    /// How many lines (products) the reservation has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a reservation has at least one line.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ReservationLine> {
        self.0.iter()
    }

    pub fn skus(&self) -> Vec<String> {
        self.0.iter().map(|l| l.sku.as_str().to_owned()).collect()
    }

    pub fn quantities(&self) -> Vec<i64> {
        self.0.iter().map(|l| l.quantity.get()).collect()
    }
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    /// Stock is set aside until `expires_at`.
    Held,
    /// Sold: the held stock moved to `sold`.
    Confirmed,
    /// Released by the client; stock back to `available`.
    Cancelled,
    /// Released by the sweeper after `expires_at`; stock back to `available`.
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "held" => Some(Self::Held),
            "confirmed" => Some(Self::Confirmed),
            "cancelled" => Some(Self::Cancelled),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_accepts_the_documented_alphabet_only() {
        assert!(Sku::parse("ABC-1.x_2").is_ok());
        assert!(Sku::parse(&"a".repeat(64)).is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse(&"a".repeat(65)).is_err());
        assert!(Sku::parse("a b").is_err());
        assert!(Sku::parse("é").is_err());
    }

    #[test]
    fn quantity_is_positive_and_bounded() {
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(MAX_QUANTITY).is_ok());
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(MAX_QUANTITY + 1).is_err());
    }

    #[test]
    fn name_must_not_be_blank_or_long() {
        assert!(ProductName::parse("Widget").is_ok());
        assert!(ProductName::parse("   ").is_err());
        assert!(ProductName::parse(&"n".repeat(201)).is_err());
        let nul = ProductName::parse("a\u{0}b").expect_err("NUL is refused");
        assert_eq!(nul.field, "name");
    }

    #[test]
    fn lines_are_sorted_and_unique() {
        let line = |sku: &str| ReservationLine {
            sku: Sku::parse(sku).expect("valid"),
            quantity: Quantity::parse(1).expect("valid"),
        };
        let lines = ReservationLines::new(vec![line("b"), line("a"), line("c")]).expect("valid");
        assert_eq!(lines.skus(), ["a", "b", "c"]);
        assert!(ReservationLines::new(vec![line("a"), line("a")]).is_err());
        assert!(ReservationLines::new(vec![]).is_err());
    }
}
