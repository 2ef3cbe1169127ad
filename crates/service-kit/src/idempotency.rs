//! The `Idempotency-Key` request header (IETF httpapi draft), shared by every
//! endpoint that makes retries safe: the same key with the same request gets
//! the original answer (marked [`REPLAYED`]), never a second effect.

use axum::http::{HeaderMap, HeaderName};

use crate::validate::Invalid;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// The longest key, in characters (without the quotes of an sf-string).
pub const KEY_MAX_CHARS: usize = 255;

/// What [`key`] accepts, for the OpenAPI documents: an sf-string of 1–255
/// printable ASCII characters in quotes, or a bare token of 1–255 printable
/// ASCII characters that neither starts with a quote nor starts or ends with a
/// space (HTTP trims those).
pub const KEY_PATTERN: &str = r#"^(?:"[ -~]{1,255}"|[!#-~](?:[ -~]{0,253}[!-~])?)$"#;

/// Marks an answer replayed for a repeated key (`Idempotent-Replayed: true`).
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The key, if the request carries one: an sf-string or a bare token of 1–255
/// printable ASCII characters ([`KEY_PATTERN`]). Anything else, an unbalanced
/// quote included, is refused, naming the header.
pub fn key(headers: &HeaderMap) -> Result<Option<&str>, Invalid> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let refused = || {
        Invalid::new(
            "Idempotency-Key",
            "must be 1-255 printable ASCII characters",
        )
    };
    let raw = value.to_str().map_err(|_| refused())?.trim();
    let key = match raw.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').ok_or_else(refused)?,
        None => raw,
    };
    let printable = key.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if key.is_empty() || key.len() > KEY_MAX_CHARS || !printable {
        return Err(refused());
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_key(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(value).expect("valid"));
        headers
    }

    #[test]
    fn accepts_strings_and_tokens_and_refuses_the_rest() {
        assert_eq!(key(&with_key("\"abc-1\"")).ok().flatten(), Some("abc-1"));
        assert_eq!(key(&with_key("abc-1")).ok().flatten(), Some("abc-1"));
        assert!(key(&HeaderMap::new()).expect("absent is fine").is_none());
        assert_eq!(key(&with_key("a\"b")).ok().flatten(), Some("a\"b"));
        assert_eq!(
            key(&with_key("\" spaced \"")).ok().flatten(),
            Some(" spaced ")
        );
        let longest = "k".repeat(KEY_MAX_CHARS);
        assert_eq!(
            key(&with_key(&longest)).ok().flatten(),
            Some(longest.as_str())
        );
        let quoted = format!("\"{longest}\"");
        assert_eq!(
            key(&with_key(&quoted)).ok().flatten(),
            Some(longest.as_str())
        );
        for bad in ["\"\"", "\"", "\"open", "tab\there", &"k".repeat(256)] {
            assert_eq!(key(&with_key(bad)).expect_err(bad).field, "Idempotency-Key");
        }
    }
}
