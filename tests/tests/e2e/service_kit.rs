//! Behaviour every service gets from the kit, shown on a small router: the
//! request timeout, bare framework errors as problems, and graceful drain.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use e2e::http_client;
use service_kit::config::HttpConfig;
use service_kit::health::Readiness;
use service_kit::http::{Essentials, service_router};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Serves `/slow` (answers after `delay`, and signals `entered` when a request
/// reaches it) with the kit's layers; returns the base URL and the server task.
async fn serve_slow(
    delay: Duration,
    http: HttpConfig,
    shutdown: &CancellationToken,
) -> (
    String,
    Arc<Notify>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let entered = Arc::new(Notify::new());
    let signal = entered.clone();
    let api = Router::new().route(
        "/slow",
        get(move || {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                tokio::time::sleep(delay).await;
                "done"
            }
        }),
    );
    let router = service_router(
        api,
        Essentials {
            readiness: Readiness::new(Duration::from_secs(1)),
            openapi: utoipa::openapi::OpenApiBuilder::new().build(),
            http,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(service_kit::http::serve(
        listener,
        router,
        shutdown.clone(),
        Duration::from_secs(10),
    ));
    (base, entered, server)
}

#[tokio::test]
async fn a_request_over_the_timeout_gets_a_503_problem() {
    let shutdown = CancellationToken::new();
    let _stop = e2e::StopOnDrop(shutdown.clone());
    let http = HttpConfig {
        request_timeout_secs: 1,
        ..HttpConfig::default()
    };
    let (base, _, _) = serve_slow(Duration::from_secs(5), http, &shutdown).await;

    let response = http_client()
        .get(format!("{base}/slow"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.expect("problem");
    assert_eq!(body["status"], 503);
}

#[tokio::test]
async fn bare_framework_errors_are_problems() {
    let shutdown = CancellationToken::new();
    let _stop = e2e::StopOnDrop(shutdown.clone());
    let (base, _, _) = serve_slow(Duration::ZERO, HttpConfig::default(), &shutdown).await;

    let wrong_method = http_client()
        .post(format!("{base}/slow"))
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = wrong_method.json().await.expect("problem");
    assert_eq!(body["title"], "Method Not Allowed");
}

#[tokio::test]
async fn shutdown_drains_the_request_in_flight_and_stops_accepting() {
    let shutdown = CancellationToken::new();
    let (base, entered, server) =
        serve_slow(Duration::from_millis(800), HttpConfig::default(), &shutdown).await;

    let client = http_client();
    let in_flight = tokio::spawn({
        let (client, url) = (client.clone(), format!("{base}/slow"));
        async move { client.get(url).send().await }
    });
    // Cancel once the request is in the handler.
    entered.notified().await;
    shutdown.cancel();

    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "done");
    server
        .await
        .expect("server task")
        .expect("server stopped cleanly");
    // The listener is closed: a new request cannot connect.
    let after = reqwest::Client::new()
        .get(format!("{base}/slow"))
        .send()
        .await;
    assert!(after.is_err(), "no new requests after shutdown");
}

/// A background task that dies (a panic, or an early return) makes readiness
/// fail, naming the task; one that ends because the service is shutting down
/// does not.
#[tokio::test]
async fn a_background_task_that_dies_makes_readiness_fail_naming_it() {
    use service_kit::health::{CheckStatus, TaskCheck};

    let shutdown = CancellationToken::new();
    let panicking = TaskCheck::new("panicking");
    let returning = TaskCheck::new("returning");
    let stopped = TaskCheck::new("stopped-on-shutdown");
    let readiness = Readiness::new(Duration::from_secs(1))
        .with(panicking.clone())
        .with(returning.clone())
        .with(stopped.clone());
    assert!(readiness.report().await.is_ready(), "all up at first");

    let crash = Arc::new(Notify::new());
    let trigger = crash.clone();
    let panicked = panicking.spawn(
        async move {
            trigger.notified().await;
            panic!("the task failed");
        },
        shutdown.clone(),
    );
    crash.notify_one();
    panicked.await.expect("the watcher ends");
    returning
        .spawn(async {}, shutdown.clone())
        .await
        .expect("the watcher ends");
    let until_shutdown = shutdown.clone();
    let graceful = stopped.spawn(
        async move { until_shutdown.cancelled().await },
        shutdown.clone(),
    );
    shutdown.cancel();
    graceful.await.expect("the watcher ends");

    let report = readiness.report().await;
    let status_of = |name: &str| {
        report
            .checks
            .iter()
            .find(|check| check.name == name)
            .map(|check| check.status)
    };
    assert_eq!(status_of("panicking"), Some(CheckStatus::Down));
    assert_eq!(status_of("returning"), Some(CheckStatus::Down));
    assert_eq!(status_of("stopped-on-shutdown"), Some(CheckStatus::Up));
    assert!(!report.is_ready());
}
