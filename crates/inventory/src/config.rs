//! Configuration of the inventory service: flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::{HttpConfig, TelemetryConfig};

use crate::api::ReservationSettings;
use crate::store::{ContentionPolicy, LockingStrategy};
use crate::sweeper::SweeperSettings;

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

    /// How long a hold lasts when the request gives no `ttl_seconds`.
    #[arg(long, env = "RESERVATION_DEFAULT_TTL_SECS", default_value_t = 300)]
    pub reservation_default_ttl_secs: u64,

    /// The longest hold a request may ask for, in seconds.
    #[arg(long, env = "RESERVATION_MAX_TTL_SECS", default_value_t = 3600)]
    pub reservation_max_ttl_secs: u64,

    /// How concurrent reservations of one product are kept apart:
    /// `optimistic` (version compare-and-set + retry), `pessimistic`
    /// (`SELECT … FOR UPDATE`) or `guarded` (`UPDATE … WHERE available >= q`).
    #[arg(long, env = "RESERVATION_STRATEGY", value_enum, default_value_t = LockingStrategy::Optimistic)]
    pub reservation_strategy: LockingStrategy,

    /// Attempts of a reservation transaction under contention before `503`.
    #[arg(long, env = "RESERVATION_MAX_ATTEMPTS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub reservation_max_attempts: u32,

    /// First backoff after a version conflict, in milliseconds; doubles per attempt, full jitter.
    #[arg(long, env = "RESERVATION_BACKOFF_BASE_MS", default_value_t = 1)]
    pub reservation_backoff_base_ms: u64,

    /// Ceiling of one backoff, in milliseconds.
    #[arg(long, env = "RESERVATION_BACKOFF_MAX_MS", default_value_t = 50)]
    pub reservation_backoff_max_ms: u64,

    /// How often the sweeper looks for expired holds, in milliseconds.
    #[arg(long, env = "SWEEPER_INTERVAL_MS", default_value_t = 500)]
    pub sweeper_interval_ms: u64,

    /// Expired holds released per sweeper transaction.
    #[arg(long, env = "SWEEPER_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..))]
    pub sweeper_batch_size: i64,

    /// How long an Idempotency-Key is remembered, in hours.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_HOURS", default_value_t = 24)]
    pub idempotency_retention_hours: u64,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl Config {
    pub fn database_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database_acquire_timeout_ms)
    }

    pub fn reservation_settings(&self) -> ReservationSettings {
        ReservationSettings {
            default_ttl: Duration::from_secs(self.reservation_default_ttl_secs),
            max_ttl: Duration::from_secs(self.reservation_max_ttl_secs),
            contention: ContentionPolicy {
                strategy: self.reservation_strategy,
                max_attempts: self.reservation_max_attempts,
                base_backoff: Duration::from_millis(self.reservation_backoff_base_ms),
                max_backoff: Duration::from_millis(self.reservation_backoff_max_ms),
            },
        }
    }

    pub fn sweeper_settings(&self) -> SweeperSettings {
        SweeperSettings {
            interval: Duration::from_millis(self.sweeper_interval_ms),
            batch_size: self.sweeper_batch_size,
            idempotency_retention: Duration::from_secs(self.idempotency_retention_hours * 3600),
        }
    }

    pub fn database_startup_timeout(&self) -> Duration {
        Duration::from_secs(self.database_startup_timeout_secs)
    }
}
