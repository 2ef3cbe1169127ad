//! Test harness for the end-to-end tests: each test gets its own service
//! instance on a port chosen by the OS, and its own database, against the real
//! stores that `make test` starts.
//!
//! Store addresses come from `TEST_DATABASE_URL` (the admin database the tests
//! create their own databases on), `CASSANDRA_NODES` and `NATS_URL`, with the
//! local stack's defaults.
//!
//! # Layout
//!
//! - this module: store addresses, fresh databases, binaries, polling helpers;
//! - [`inventory_app`]: a running inventory service and its assertions;
//! - [`timeline_app`]: a timeline deployment (API, workers, its own stream);
//! - [`pg_instance`]: a private PostgreSQL server a test may stop and restart;
//! - [`cassandra_instance`], [`nats_instance`]: a private Cassandra node and
//!   nats-server a test may stop and start again.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

pub mod cassandra_instance;
pub mod inventory_app;
pub mod nats_instance;
pub mod pg_instance;

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Cassandra contact points.
pub fn cassandra_nodes() -> Vec<String> {
    std::env::var("CASSANDRA_NODES")
        .unwrap_or_else(|_| "127.0.0.1:9042".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The NATS server URL.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A loopback address nothing listens on: bound by the OS, then released.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    addr
}

/// A free loopback port for a server a test stops and starts again: outside
/// the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), so no
/// outgoing connection can take it while the server is down.
pub async fn server_port() -> u16 {
    let (low, _) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut bounds = range.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32768, 60999));
    let floor = 10_000.min(low.saturating_sub(1_000));
    for _ in 0..1_000 {
        let port =
            floor + u16::try_from(rand::random::<u32>() % u32::from(low - floor)).unwrap_or(0);
        if tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range {low}");
}

/// Creates a fresh, uniquely named database and returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    fresh_database_with(prefix, "").await
}

/// Creates a fresh, uniquely named database with extra `CREATE DATABASE`
/// options (a locale, say) and returns its URL.
pub async fn fresh_database_with(prefix: &str, options: &str) -> String {
    let admin = postgres_admin_url();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect to the PostgreSQL admin database");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" {options}"
    )))
    .execute(&mut conn)
    .await
    .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

/// Stops a spawned service when the test ends, however it ends.
#[derive(Debug)]
pub struct StopOnDrop(pub CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// An HTTP client for tests: no proxy, short timeouts.
pub fn http_client() -> reqwest::Client {
    // One TLS provider for the whole workspace (ring); installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("build HTTP client")
}
pub mod auth;
pub mod timeline_app;

/// A binary of this workspace (`capctl`, `timeline-worker`, …), built next to
/// the test executable. `make test` builds every binary first.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the workspace's binaries first (`cargo build --workspace --bins`, which `make test` does)",
        binary.display()
    );
    binary
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `GET {base}/readyz` answers 200.
pub async fn wait_ready(client: &reqwest::Client, base: &str, timeout: Duration) {
    eventually(&format!("{base}/readyz"), timeout, || async {
        let response = client.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

/// The Prometheus text page of the service at `base` (`{base}/metrics`).
pub async fn metrics_page(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A counter's value in a Prometheus text page, summed over the label sets
/// whose line contains `label` (`""` for every one); 0 when absent.
pub fn counter(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
                && line.contains(label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends `request`, checks the answer's status, and returns its JSON body.
pub async fn json_with_status<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    status: u16,
) -> T {
    let response = request.send().await.expect("the service answers");
    let actual = response.status().as_u16();
    let text = response.text().await.expect("a body");
    assert_eq!(actual, status, "answered {actual}: {text}");
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("not the JSON expected ({error}): {text}"))
}

/// Checks that `response` is an RFC 9457 problem with `status` and returns its body.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    assert!(
        body["type"].is_string() && body["title"].is_string(),
        "problem members: {body}"
    );
    body
}
