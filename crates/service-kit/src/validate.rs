//! Input validation shared by the services: the error every domain type's
//! `parse` returns, and the checks on free text.
//!
//! A value is validated once, at the edge, into a domain newtype; the error
//! names the field so a client knows what to fix (`field` in the `422` problem).

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
    if raw.is_empty() || raw.len() > 64 || !valid_chars {
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
