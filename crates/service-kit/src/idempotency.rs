//! The `Idempotency-Key` request header (IETF httpapi draft), shared by every
//! endpoint that makes retries safe: the same key with the same request gets
//! the original answer (marked [`REPLAYED`]), never a second effect.

use axum::http::{HeaderMap, HeaderName};

use crate::validate::Invalid;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// Marks an answer replayed for a repeated key (`Idempotent-Replayed: true`).
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The key, if the request carries one: an sf-string or a bare token of 1–255
/// printable ASCII characters. Anything else is refused, naming the header.
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
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
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
        for bad in ["\"\"", "tab\there", &"k".repeat(256)] {
            assert_eq!(key(&with_key(bad)).expect_err(bad).field, "Idempotency-Key");
        }
    }
}
