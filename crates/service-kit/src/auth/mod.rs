//! Bearer-token authentication, scopes and a per-subject write rate limit.
//!
//! Every request that acts for someone carries `Authorization: Bearer <JWT>`.
//! A handler that needs the caller takes a [`Caller`] argument; the extractor
//! verifies the token with the service's [`Authenticator`] (signature with the
//! one configured algorithm, `exp` required, issuer and audience checked, a
//! small clock leeway) and, on a write, spends one unit of the subject's rate
//! limit. What it refuses is a problem document:
//!
//! - no token, a malformed one, a wrong signature, `alg: none`, another
//!   algorithm, an expired token, another issuer or audience → `401` with
//!   `WWW-Authenticate: Bearer …` ([`AuthError::Unauthenticated`]);
//! - a write past the subject's rate → `429` with `Retry-After`;
//! - [`Caller::require_scope`] without the scope → `403`.
//!
//! Routes that take no [`Caller`] stay open (`/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`, `/docs`, and each service's public reads).
//! There is no switch that turns this off: a service starts only with a key.
//!
//! [`keys`] holds the key files: the verifying key (PEM) or JWKS a service
//! reads, and the development key pair `make run`, `make test`, the lab and
//! compose create for themselves, with [`TokenIssuer`] minting tokens from it.

mod keys;
mod limit;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};

pub use keys::{DevKeys, TokenIssuer, VerifyingKeys};
pub use limit::WriteLimit;

use crate::config::AuthConfig;
pub use crate::config::SigningAlgorithm;
use crate::problem::Problem;

/// The scheme name under which the OpenAPI documents declare the bearer token.
pub const BEARER_SCHEME: &str = "bearer";

/// The claims of a token this project mints (`capctl token`, the tests, the
/// lab). `sub`, `exp`, `iss` and `aud` are what a service requires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: the user the token acts for.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    pub iat: u64,
    pub iss: String,
    pub aud: String,
    /// Space-separated scopes (OAuth 2.0 style), e.g. `inventory:admin`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// What a verified token tells the service. `exp`, `nbf`, `iss` and `aud`
/// are checked by the validation on the token's own claims, so a provider's
/// token with an audience list, no `iat` or extra claims verifies as well.
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    sub: String,
    #[serde(default)]
    scope: String,
}

/// Verifies bearer tokens and limits each subject's writes.
#[derive(Debug)]
pub struct Authenticator {
    keys: VerifyingKeys,
    validation: Validation,
    /// The realm named in `WWW-Authenticate`.
    realm: String,
    writes: WriteLimit,
}

impl Authenticator {
    /// Reads the configured key (a PEM verifying key or a JWKS file).
    pub fn from_config(config: &AuthConfig, realm: &str) -> anyhow::Result<Self> {
        let algorithm = config.auth_algorithm.algorithm();
        let keys = VerifyingKeys::load(config, algorithm)?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.auth_leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.auth_issuer]);
        validation.set_audience(&[&config.auth_audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Ok(Self {
            keys,
            validation,
            realm: realm.to_owned(),
            writes: WriteLimit::new(config.rate_limit_writes_per_second, config.rate_limit_burst),
        })
    }

    /// The caller a request's `Authorization` header names, if its token holds.
    pub fn verify(&self, authorization: Option<&HeaderValue>) -> Result<Caller, AuthError> {
        let unauthenticated = |reason: &str| AuthError::Unauthenticated {
            realm: self.realm.clone(),
            reason: reason.to_owned(),
        };
        let Some(value) = authorization else {
            return Err(AuthError::Unauthenticated {
                realm: self.realm.clone(),
                reason: String::new(),
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header is not `Bearer <token>`"))?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthenticated("the token is not a well-formed JWT"))?;
        if header.alg != self.validation.algorithms[0] {
            return Err(unauthenticated(&format!(
                "the token is signed with {:?}; this service accepts {:?} only",
                header.alg, self.validation.algorithms[0]
            )));
        }
        let key = self
            .keys
            .for_kid(header.kid.as_deref())
            .ok_or_else(|| unauthenticated("the token names a key this service does not know"))?;
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, key, &self.validation).map_err(
            |error| {
                unauthenticated(match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature does not verify",
                    ErrorKind::MissingRequiredClaim(_) => {
                        "the token lacks a required claim (sub, exp, iss, aud)"
                    }
                    _ => "the token is not valid",
                })
            },
        )?;
        if data.claims.sub.is_empty() {
            return Err(unauthenticated("the token's subject is empty"));
        }
        Ok(Caller {
            subject: data.claims.sub,
            scopes: data
                .claims
                .scope
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject: the user the request acts for.
    pub subject: String,
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted == scope)
    }

    /// `403` unless the token grants `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "this needs the `{scope}` scope, which the token does not grant"
            )))
        }
    }

    /// `403` unless the caller is `user`: nobody acts for someone else.
    pub fn require_subject(&self, user: &str, action: &str) -> Result<(), AuthError> {
        if self.subject == user {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "the token's subject '{}' cannot {action} for '{user}'",
                self.subject
            )))
        }
    }
}

/// Verifies the bearer token and, on a write (any method but `GET`, `HEAD`
/// and `OPTIONS`), spends one unit of the subject's rate limit.
impl<S> FromRequestParts<S> for Caller
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let caller = auth.verify(parts.headers.get(header::AUTHORIZATION))?;
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            auth.writes.check(&caller.subject)?;
        }
        Ok(caller)
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// `401`: no valid bearer token. An empty `reason` means none was sent.
    #[error("unauthenticated: {reason}")]
    Unauthenticated { realm: String, reason: String },
    /// `403`: a valid token that does not allow this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// `429`: the subject's writes are over its rate; retry after this many seconds.
    #[error("rate limited for {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated { realm, reason } => {
                // RFC 6750 §3: no error code when no token was sent.
                let challenge = if reason.is_empty() {
                    format!("Bearer realm=\"{realm}\"")
                } else {
                    format!(
                        "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                        reason.replace('"', "'")
                    )
                };
                let detail = if reason.is_empty() {
                    "this needs `Authorization: Bearer <token>`".to_owned()
                } else {
                    reason
                };
                let problem = Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "Unauthenticated",
                )
                .with_detail(detail);
                match HeaderValue::from_str(&challenge) {
                    Ok(value) => problem.with_header(header::WWW_AUTHENTICATE, value),
                    Err(_) => problem
                        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
                }
            }
            AuthError::Forbidden(detail) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
            }
            AuthError::RateLimited { retry_after_secs } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too Many Requests",
            )
            .with_detail("this subject's writes are over its rate limit; retry after Retry-After")
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs)),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

#[cfg(test)]
mod tests;
