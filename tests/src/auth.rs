//! Bearer tokens for the tests: the development key pair in `.local/auth`
//! (the one `make run` and `make test` create; made here if missing) and
//! tokens minted with it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use service_kit::auth::{DevKeys, TokenIssuer};

/// The scope that lets a caller create and change products.
pub const INVENTORY_ADMIN: &str = "inventory:admin";

/// The development key pair every test service verifies with.
pub fn dev_keys() -> &'static DevKeys {
    static KEYS: OnceLock<DevKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/auth");
        DevKeys::ensure(&dir).expect("create the development key pair")
    })
}

/// The flags that make a service verify tokens minted here.
pub fn service_args() -> [String; 2] {
    [
        "--auth-verifying-key-file".to_owned(),
        dev_keys().verifying_key.to_string_lossy().into_owned(),
    ]
}

/// Mints tokens the test services accept.
pub fn issuer() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        TokenIssuer::from_pem_file(
            &dev_keys().signing_key,
            TokenIssuer::DEFAULT_ISSUER,
            TokenIssuer::DEFAULT_AUDIENCE,
        )
        .expect("read the development signing key")
    })
}

/// A token for `subject` with `scopes`, valid for an hour.
pub fn token(subject: &str, scopes: &[&str]) -> String {
    issuer().mint(subject, scopes, Duration::from_secs(3600))
}

/// `Bearer <token>` for `subject` with `scopes`.
pub fn bearer(subject: &str, scopes: &[&str]) -> String {
    format!("Bearer {}", token(subject, scopes))
}
