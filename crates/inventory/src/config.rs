//! Configuration of the inventory service: flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::{HttpConfig, TelemetryConfig};

/// Everything the inventory service reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inventory", version, about = "The CP inventory service")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "INVENTORY_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,

    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/inventory"
    )]
    pub database_url: String,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub database_max_connections: u32,

    /// How long a request waits for a pooled connection before it gets `503`, in milliseconds.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 1000)]
    pub database_acquire_timeout_ms: u64,

    /// How long start-up waits for the database to answer before giving up, in seconds.
    #[arg(long, env = "DATABASE_STARTUP_TIMEOUT_SECS", default_value_t = 30)]
    pub database_startup_timeout_secs: u64,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl Config {
    pub fn database_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database_acquire_timeout_ms)
    }

    pub fn database_startup_timeout(&self) -> Duration {
        Duration::from_secs(self.database_startup_timeout_secs)
    }
}
