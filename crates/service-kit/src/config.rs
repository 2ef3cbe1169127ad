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
