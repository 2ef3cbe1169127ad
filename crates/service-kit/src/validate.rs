//! Input validation shared by the services: the error every domain type's
//! `parse` returns, and the checks on free text.
//!
//! A value is validated once, at the edge, into a domain newtype; the error
//! names the field so a client knows what to fix (`field` in the `422` problem).
//!
//! Each rule also has its regular expression here (`*_PATTERN`, valid in ECMA 262
//! and Python alike), which the OpenAPI documents carry, so a client (or a fuzzer)
//! generated from a document sends what the checks accept; the tests below hold a
//! pattern and its check to the same language.

use crate::Problem;

/// Why an input value was refused, and which field it came in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The request field (JSON member, path segment or header) at fault.
    pub field: &'static str,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl Invalid {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl From<Invalid> for Problem {
    /// A `422` validation problem with the field named.
    fn from(invalid: Invalid) -> Self {
        Problem::validation(invalid.message).with_extension("field", invalid.field)
    }
}

/// Longest identifier (a sku, a user id), in characters.
pub const IDENTIFIER_MAX_CHARS: usize = 64;

/// What [`identifier`] accepts: 1–[`IDENTIFIER_MAX_CHARS`] of `A-Z a-z 0-9 . _ -`.
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

/// Text that is not blank: at least one character that is not whitespace (what
/// `str::trim` removes: Unicode `White_Space`), anything else around it.
pub const NOT_BLANK_PATTERN: &str =
    r"^[\s\S]*[^\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][\s\S]*$";

/// Text that is not blank and has no control character (Unicode `Cc`, what
/// [`no_control_characters`] refuses).
pub const NOT_BLANK_NO_CONTROL_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$";

/// Refuses text with a NUL byte or another control character (tabs and line
/// breaks included): PostgreSQL text cannot hold NUL, and no name, key or id
/// of these services needs the others.
pub fn no_control_characters(field: &'static str, raw: &str) -> Result<(), Invalid> {
    match raw.chars().position(char::is_control) {
        None => Ok(()),
        Some(at) => Err(Invalid::new(
            field,
            format!("{field} must not contain control characters (one at character {at})"),
        )),
    }
}

/// Checks an identifier (a sku, a user id): 1–64 characters of
/// `A-Z a-z 0-9 . _ -`, the alphabet every service uses for the ids it is
/// given, so they are safe in paths, subjects and logs as they are.
pub fn identifier(field: &'static str, raw: &str) -> Result<(), Invalid> {
    let valid_chars = raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if raw.is_empty() || raw.len() > IDENTIFIER_MAX_CHARS || !valid_chars {
        return Err(Invalid::new(
            field,
            format!(
                "{field} must be 1-64 characters of A-Z a-z 0-9 . _ - (got {} characters)",
                raw.chars().count()
            ),
        ));
    }
    Ok(())
}

/// Deserializes a JSON integer, and a number with no fraction (`3.0`) as the
/// integer it is: JSON Schema's `integer` is a number with a zero fractional
/// part, so a client generated from a document may send either. For a field
/// with `#[serde(deserialize_with = "service_kit::validate::whole_number")]`.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(WholeNumberVisitor)
}

/// [`whole_number`] for an optional member: absent or `null` is `None`.
pub fn optional_whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    deserializer.deserialize_option(OptionalWholeNumberVisitor)
}

/// [`whole_number`] for an optional member that, when present, must hold one
/// (`null` is refused).
pub fn present_whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    whole_number(deserializer).map(Some)
}

struct WholeNumberVisitor;

impl serde::de::Visitor<'_> for WholeNumberVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<i64, E> {
        // -2^63 ..= 2^63 exclusive: the f64s that are whole i64s.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if value.fract() == 0.0 && (-LIMIT..LIMIT).contains(&value) {
            Ok(value as i64)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(value), &self))
        }
    }
}

struct OptionalWholeNumberVisitor;

impl<'de> serde::de::Visitor<'de> for OptionalWholeNumberVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        whole_number(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_use_one_alphabet() {
        assert!(identifier("sku", "ABC-1.x_2").is_ok());
        assert!(identifier("sku", &"a".repeat(64)).is_ok());
        for bad in ["", "a b", "é", "a\u{0}", &"a".repeat(65)] {
            assert_eq!(identifier("user_id", bad).expect_err(bad).field, "user_id");
        }
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[serde(deserialize_with = "whole_number")]
            n: i64,
            #[serde(default, deserialize_with = "optional_whole_number")]
            o: Option<i64>,
        }
        let read = |json: &str| serde_json::from_str::<Body>(json).map(|b| (b.n, b.o));
        assert_eq!(read(r#"{"n": 3}"#).ok(), Some((3, None)));
        assert_eq!(read(r#"{"n": 3.0, "o": -2.0}"#).ok(), Some((3, Some(-2))));
        assert_eq!(read(r#"{"n": 1, "o": null}"#).ok(), Some((1, None)));
        for bad in [
            r#"{"n": 3.5}"#,
            r#"{"n": "3"}"#,
            r#"{"n": 1e19}"#,
            r#"{"n": 18446744073709551615}"#,
            r#"{"n": null}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_identifier_pattern_names_the_same_length() {
        assert!(IDENTIFIER_PATTERN.ends_with(&format!("{{1,{IDENTIFIER_MAX_CHARS}}}$")));
        assert!(identifier("sku", &"a".repeat(IDENTIFIER_MAX_CHARS)).is_ok());
        assert!(identifier("sku", &"a".repeat(IDENTIFIER_MAX_CHARS + 1)).is_err());
    }

    /// The characters the text patterns spell out as whitespace and as control
    /// characters are exactly those `char::is_whitespace` and `char::is_control`
    /// (which `str::trim` and [`no_control_characters`] use) name.
    #[test]
    fn the_text_patterns_name_the_characters_the_checks_use() {
        let whitespace = r"\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
        let control = r"\x00-\x1F\x7F-\x9F";
        assert!(NOT_BLANK_PATTERN.contains(&format!("[^{whitespace}]")));
        assert!(NOT_BLANK_NO_CONTROL_PATTERN.contains(&format!("[^{control}]*")));
        let in_ranges = |c: char, ranges: &[(u32, u32)]| {
            ranges
                .iter()
                .any(|&(low, high)| (low..=high).contains(&u32::from(c)))
        };
        let whitespace_ranges = [
            (0x09, 0x0D),
            (0x20, 0x20),
            (0x85, 0x85),
            (0xA0, 0xA0),
            (0x1680, 0x1680),
            (0x2000, 0x200A),
            (0x2028, 0x2029),
            (0x202F, 0x202F),
            (0x205F, 0x205F),
            (0x3000, 0x3000),
        ];
        let control_ranges = [(0x00, 0x1F), (0x7F, 0x9F)];
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(c.is_whitespace(), in_ranges(c, &whitespace_ranges), "{c:?}");
            assert_eq!(c.is_control(), in_ranges(c, &control_ranges), "{c:?}");
        }
        // The middle class of the name pattern: neither control nor whitespace.
        assert!(
            NOT_BLANK_NO_CONTROL_PATTERN.contains(
                r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
            )
        );
    }

    #[test]
    fn control_characters_are_refused_with_the_field_named() {
        assert!(no_control_characters("name", "Plain name, ünïcode ok").is_ok());
        for bad in [
            "a\u{0}b",
            "tab\there",
            "line\nbreak",
            "bell\u{7}",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            let error = no_control_characters("name", bad).expect_err(bad);
            assert_eq!(error.field, "name");
        }
        let problem = Problem::from(Invalid::new("sku", "bad"));
        assert_eq!(problem.status, 422);
        assert_eq!(problem.extensions["field"], "sku");
    }
}
