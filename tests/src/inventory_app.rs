//! A running inventory service on its own database.

use std::net::SocketAddr;

use clap::Parser;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{StopOnDrop, fresh_database, http_client};

/// An inventory service serving on an ephemeral port, with a fresh database.
#[derive(Debug)]
pub struct InventoryApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub client: reqwest::Client,
    _stop: StopOnDrop,
}

impl InventoryApp {
    /// Spawns the service on a fresh database; `extra` are extra flags.
    pub async fn spawn(extra: &[&str]) -> Self {
        let url = fresh_database("inventory_test").await;
        Self::spawn_on(&url, extra).await
    }

    /// Spawns the service on the database at `url`.
    pub async fn spawn_on(url: &str, extra: &[&str]) -> Self {
        service_kit::telemetry::init_for_tests();
        let mut args = vec!["inventory", "--addr", "127.0.0.1:0", "--database-url", url];
        args.extend_from_slice(extra);
        let config = inventory::Config::parse_from(args);
        let app = inventory::Application::build(config)
            .await
            .expect("build the inventory service");
        let addr = app.local_addr().expect("bound address");
        let pool = app.pool().clone();
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            pool,
            client: http_client(),
            _stop: StopOnDrop(shutdown),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}
