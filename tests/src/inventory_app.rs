//! A running inventory service on its own database.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{StopOnDrop, fresh_database};

/// An inventory service serving on an ephemeral port, with a fresh database.
#[derive(Debug)]
pub struct InventoryApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub client: reqwest::Client,
    /// Stops an in-process service on drop.
    _stop: Option<StopOnDrop>,
    /// A service process, killed on drop.
    _process: Option<tokio::process::Child>,
}

/// The subject the harness's client acts as; its token grants `inventory:admin`.
pub const TEST_SUBJECT: &str = "inventory-tester";

/// A client that sends [`TEST_SUBJECT`]'s bearer token with every request
/// (a test that acts as someone else sets its own `Authorization`).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = crate::auth::bearer(TEST_SUBJECT, &[crate::auth::INVENTORY_ADMIN]);
    headers.insert(
        reqwest::header::AUTHORIZATION,
        bearer.parse().expect("a token is a header value"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .expect("build HTTP client")
}

/// `extra` with the development verifying key, and a write rate limit no
/// test reaches unless it sets its own.
fn service_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = crate::auth::service_args().to_vec();
    if !extra.contains(&"--rate-limit-writes-per-second") {
        args.extend(
            [
                "--rate-limit-writes-per-second",
                "1000000",
                "--rate-limit-burst",
                "1000000",
            ]
            .map(str::to_owned),
        );
    }
    args.extend(extra.iter().map(|&arg| arg.to_owned()));
    args
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
        let mut args: Vec<String> = ["inventory", "--addr", "127.0.0.1:0", "--database-url", url]
            .map(str::to_owned)
            .to_vec();
        args.extend(service_args(extra));
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
            client: client(),
            _stop: Some(StopOnDrop(shutdown)),
            _process: None,
        }
    }

    /// Starts the `inventory` binary on the database at `url`: a process of
    /// its own, so its `/metrics` count only its own work. Killed on drop.
    pub async fn spawn_process_on(url: &str, extra: &[&str]) -> Self {
        let addr = crate::closed_port().await;
        let mut command = tokio::process::Command::new(crate::workspace_binary("inventory"));
        command
            .args(["--addr", &addr.to_string(), "--database-url", url])
            .args(service_args(extra))
            .kill_on_drop(true);
        if std::env::var_os("TEST_LOG").is_none() {
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        let child = command.spawn().expect("start inventory");
        let client = client();
        crate::wait_ready(&client, &format!("http://{addr}"), Duration::from_secs(60)).await;
        let pool = PgPool::connect(url)
            .await
            .expect("connect to the service's database");
        Self {
            addr,
            pool,
            client,
            _stop: None,
            _process: Some(child),
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

    /// `(batches, requests)` the service has applied so far, from its
    /// `inventory_reservation_batch_size` metric: more requests than batches
    /// means reservations were coalesced. Metrics are per process: only a
    /// service started with [`Self::spawn_process_on`] counts its own alone.
    pub async fn batches(&self) -> (f64, f64) {
        let page = crate::metrics_page(&self.client, &self.url("")).await;
        (
            crate::counter(&page, "inventory_reservation_batch_size_count", ""),
            crate::counter(&page, "inventory_reservation_batch_size_sum", ""),
        )
    }

    /// Reads the gauge of reservations waiting for their batch to start.
    pub async fn queued_reservations(&self) -> f64 {
        let page = crate::metrics_page(&self.client, &self.url("")).await;
        crate::counter(&page, "inventory_reservations_queued", "")
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

/// How a test's inventory service applies reservations: a locking strategy,
/// with request coalescing on or off. Every guarantee must hold in each mode.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub strategy: &'static str,
    pub coalescing: bool,
}

impl Mode {
    /// The service's flags for this mode.
    pub fn args(self) -> [&'static str; 4] {
        [
            "--reservation-strategy",
            self.strategy,
            "--reservation-coalescing",
            if self.coalescing { "on" } else { "off" },
        ]
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coalescing = if self.coalescing {
            "coalesced"
        } else {
            "one by one"
        };
        write!(f, "{}, {coalescing}", self.strategy)
    }
}

impl InventoryApp {
    /// Spawns the service in `mode` on a fresh database.
    pub async fn spawn_with_strategy(mode: Mode, extra: &[&str]) -> Self {
        let mut args = mode.args().to_vec();
        args.extend_from_slice(extra);
        Self::spawn(&args).await
    }
}

/// Runs an `async fn scenario(mode: Mode)` once per reservation strategy and
/// coalescing setting, as six tests named `scenario::optimistic::coalesced`,
/// `scenario::optimistic::one_by_one`, and so on for `pessimistic` and
/// `guarded`: every guarantee must hold whichever is configured.
#[macro_export]
macro_rules! per_strategy {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            $crate::per_strategy!(@strategy $scenario, optimistic);
            $crate::per_strategy!(@strategy $scenario, pessimistic);
            $crate::per_strategy!(@strategy $scenario, guarded);
        }
    )+};
    (@strategy $scenario:ident, $strategy:ident) => {
        mod $strategy {
            #[tokio::test]
            async fn coalesced() {
                super::super::$scenario($crate::inventory_app::Mode {
                    strategy: stringify!($strategy),
                    coalescing: true,
                })
                .await
            }
            #[tokio::test]
            async fn one_by_one() {
                super::super::$scenario($crate::inventory_app::Mode {
                    strategy: stringify!($strategy),
                    coalescing: false,
                })
                .await
            }
        }
    };
}

/// An outside session (as an operator's `psql`) on the database at `url`
/// holding `sku`'s row lock in an open transaction until it commits, rolls
/// back or is dropped.
pub async fn lock_product_from_outside(url: &str, sku: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut outsider = sqlx::PgConnection::connect(url)
        .await
        .expect("an outside session");
    sqlx::query("BEGIN")
        .execute(&mut outsider)
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM products WHERE sku = $1 FOR UPDATE")
        .bind(sku)
        .execute(&mut outsider)
        .await
        .expect("lock the row");
    outsider
}
