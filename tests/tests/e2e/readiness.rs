//! The harness itself: the kit's readiness checks against the real stores,
//! and the shared endpoints every service has.

use std::time::Duration;

use axum::Router;
use e2e::inventory_app::InventoryApp;
use e2e::timeline_app::TimelineApp;
use e2e::{cassandra_nodes, closed_port, http_client, nats_url};
use service_kit::health::{
    CassandraCheck, CheckStatus, NatsJetStreamCheck, PostgresCheck, Readiness, ReadinessCheck,
};
use service_kit::http::{Essentials, service_router};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn status_of(check: impl ReadinessCheck) -> CheckStatus {
    Readiness::new(TIMEOUT).with(check).report().await.checks[0].status
}

fn lazy_pool(url: &str) -> sqlx::PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(url)
        .expect("valid URL")
}

async fn nats_client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("client")
}

#[tokio::test]
async fn postgres_check_follows_the_server() {
    assert_eq!(
        status_of(PostgresCheck::new(lazy_pool(&e2e::postgres_admin_url()))).await,
        CheckStatus::Up
    );
    let closed = closed_port().await;
    let url = format!("postgres://postgres@{closed}/postgres");
    assert_eq!(
        status_of(PostgresCheck::new(lazy_pool(&url))).await,
        CheckStatus::Down
    );
}

#[tokio::test]
async fn cassandra_check_follows_the_server() {
    assert_eq!(
        status_of(CassandraCheck::connect_lazily(cassandra_nodes())).await,
        CheckStatus::Up
    );
    let closed = closed_port().await;
    assert_eq!(
        status_of(CassandraCheck::connect_lazily(vec![closed.to_string()])).await,
        CheckStatus::Down
    );
}

#[tokio::test]
async fn nats_jetstream_check_follows_the_server() {
    let client = nats_client(&nats_url()).await;
    // The client connects in the background; readiness must turn up shortly.
    let mut status = CheckStatus::Down;
    for _ in 0..50 {
        status = status_of(NatsJetStreamCheck::new(client.clone())).await;
        if status == CheckStatus::Up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, CheckStatus::Up);

    let closed = closed_port().await;
    let unreachable = nats_client(&format!("nats://{closed}")).await;
    assert_eq!(
        status_of(NatsJetStreamCheck::new(unreachable)).await,
        CheckStatus::Down
    );
}

/// Serves the kit's router with `readiness` and returns its base URL.
async fn serve(readiness: Readiness, shutdown: &CancellationToken) -> String {
    let router = service_router(
        Router::new(),
        Essentials {
            readiness,
            openapi: utoipa::openapi::OpenApiBuilder::new().build(),
            http: service_kit::config::HttpConfig::default(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(service_kit::http::serve(
        listener,
        router,
        shutdown.clone(),
        TIMEOUT,
    ));
    format!("http://{addr}")
}

#[tokio::test]
async fn readyz_answers_503_problem_when_any_store_is_unreachable() {
    let shutdown = CancellationToken::new();
    let _stop = e2e::StopOnDrop(shutdown.clone());
    let closed = closed_port().await;
    let readiness = Readiness::new(TIMEOUT)
        .with(PostgresCheck::new(lazy_pool(&e2e::postgres_admin_url())))
        .with(CassandraCheck::connect_lazily(vec![closed.to_string()]));
    let base = serve(readiness, &shutdown).await;

    let response = http_client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], 503);
    let checks = body["checks"].as_array().expect("checks listed");
    assert_eq!(checks[0]["name"], "postgres");
    assert_eq!(checks[0]["status"], "up");
    assert_eq!(checks[1]["name"], "cassandra");
    assert_eq!(checks[1]["status"], "down");

    // Liveness does not depend on the stores.
    let healthz = http_client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), 200);
}

#[tokio::test]
async fn inventory_service_has_the_shared_endpoints() {
    let app = InventoryApp::spawn(&[]).await;

    let body: serde_json::Value = app.get_json("/readyz", 200).await;
    assert_eq!(body["checks"][0]["name"], "postgres");
    assert_eq!(body["checks"][0]["status"], "up");

    let openapi: serde_json::Value = app.get_json("/openapi.json", 200).await;
    assert!(
        openapi["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );

    assert_eq!(app.get("/docs/").await.status(), 200);

    // A request id sent by the client is echoed; one is generated otherwise.
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "test-request-1")
        .send()
        .await
        .expect("healthz");
    assert_eq!(echoed.headers()["x-request-id"], "test-request-1");
    let generated = app.get("/healthz").await;
    assert!(!generated.headers()["x-request-id"].is_empty());

    // Unknown endpoints get a problem, not an empty 404.
    let missing = app.get("/no/such/thing").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let metrics = e2e::metrics_page(&app.client, &app.url("")).await;
    assert!(
        metrics.contains("http_requests_total"),
        "metrics: {metrics}"
    );
}

#[tokio::test]
async fn timeline_service_is_ready_with_cassandra_and_nats_and_not_without() {
    use clap::Parser;
    // The shared test keyspace and a fresh stream, never the production names;
    // `spawn` waits (up to a minute: migrating a fresh keyspace takes a while)
    // for `/readyz` to answer 200.
    let app = TimelineApp::spawn(&[]).await;
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    app.deployment.delete_stream().await;

    let shutdown = CancellationToken::new();
    let _stop = e2e::StopOnDrop(shutdown.clone());
    let closed = closed_port().await;
    let mut args = vec![
        "timeline".to_owned(),
        "--addr".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--cassandra-nodes".to_owned(),
        closed.to_string(),
        "--nats-url".to_owned(),
        format!("nats://{closed}"),
        "--cassandra-keyspace".to_owned(),
        app.deployment.keyspace.clone(),
        "--nats-stream".to_owned(),
        app.deployment.stream.clone(),
        "--nats-subject-prefix".to_owned(),
        app.deployment.prefix.clone(),
    ];
    args.extend(e2e::auth::service_args());
    let config = timeline::Config::parse_from(args);
    let app = timeline::Application::build(config).await.expect("build");
    let addr = app.local_addr().expect("addr");
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let response = http_client()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), 503);
}
