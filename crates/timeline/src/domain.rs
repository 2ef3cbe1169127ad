//! Domain values, validated once at the edge: [`UserId`], [`PostId`],
//! [`Content`], [`PageLimit`], [`ReadConsistency`], and the time [`Bucketing`]
//! that decides which partition a row lives in.

use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use scylla::statement::Consistency;
use scylla::value::CqlTimeuuid;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most characters a post may hold.
pub const MAX_CONTENT_CHARS: usize = 500;
/// Most items one page may hold.
pub const MAX_PAGE_LIMIT: u32 = 100;
/// Items per page when the client does not say.
pub const DEFAULT_PAGE_LIMIT: u32 = 20;

use service_kit::openapi::{identifier_schema, text_schema};
pub use service_kit::validate::Invalid;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

/// A timeuuid (a version-1 UUID) as text, what [`PostId::parse`] reads.
pub const POST_ID_PATTERN: &str =
    "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-1[0-9A-Fa-f]{3}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";

/// A user id: 1 to 64 of `A-Z a-z 0-9 _ . -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        service_kit::validate::identifier("user_id", raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The document's schema of a user id: the rule [`UserId::parse`] checks.
impl utoipa::PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        let mut schema = identifier_schema("A user id: 1-64 characters of `A-Z a-z 0-9 _ . -`");
        if let Schema::Object(object) = &mut schema {
            object.examples = vec![serde_json::json!("ann")];
        }
        schema.into()
    }
}

impl utoipa::ToSchema for UserId {}

impl TryFrom<String> for UserId {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A post id: a version-1 (time-based) UUID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PostId(CqlTimeuuid);

impl PostId {
    /// A new id for a post made now. The node id is random per process.
    pub fn generate() -> Self {
        static NODE: OnceLock<[u8; 6]> = OnceLock::new();
        let node = NODE.get_or_init(|| {
            let mut node = [0u8; 6];
            node.copy_from_slice(&Uuid::new_v4().as_bytes()[..6]);
            node[0] |= 0x01; // multicast bit: a random, not a hardware, node id
            node
        });
        Self(CqlTimeuuid::from(Uuid::now_v1(node)))
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let uuid = Uuid::parse_str(raw)
            .map_err(|_| Invalid::new("id", format!("post id {raw:?} is not a UUID")))?;
        Self::from_uuid(uuid)
            .ok_or_else(|| Invalid::new("id", format!("post id {raw:?} is not a timeuuid")))
    }

    pub fn from_uuid(uuid: Uuid) -> Option<Self> {
        (uuid.get_version_num() == 1).then(|| Self(CqlTimeuuid::from(uuid)))
    }

    pub fn from_timeuuid(id: CqlTimeuuid) -> Self {
        Self(id)
    }

    pub fn timeuuid(self) -> CqlTimeuuid {
        self.0
    }

    pub fn uuid(self) -> Uuid {
        Uuid::from(self.0)
    }

    /// When the post was made: the id's own timestamp, to the millisecond.
    pub fn created_at(self) -> DateTime<Utc> {
        let (secs, nanos) = self
            .uuid()
            .get_timestamp()
            .map_or((0, 0), |ts| ts.to_unix());
        let millis = i64::try_from(secs).unwrap_or(0) * 1000 + i64::from(nanos / 1_000_000);
        DateTime::from_timestamp_millis(millis).unwrap_or_default()
    }
}

/// The document's schema of a post id: the form [`PostId::parse`] reads.
impl utoipa::PartialSchema for PostId {
    fn schema() -> RefOr<Schema> {
        Schema::from(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("A post id: a timeuuid (version-1 UUID)"))
                .pattern(Some(POST_ID_PATTERN)),
        )
        .into()
    }
}

impl utoipa::ToSchema for PostId {}

impl fmt::Display for PostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uuid().fmt(f)
    }
}

impl Serialize for PostId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.uuid().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PostId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let uuid = Uuid::deserialize(deserializer)?;
        Self::from_uuid(uuid).ok_or_else(|| serde::de::Error::custom("post id is not a timeuuid"))
    }
}

/// The text of a post: 1 to [`MAX_CONTENT_CHARS`] characters, not all blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        if raw.trim().is_empty() {
            return Err(Invalid::new("content", "content must not be empty"));
        }
        let chars = raw.chars().count();
        if chars > MAX_CONTENT_CHARS {
            return Err(Invalid::new(
                "content",
                format!("content has {chars} characters; at most {MAX_CONTENT_CHARS} are allowed"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The document's schema of a post's text: the rule [`Content::parse`] checks.
impl utoipa::PartialSchema for Content {
    fn schema() -> RefOr<Schema> {
        text_schema(
            "The text of a post: 1-500 characters (Unicode scalar values), not all blank",
            MAX_CONTENT_CHARS,
            false,
        )
        .into()
    }
}

impl utoipa::ToSchema for Content {}

/// How many items a page holds: 1 to [`MAX_PAGE_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    pub fn parse(raw: Option<u32>) -> Result<Self, Invalid> {
        match raw.unwrap_or(DEFAULT_PAGE_LIMIT) {
            n @ 1..=MAX_PAGE_LIMIT => Ok(Self(n)),
            n => Err(Invalid::new(
                "limit",
                format!("limit {n} is out of range 1..={MAX_PAGE_LIMIT}"),
            )),
        }
    }

    pub fn get(self) -> usize {
        self.0 as usize
    }

    /// The document's schema of a page size.
    pub fn schema() -> Schema {
        service_kit::openapi::integer_schema(
            "Items per page (default 20)",
            1,
            i64::from(MAX_PAGE_LIMIT),
        )
    }

    pub fn as_i32(self) -> i32 {
        i32::try_from(self.0).unwrap_or(i32::MAX)
    }
}

/// Which way a graph list goes from its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Whom the user follows.
    Following,
    /// Who follows the user.
    Followers,
}

/// The consistency level of a timeline read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// One replica answers: fastest, may miss a row a quorum already has.
    #[default]
    One,
    /// A majority of replicas answers.
    Quorum,
    /// Every replica answers; fails when one is down.
    All,
}

impl ReadConsistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::Quorum => "quorum",
            Self::All => "all",
        }
    }

    pub fn cql(self) -> Consistency {
        match self {
            Self::One => Consistency::One,
            Self::Quorum => Consistency::Quorum,
            Self::All => Consistency::All,
        }
    }
}

/// Maps instants to time buckets: `floor(unix_millis / width)`.
///
/// A bucket is part of the partition key of a timeline and of an author's
/// posts, so no partition holds more than one bucket's worth of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucketing {
    width_millis: i64,
}

impl Bucketing {
    pub fn new(width_seconds: u64) -> Self {
        let width = i64::try_from(width_seconds.max(1)).unwrap_or(86_400);
        Self {
            width_millis: width.saturating_mul(1000),
        }
    }

    pub fn width_seconds(self) -> i64 {
        self.width_millis / 1000
    }

    pub fn bucket_of(self, at: DateTime<Utc>) -> i64 {
        at.timestamp_millis().div_euclid(self.width_millis)
    }

    pub fn now(self) -> i64 {
        self.bucket_of(Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(UserId::parse("alice_01.x-y").is_ok());
        assert!(UserId::parse(&"a".repeat(64)).is_ok());
        assert!(UserId::parse(&"a".repeat(65)).is_err());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("bad id").is_err());
        assert!(UserId::parse("é").is_err());
    }

    #[test]
    fn content_limits_count_characters() {
        assert!(Content::parse("é".repeat(MAX_CONTENT_CHARS)).is_ok());
        assert!(Content::parse("x".repeat(MAX_CONTENT_CHARS + 1)).is_err());
        assert!(Content::parse("   ".into()).is_err());
    }

    #[test]
    fn post_ids_sort_by_time_and_carry_it() {
        let a = PostId::generate();
        let b = PostId::generate();
        assert!(a < b);
        let age = Utc::now() - a.created_at();
        assert!(age.num_seconds().abs() < 5);
        assert_eq!(PostId::parse(&a.to_string()), Ok(a));
        assert!(PostId::parse(&Uuid::new_v4().to_string()).is_err());
    }

    #[test]
    fn buckets_floor() {
        let b = Bucketing::new(10);
        let at = DateTime::from_timestamp_millis(19_999).expect("valid");
        assert_eq!(b.bucket_of(at), 1);
    }

    #[test]
    fn limits() {
        assert_eq!(PageLimit::parse(None).map(PageLimit::get), Ok(20));
        assert!(PageLimit::parse(Some(0)).is_err());
        assert!(PageLimit::parse(Some(101)).is_err());
    }
}
