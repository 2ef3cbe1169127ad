//! Configuration of the inventory service: flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::{AuthConfig, HttpConfig, TelemetryConfig};

use crate::store::{BatchSettings, LockingStrategy, RetryPolicy, StoreSettings};
use crate::sweeper::SweeperSettings;

/// A feature that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

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
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub database_max_connections: u32,

    /// How long a request waits for a pooled connection before it gets `503`, in milliseconds.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_acquire_timeout_ms: u64,

    /// How long a statement waits for a row lock before it gives up and the
    /// request gets `503` (PostgreSQL `lock_timeout`), in milliseconds.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_lock_timeout_ms: u64,

    /// Longest a single statement may run before the database cancels it and
    /// the request gets `503` (PostgreSQL `statement_timeout`), in
    /// milliseconds. Must stay below the HTTP request timeout; also the time
    /// budget of a write's retries.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_statement_timeout_ms: u64,

    /// How long a session may sit idle inside a transaction before the database
    /// ends it (PostgreSQL `idle_in_transaction_session_timeout`), in milliseconds.
    #[arg(long, env = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 10000, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_idle_in_transaction_timeout_ms: u64,

    /// How long start-up waits for the database to answer before giving up, in seconds.
    #[arg(long, env = "DATABASE_STARTUP_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_startup_timeout_secs: u64,

    /// How long a hold lasts when the request gives no `ttl_seconds`.
    #[arg(long, env = "RESERVATION_DEFAULT_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub reservation_default_ttl_secs: u64,

    /// The longest hold a request may ask for, in seconds.
    #[arg(long, env = "RESERVATION_MAX_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECS))]
    pub reservation_max_ttl_secs: u64,

    /// How concurrent reservations of one product are kept apart:
    /// `optimistic` (version compare-and-set + retry), `pessimistic`
    /// (`SELECT … FOR UPDATE`) or `guarded` (`UPDATE … WHERE available >= q`).
    #[arg(long, env = "RESERVATION_STRATEGY", value_enum, default_value_t = LockingStrategy::Optimistic)]
    pub reservation_strategy: LockingStrategy,

    /// Whether concurrent reservations whose first product is the same are
    /// applied together, in batches of one transaction each (one version
    /// compare-and-set, lock or guarded `UPDATE` per product per batch), rather
    /// than racing each other: `on` or `off`.
    #[arg(long, env = "RESERVATION_COALESCING", value_enum, default_value_t = Switch::On)]
    pub reservation_coalescing: Switch,

    /// The most reservations one batch applies (with coalescing on).
    #[arg(long, env = "RESERVATION_BATCH_MAX_SIZE", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub reservation_batch_max_size: u64,

    /// How long a batch that follows another on its product waits for more
    /// reservations to join before it starts, in microseconds (it starts at
    /// once when full; a reservation that finds its product idle never waits).
    #[arg(long, env = "RESERVATION_BATCH_WAIT_US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=50_000))]
    pub reservation_batch_wait_us: u64,

    /// Runs of a write transaction (reservation, confirm, cancel, product
    /// change, sweep) that a version conflict, deadlock or serialization
    /// failure may take before the request gets `503`.
    #[arg(long, env = "TRANSACTION_MAX_ATTEMPTS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub transaction_max_attempts: u32,

    /// First backoff before a write transaction runs again, in milliseconds;
    /// doubles per attempt, full jitter.
    #[arg(long, env = "TRANSACTION_BACKOFF_BASE_MS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub transaction_backoff_base_ms: u64,

    /// Ceiling of one backoff, in milliseconds.
    #[arg(long, env = "TRANSACTION_BACKOFF_MAX_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub transaction_backoff_max_ms: u64,

    /// How often the sweeper looks for expired holds, in milliseconds.
    #[arg(long, env = "SWEEPER_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub sweeper_interval_ms: u64,

    /// Expired holds released per sweeper transaction.
    #[arg(long, env = "SWEEPER_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub sweeper_batch_size: i64,

    /// How long an Idempotency-Key is remembered, in hours.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=24 * 365))]
    pub idempotency_retention_hours: u64,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Limits of `POST /v1/reservations`.
#[derive(Debug, Clone, Copy)]
pub struct ReservationSettings {
    /// How long a hold lasts when the request gives no `ttl_seconds`.
    pub default_ttl: Duration,
    /// The longest hold a request may ask for.
    pub max_ttl: Duration,
}

/// The longest hold any deployment may configure (the domain's limit, which
/// the OpenAPI document also states).
const MAX_TTL_SECS: u64 = crate::domain::MAX_TTL_SECS.unsigned_abs();

impl Config {
    /// Checks what a single flag cannot: how the settings relate. Called by
    /// [`crate::Application::build`], so a service never starts half-configured.
    pub fn validate(&self) -> Result<(), String> {
        let request_timeout_ms = self.http.request_timeout_secs.saturating_mul(1000);
        let rules = [
            (
                self.reservation_default_ttl_secs <= self.reservation_max_ttl_secs,
                format!(
                    "RESERVATION_DEFAULT_TTL_SECS ({}) must not exceed RESERVATION_MAX_TTL_SECS ({})",
                    self.reservation_default_ttl_secs, self.reservation_max_ttl_secs
                ),
            ),
            (
                self.transaction_backoff_base_ms <= self.transaction_backoff_max_ms,
                format!(
                    "TRANSACTION_BACKOFF_BASE_MS ({}) must not exceed TRANSACTION_BACKOFF_MAX_MS ({})",
                    self.transaction_backoff_base_ms, self.transaction_backoff_max_ms
                ),
            ),
            (
                self.database_lock_timeout_ms <= self.database_statement_timeout_ms,
                format!(
                    "DATABASE_LOCK_TIMEOUT_MS ({}) must not exceed DATABASE_STATEMENT_TIMEOUT_MS ({})",
                    self.database_lock_timeout_ms, self.database_statement_timeout_ms
                ),
            ),
            (
                self.database_statement_timeout_ms < request_timeout_ms,
                format!(
                    "DATABASE_STATEMENT_TIMEOUT_MS ({}) must stay below HTTP_REQUEST_TIMEOUT_SECS ({} s), \
                     so the database ends every wait before the request is abandoned",
                    self.database_statement_timeout_ms, self.http.request_timeout_secs
                ),
            ),
            (
                self.http.request_timeout_secs >= 1 && self.http.body_limit_bytes >= 1,
                "HTTP_REQUEST_TIMEOUT_SECS and HTTP_BODY_LIMIT_BYTES must be positive".to_owned(),
            ),
        ];
        let broken: Vec<String> = rules
            .into_iter()
            .filter(|(holds, _)| !holds)
            .map(|(_, rule)| rule)
            .collect();
        if broken.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid configuration: {}", broken.join("; ")))
        }
    }

    pub fn database_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database_acquire_timeout_ms)
    }

    /// The per-connection settings the pool opens every session with.
    pub fn session_settings(&self) -> [(&'static str, String); 3] {
        [
            (
                "lock_timeout",
                format!("{}ms", self.database_lock_timeout_ms),
            ),
            (
                "statement_timeout",
                format!("{}ms", self.database_statement_timeout_ms),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}ms", self.database_idle_in_transaction_timeout_ms),
            ),
        ]
    }

    pub fn reservation_settings(&self) -> ReservationSettings {
        ReservationSettings {
            default_ttl: Duration::from_secs(self.reservation_default_ttl_secs),
            max_ttl: Duration::from_secs(self.reservation_max_ttl_secs),
        }
    }

    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            strategy: self.reservation_strategy,
            coalescing: (self.reservation_coalescing == Switch::On).then(|| BatchSettings {
                max_size: usize::try_from(self.reservation_batch_max_size).unwrap_or(usize::MAX),
                max_wait: Duration::from_micros(self.reservation_batch_wait_us),
                max_time: self.http.request_timeout(),
            }),
            retry: RetryPolicy {
                max_attempts: self.transaction_max_attempts,
                base_backoff: Duration::from_millis(self.transaction_backoff_base_ms),
                max_backoff: Duration::from_millis(self.transaction_backoff_max_ms),
                budget: Duration::from_millis(self.database_statement_timeout_ms),
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
