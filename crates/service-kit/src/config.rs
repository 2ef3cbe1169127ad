//! Configuration every HTTP service shares.
//!
//! Each binary has one `clap::Parser` struct, read once at start-up, that
//! flattens these groups next to its own settings. Every field has a flag, an
//! environment variable and a documented default.

use std::time::Duration;

use crate::telemetry::LogFormat;

/// Limits and timing of the HTTP server.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes; larger ones get `413`.
    #[arg(long, env = "HTTP_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,

    /// Time a request may take before it is answered with `503`, in seconds.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Time given to in-flight work after SIGINT/SIGTERM before the process exits, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Time each readiness check may take before it counts as failed, in milliseconds.
    #[arg(long, env = "READINESS_TIMEOUT_MS", default_value_t = 2000)]
    pub readiness_timeout_ms: u64,
}

impl HttpConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn readiness_timeout(&self) -> Duration {
        Duration::from_millis(self.readiness_timeout_ms)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_timeout_secs: 10,
            shutdown_grace_secs: 20,
            readiness_timeout_ms: 2000,
        }
    }
}

/// Logging settings; the filter itself comes from `RUST_LOG`.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// Bearer-token verification and the per-subject write rate limit. There is
/// no setting that turns authentication off.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// PEM public key that verifies bearer tokens (`make run`, `make test`,
    /// the lab and compose create a development pair in `.local/auth`).
    #[arg(long, env = "AUTH_VERIFYING_KEY_FILE")]
    pub auth_verifying_key_file: Option<std::path::PathBuf>,

    /// JWKS file instead of one key; a token's `kid` picks the key.
    #[arg(long, env = "AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<std::path::PathBuf>,

    /// The one signature algorithm accepted.
    #[arg(long, env = "AUTH_ALGORITHM", value_enum, default_value_t = SigningAlgorithm::EdDsa)]
    pub auth_algorithm: SigningAlgorithm,

    /// Required `iss` of every token.
    #[arg(long, env = "AUTH_ISSUER", default_value = "cap-services")]
    pub auth_issuer: String,

    /// Required `aud` of every token.
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "cap-services")]
    pub auth_audience: String,

    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long, env = "AUTH_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub auth_leeway_secs: u64,

    /// Writes per second one subject may sustain; more get `429`.
    #[arg(long, env = "RATE_LIMIT_WRITES_PER_SECOND", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_writes_per_second: u32,

    /// Writes one subject may make at once above the sustained rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
}

/// The signature algorithm a deployment pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SigningAlgorithm {
    /// Ed25519 (the development keys).
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl SigningAlgorithm {
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}
