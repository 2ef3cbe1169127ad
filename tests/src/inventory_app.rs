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

impl InventoryApp {
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST reaches the service")
    }

    /// `GET path`, checking the status, and its JSON body.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, status: u16) -> T {
        crate::json_with_status(self.client.get(self.url(path)), status).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET reaches the service")
    }

    /// Creates a product and returns its body; panics unless `201`.
    pub async fn create_product(&self, sku: &str, stock: i64) -> serde_json::Value {
        let response = self
            .post_json("/v1/products", &serde_json::json!({ "sku": sku, "name": format!("Product {sku}"), "stock": stock }))
            .await;
        assert_eq!(response.status(), 201, "creating {sku}");
        response.json().await.expect("product body")
    }

    /// `POST /v1/reservations` with `items` as `(sku, quantity)` pairs.
    pub async fn reserve(
        &self,
        items: &[(&str, i64)],
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let items: Vec<_> = items
            .iter()
            .map(|(sku, quantity)| serde_json::json!({ "sku": sku, "quantity": quantity }))
            .collect();
        let mut request = self
            .client
            .post(self.url("/v1/reservations"))
            .json(&serde_json::json!({ "items": items }));
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("POST reaches the service")
    }

    /// Reads a product's counters straight from the database.
    pub async fn counters(&self, sku: &str) -> Counters {
        sqlx::query_as("SELECT received, available, reserved, sold FROM products WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.pool)
            .await
            .expect("product row")
    }

    /// Checks, for every product in this test's database, that the counters
    /// balance and that replaying the stock ledger gives exactly the counters.
    pub async fn assert_ledger_replays(&self) {
        let skus: Vec<String> = sqlx::query_scalar("SELECT sku FROM products ORDER BY sku")
            .fetch_all(&self.pool)
            .await
            .expect("products");
        for sku in skus {
            let stored = self.counters(&sku).await;
            assert_eq!(
                stored.available + stored.reserved + stored.sold,
                stored.received,
                "{sku} balances"
            );
            let movements: Vec<(String, i64)> = sqlx::query_as(
                "SELECT kind, quantity FROM stock_ledger WHERE sku = $1 ORDER BY id",
            )
            .bind(&sku)
            .fetch_all(&self.pool)
            .await
            .expect("ledger");
            let mut replayed = Counters::default();
            for (kind, quantity) in movements {
                match kind.as_str() {
                    "received" => {
                        replayed.received += quantity;
                        replayed.available += quantity;
                    }
                    "reserved" => {
                        replayed.available -= quantity;
                        replayed.reserved += quantity;
                    }
                    "released" | "expired" => {
                        replayed.reserved -= quantity;
                        replayed.available += quantity;
                    }
                    "sold" => {
                        replayed.reserved -= quantity;
                        replayed.sold += quantity;
                    }
                    other => panic!("unexpected ledger kind {other}"),
                }
                assert!(
                    replayed.available >= 0 && replayed.reserved >= 0,
                    "{sku}: ledger never goes negative"
                );
            }
            assert_eq!(replayed, stored, "{sku}: ledger replays to the counters");
        }
    }
}

/// A product's stock counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Counters {
    pub received: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// The reservation strategies the inventory service can run with.
pub const STRATEGIES: [&str; 3] = ["optimistic", "pessimistic", "guarded"];

impl InventoryApp {
    /// Spawns the service with `strategy` on a fresh database.
    pub async fn spawn_with_strategy(strategy: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--reservation-strategy", strategy];
        args.extend_from_slice(extra);
        Self::spawn(&args).await
    }
}

/// Runs an `async fn scenario(strategy: &str)` once per reservation strategy,
/// as three tests named `scenario::optimistic`, `scenario::pessimistic` and
/// `scenario::guarded`: every guarantee must hold whichever is configured.
#[macro_export]
macro_rules! per_strategy {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn optimistic() {
                super::$scenario("optimistic").await
            }
            #[tokio::test]
            async fn pessimistic() {
                super::$scenario("pessimistic").await
            }
            #[tokio::test]
            async fn guarded() {
                super::$scenario("guarded").await
            }
        }
    )+};
}
