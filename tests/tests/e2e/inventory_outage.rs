//! The CP side of the trade-off: while PostgreSQL is down the service refuses
//! quickly with `503` rather than guessing or hanging, and it recovers by
//! itself when the database returns.
//!
//! The test runs its own PostgreSQL server so that stopping it leaves the
//! shared one (and every other test) alone.

use std::time::{Duration, Instant};

use e2e::expect_problem;
use e2e::inventory_app::InventoryApp;
use e2e::pg_instance::PgInstance;
use sqlx::{Connection, PgConnection};

/// Far below the 10 s request timeout: a `503` within this comes from the
/// pool's acquire timeout (1 s here), i.e. the service did not hang.
const PROMPT: Duration = Duration::from_secs(5);

async fn requests_get_a_prompt_503_while_the_database_is_down_and_succeed_after(strategy: &str) {
    let (pg, admin) = private_server().await;
    admin.close().await.expect("close");

    let app = InventoryApp::spawn_on(
        &pg.url("inventory"),
        &[
            "--database-acquire-timeout-ms",
            "1000",
            "--reservation-strategy",
            strategy,
        ],
    )
    .await;
    app.create_product("CP", 100).await;
    assert_eq!(app.reserve(&[("CP", 1)], None).await.status(), 201);

    pg.stop();

    let requests = [
        (
            "reserve",
            app.client
                .post(app.url("/v1/reservations"))
                .json(&serde_json::json!({"items": [{"sku": "CP", "quantity": 1}]})),
        ),
        ("read", app.client.get(app.url("/v1/products/CP"))),
        (
            "create",
            app.client
                .post(app.url("/v1/products"))
                .json(&serde_json::json!({"sku": "CP2", "name": "x", "stock": 1})),
        ),
    ];
    for (what, request) in requests {
        let started = Instant::now();
        let response = request.send().await.expect("the service answers");
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "{what} while the database is down");
        assert!(
            response.headers().contains_key("retry-after"),
            "{what} says when to retry"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body = response.text().await.expect("body");
        assert!(
            !body.to_lowercase().contains("connection refused"),
            "no driver text: {body}"
        );
        assert!(took < PROMPT, "{what} answered in {took:?}, not promptly");
    }
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503, "readiness reports the outage");

    pg.start_again();

    // The same service instance recovers on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = app.reserve(&[("CP", 1)], None).await.status().as_u16();
        if status == 201 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        status, 201,
        "reservations succeed again after the database returns"
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(
        app.counters("CP").await.reserved,
        2,
        "only acknowledged holds count: nothing half-done"
    );
    app.assert_ledger_replays().await;
}

e2e::per_strategy!(requests_get_a_prompt_503_while_the_database_is_down_and_succeed_after);

/// With synchronous replication a commit waits until a standby confirms it.
/// Here the server waits for a standby that never comes
/// (`synchronous_standby_names` names nobody who exists), as a primary cut
/// off from its standbys does: the service must not answer 201 — the commit
/// exists on one server only — but a 503 once its request times out.
/// (PostgreSQL ends `statement_timeout` before a commit starts waiting, so
/// the wait is bounded by the request timeout, and no timeout turns it into
/// a success; only a cancel request would, and the service sends none.)
#[tokio::test]
async fn a_commit_no_standby_confirmed_is_never_acknowledged() {
    let (pg, mut admin) = private_server().await;
    let app = InventoryApp::spawn_on(
        &pg.url("inventory"),
        &[
            "--database-statement-timeout-ms",
            "300",
            "--database-lock-timeout-ms",
            "300",
            "--request-timeout-secs",
            "2",
        ],
    )
    .await;
    app.create_product("SYNC", 10).await;

    sqlx::raw_sql("ALTER SYSTEM SET synchronous_standby_names = 'a_standby_that_never_comes'")
        .execute(&mut admin)
        .await
        .expect("require a standby");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .expect("reload");
    let response = app.reserve(&[("SYNC", 1)], Some("sync-1")).await;
    assert!(
        response.headers().contains_key("retry-after"),
        "a refusal says when to retry"
    );
    expect_problem(response, 503).await;

    sqlx::raw_sql("ALTER SYSTEM RESET synchronous_standby_names")
        .execute(&mut admin)
        .await
        .expect("no standby required");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .expect("reload");
    admin.close().await.expect("close");
}

/// A PostgreSQL server of the test's own with an empty `inventory` database,
/// and an admin connection to it.
async fn private_server() -> (PgInstance, PgConnection) {
    let pg = PgInstance::start().await;
    let mut admin = PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("connect");
    sqlx::query("CREATE DATABASE inventory")
        .execute(&mut admin)
        .await
        .expect("create database");
    (pg, admin)
}
