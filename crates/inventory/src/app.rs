//! Building and running the inventory service.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use service_kit::auth::Authenticator;
use service_kit::health::{PostgresCheck, Readiness, TaskCheck};
use service_kit::http::{Essentials, Server};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::api::{self, AppState};
use crate::store::PgStore;
use crate::sweeper::{self, SweeperSettings};

/// A built service: bound listener, connected pool, assembled router.
#[derive(Debug)]
pub struct Application {
    server: Server,
    store: PgStore,
    sweeper: SweeperSettings,
    /// Watches the sweeper task; `/readyz` fails, naming it, if it dies.
    sweeper_check: TaskCheck,
}

impl Application {
    /// Validates the configuration, connects to PostgreSQL (waiting up to the
    /// start-up timeout), applies migrations, binds the listener and assembles
    /// the router.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let pool = connect(&config).await?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .context("applying PostgreSQL migrations")?;
        let store = PgStore::new(pool.clone(), config.store_settings());
        let auth = Authenticator::from_config(&config.auth, "inventory")
            .context("setting up bearer-token authentication")?;

        let (api, openapi) = api::router()
            .with_state(AppState {
                store: store.clone(),
                reservations: config.reservation_settings(),
                auth: Arc::new(auth),
            })
            .split_for_parts();
        let sweeper_check = TaskCheck::new("sweeper");
        let readiness = Readiness::new(config.http.readiness_timeout())
            .with(PostgresCheck::new(pool))
            .with(sweeper_check.clone());
        let essentials = Essentials {
            readiness,
            openapi,
            http: config.http.clone(),
        };
        let server = Server::bind(config.addr, api, essentials).await?;
        Ok(Self {
            server,
            store,
            sweeper: config.sweeper_settings(),
            sweeper_check,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Serves, and sweeps expired holds, until `shutdown` is cancelled; then
    /// drains in-flight requests and lets the sweeper finish its batch.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> io::Result<()> {
        let sweeper = self.sweeper_check.spawn(
            sweeper::run(self.store.clone(), self.sweeper, shutdown.clone()),
            shutdown.clone(),
        );
        let served = self.server.serve(shutdown).await;
        if let Err(error) = sweeper.await {
            tracing::error!(%error, "sweeper task failed");
        }
        served
    }
}

/// A pool whose acquire timeout bounds how long a request can wait for a
/// connection, and whose sessions carry the lock, statement and
/// idle-in-transaction timeouts: when PostgreSQL is unreachable or a row is
/// held elsewhere, requests fail fast with `503` and give their connection back.
async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .database_url
        .parse::<PgConnectOptions>()
        .context("parsing DATABASE_URL")?
        .options(config.session_settings());
    let pool = PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(config.database_acquire_timeout())
        .connect_lazy_with(options);
    let deadline = tokio::time::Instant::now() + config.database_startup_timeout();
    loop {
        match sqlx::query("SELECT 1").execute(&pool).await {
            Ok(_) => return Ok(pool),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "PostgreSQL not answering yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => {
                return Err(error).context("PostgreSQL did not answer within the start-up timeout");
            }
        }
    }
}
