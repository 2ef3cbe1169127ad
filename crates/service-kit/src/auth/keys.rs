//! Key files: what a service verifies with, and the development key pair.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::RngCore;

use super::Claims;
use crate::config::AuthConfig;

/// The keys a service verifies tokens with: one PEM key, or a JWKS whose
/// keys are chosen by the token's `kid`.
pub enum VerifyingKeys {
    One(DecodingKey),
    Set(Vec<(Option<String>, DecodingKey)>),
}

impl std::fmt::Debug for VerifyingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::One(_) => f.write_str("VerifyingKeys::One"),
            Self::Set(keys) => write!(f, "VerifyingKeys::Set({} keys)", keys.len()),
        }
    }
}

impl VerifyingKeys {
    /// Reads `AUTH_VERIFYING_KEY_FILE` or `AUTH_JWKS_FILE` (exactly one).
    pub fn load(config: &AuthConfig, algorithm: Algorithm) -> anyhow::Result<Self> {
        match (&config.auth_verifying_key_file, &config.auth_jwks_file) {
            (Some(pem), None) => {
                let pem = std::fs::read(pem)
                    .with_context(|| format!("reading the verifying key {}", pem.display()))?;
                let key = match algorithm {
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .context("the verifying key is not a PEM public key of the configured algorithm")?;
                Ok(Self::One(key))
            }
            (None, Some(jwks)) => {
                let text = std::fs::read_to_string(jwks)
                    .with_context(|| format!("reading the JWKS {}", jwks.display()))?;
                let set: JwkSet = serde_json::from_str(&text).context("parsing the JWKS")?;
                let keys = set
                    .keys
                    .iter()
                    .map(|jwk| Ok((jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)?)))
                    .collect::<Result<Vec<_>, jsonwebtoken::errors::Error>>()
                    .context("a JWKS key cannot verify")?;
                anyhow::ensure!(!keys.is_empty(), "the JWKS holds no key");
                Ok(Self::Set(keys))
            }
            (None, None) => anyhow::bail!(
                "no key to verify bearer tokens with: set AUTH_VERIFYING_KEY_FILE (a PEM public key) \
                 or AUTH_JWKS_FILE; `make run` creates a development key pair in .local/auth"
            ),
            (Some(_), Some(_)) => {
                anyhow::bail!("set AUTH_VERIFYING_KEY_FILE or AUTH_JWKS_FILE, not both")
            }
        }
    }

    /// The key for a token's `kid`: the one key; or the JWKS key with that
    /// id; or, without a `kid`, the JWKS's only key.
    pub(super) fn for_kid(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match self {
            Self::One(key) => Some(key),
            Self::Set(keys) => match kid {
                Some(kid) => keys
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(kid))
                    .map(|(_, key)| key),
                None if keys.len() == 1 => keys.first().map(|(_, key)| key),
                None => None,
            },
        }
    }
}

/// The development key pair (Ed25519, PEM): `signing-key.pem` (private, for
/// `capctl token` and the test harness) and `verifying-key.pem` (public, for
/// the services).
#[derive(Debug, Clone)]
pub struct DevKeys {
    pub signing_key: PathBuf,
    pub verifying_key: PathBuf,
}

impl DevKeys {
    pub const SIGNING_KEY: &'static str = "signing-key.pem";
    pub const VERIFYING_KEY: &'static str = "verifying-key.pem";

    pub fn in_dir(dir: &Path) -> Self {
        Self {
            signing_key: dir.join(Self::SIGNING_KEY),
            verifying_key: dir.join(Self::VERIFYING_KEY),
        }
    }

    /// The pair in `dir`, created if it is not there yet (a pair is never
    /// overwritten: tokens minted with it stay valid).
    pub fn ensure(dir: &Path) -> anyhow::Result<Self> {
        let keys = Self::in_dir(dir);
        if keys.signing_key.exists() && keys.verifying_key.exists() {
            return Ok(keys);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        // PKCS#8 v1 and SubjectPublicKeyInfo for Ed25519 (RFC 8410): a fixed
        // prefix, then the 32-byte key.
        let private_der = [
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ][..],
            &seed,
        ]
        .concat();
        let public_der = [
            &[
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ][..],
            &public,
        ]
        .concat();
        // Write to temporary names, then rename: a concurrent reader never
        // sees half a key, and two writers leave one complete pair.
        let tmp = dir.join(format!(".keys-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(
            tmp.join(Self::SIGNING_KEY),
            pem("PRIVATE KEY", &private_der),
        )?;
        std::fs::write(
            tmp.join(Self::VERIFYING_KEY),
            pem("PUBLIC KEY", &public_der),
        )?;
        restrict(&tmp.join(Self::SIGNING_KEY))?;
        std::fs::rename(tmp.join(Self::VERIFYING_KEY), &keys.verifying_key)?;
        std::fs::rename(tmp.join(Self::SIGNING_KEY), &keys.signing_key)?;
        std::fs::remove_dir_all(&tmp)?;
        Ok(keys)
    }
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Mints tokens with a signing key (EdDSA): `capctl token`, the load tools,
/// the tests and the lab.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// The issuer and audience the services expect by default.
    pub const DEFAULT_ISSUER: &'static str = "cap-services";
    pub const DEFAULT_AUDIENCE: &'static str = "cap-services";

    /// Reads an Ed25519 signing key (PKCS#8 PEM).
    pub fn from_pem_file(path: &Path, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        Ok(Self {
            key: EncodingKey::from_ed_pem(&pem).context("the signing key is not an Ed25519 PEM")?,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A token for `subject` with `scopes`, valid for `ttl` from now.
    pub fn mint(&self, subject: &str, scopes: &[&str], ttl: Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.mint_claims(&Claims {
            sub: subject.to_owned(),
            exp: now + ttl.as_secs(),
            iat: now,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            scope: scopes.join(" "),
        })
    }

    /// A token with exactly these claims (the tests' expired or foreign tokens).
    pub fn mint_claims(&self, claims: &Claims) -> String {
        // Signing with a key that parsed cannot fail for these claims.
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key).unwrap_or_default()
    }
}
