//! The inventory under faults and hostile input: many clients racing over
//! baskets of several products with expiry on the request path, a row locked
//! from outside the service, confirm/cancel/sweeper races, and input that
//! must be refused with a problem and change nothing. All against the real
//! PostgreSQL; the invariants are checked in the database afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::inventory_app::{InventoryApp, Mode};
use e2e::{eventually, expect_problem};
use futures::future::join_all;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

const PRODUCTS: [&str; 5] = ["P1", "P2", "P3", "P4", "P5"];

/// The `items` of a reservation: `quantity` of each sku.
fn basket_items(skus: &[&str], quantity: i64) -> Vec<Value> {
    skus.iter()
        .map(|sku| json!({"sku": sku, "quantity": quantity}))
        .collect()
}

/// One client's share of the storm: a bounded number of random operations.
async fn storm_client(app: &InventoryApp, operations: usize) -> Vec<(&'static str, u16)> {
    let mut held: Vec<String> = Vec::new();
    let mut seen = Vec::with_capacity(operations);
    for _ in 0..operations {
        let (roll, basket, quantity, pick) = {
            let mut rng = rand::rng();
            let size = rng.random_range(2..=3);
            let basket: Vec<&str> = PRODUCTS.choose_multiple(&mut rng, size).copied().collect();
            (
                rng.random_range(0..100),
                basket,
                rng.random_range(1..=2),
                rng.random_range(0..usize::MAX),
            )
        };
        let (operation, response) = match roll {
            0..50 => {
                let items = basket_items(&basket, quantity);
                // Holds of one second: many expire while the storm goes on,
                // and with the sweeper slowed down the requests release them.
                let response = app
                    .post_json(
                        "/v1/reservations",
                        &json!({"items": items, "ttl_seconds": 1}),
                    )
                    .await;
                ("reserve", response)
            }
            50..85 if !held.is_empty() => {
                let id = held.swap_remove(pick % held.len());
                let action = if roll < 70 { "confirm" } else { "cancel" };
                let response = app
                    .post_json(&format!("/v1/reservations/{id}/{action}"), &json!({}))
                    .await;
                (action, response)
            }
            _ => (
                "read",
                app.get(&format!("/v1/products/{}", basket[0])).await,
            ),
        };
        let status = response.status().as_u16();
        if status == 503 {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("Retry-After in seconds");
            assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
        }
        if operation == "reserve" && status == 201 {
            let body: Value = response.json().await.expect("reservation");
            held.push(body["id"].as_str().expect("id").to_owned());
        }
        seen.push((operation, status));
    }
    seen
}

/// Many clients reserve baskets of 2–3 of 5 products with short holds, confirm,
/// cancel and read, while the sweeper is slowed down so that expiry happens on
/// the request path. Nothing answers 500; afterwards every counter is what the
/// reservations and the ledger say.
async fn a_storm_of_baskets_never_answers_500_and_keeps_every_invariant(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(
        mode,
        &[
            "--sweeper-interval-ms",
            "3600000",
            "--database-acquire-timeout-ms",
            "4000",
        ],
    )
    .await;
    for sku in PRODUCTS {
        app.create_product(sku, 60).await;
    }
    // Holds across products that are due when the storm starts: reservations
    // must release them (the sweeper will not), and that is where a
    // transaction could lock products out of order.
    for n in 0..15 {
        let items = basket_items(&[PRODUCTS[n % 5], PRODUCTS[(n + 1 + n / 5) % 5]], 2);
        let response = app
            .post_json(
                "/v1/reservations",
                &json!({"items": items, "ttl_seconds": 1}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    wait_until_holds_are_due(&app, true).await;

    let clients = (0..20).map(|_| storm_client(&app, 50));
    let seen: Vec<(&str, u16)> = join_all(clients).await.into_iter().flatten().collect();

    let mut by_status: HashMap<(&str, u16), usize> = HashMap::new();
    for outcome in &seen {
        *by_status.entry(*outcome).or_default() += 1;
    }
    let allowed = |operation: &str, status: u16| match operation {
        "reserve" => matches!(status, 201 | 409 | 503),
        "confirm" | "cancel" => matches!(status, 200 | 409 | 503),
        _ => matches!(status, 200 | 503),
    };
    for ((operation, status), count) in &by_status {
        assert!(
            allowed(operation, *status),
            "{count} × {operation} answered {status}: {by_status:?}"
        );
    }
    let unavailable = seen.iter().filter(|(_, status)| *status == 503).count();
    assert!(
        unavailable * 10 <= seen.len(),
        "at most a small share of 503s: {by_status:?}"
    );
    assert!(
        by_status.get(&("reserve", 201)).copied().unwrap_or(0) > 0,
        "some reservations succeed: {by_status:?}"
    );

    // With the sweeper slowed down, only requests released these.
    let expired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'expired'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    eprintln!("storm ({mode}): {by_status:?}, {expired} holds expired on the request path");
    assert!(
        expired >= 15,
        "the due holds were released on the request path"
    );

    assert_reservations_match_the_counters(&app).await;
    app.assert_ledger_replays().await;
    let deadlocks: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&app.pool)
    .await
    .expect("database statistics");
    assert_eq!(deadlocks, 0, "locks are always taken in one order");
}

/// Waits, by the database's clock, until every hold made so far is past its
/// expiry (`every`), or the first one is.
async fn wait_until_holds_are_due(app: &InventoryApp, every: bool) {
    let query = if every {
        "SELECT extract(epoch FROM max(expires_at))::FLOAT8 FROM reservations"
    } else {
        "SELECT extract(epoch FROM min(expires_at))::FLOAT8 FROM reservations"
    };
    let last_expiry: f64 = sqlx::query_scalar(query)
        .fetch_one(&app.pool)
        .await
        .expect("expiry");
    eventually("the holds to expire", Duration::from_secs(10), || async {
        let due: bool = sqlx::query_scalar("SELECT now() >= to_timestamp($1)")
            .bind(last_expiry)
            .fetch_one(&app.pool)
            .await
            .ok()?;
        due.then_some(())
    })
    .await;
}

/// Per product: `reserved` is the sum of its held lines and `sold` the sum of
/// its confirmed ones; every line has one `reserved` ledger row, and exactly
/// one terminal row (the one its status names) once it is no longer held.
async fn assert_reservations_match_the_counters(app: &InventoryApp) {
    let mismatched: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.sku, p.reserved, p.sold,
                COALESCE(SUM(i.quantity) FILTER (WHERE r.status = 'held'), 0)::BIGINT,
                COALESCE(SUM(i.quantity) FILTER (WHERE r.status = 'confirmed'), 0)::BIGINT
         FROM products p
         LEFT JOIN reservation_items i ON i.sku = p.sku
         LEFT JOIN reservations r ON r.id = i.reservation_id
         GROUP BY p.sku, p.reserved, p.sold
         HAVING p.reserved <> COALESCE(SUM(i.quantity) FILTER (WHERE r.status = 'held'), 0)
             OR p.sold <> COALESCE(SUM(i.quantity) FILTER (WHERE r.status = 'confirmed'), 0)",
    )
    .fetch_all(&app.pool)
    .await
    .expect("counters against reservations");
    assert!(
        mismatched.is_empty(),
        "(sku, reserved, sold, held lines, confirmed lines): {mismatched:?}"
    );
    let bad_lines: Vec<(uuid::Uuid, String, String, i64, i64)> = sqlx::query_as(
        "SELECT i.reservation_id, i.sku, r.status,
                COUNT(l.id) FILTER (WHERE l.kind = 'reserved'),
                COUNT(l.id) FILTER (WHERE l.kind IN ('released', 'expired', 'sold'))
         FROM reservation_items i
         JOIN reservations r ON r.id = i.reservation_id
         LEFT JOIN stock_ledger l ON l.reservation_id = i.reservation_id AND l.sku = i.sku
         GROUP BY i.reservation_id, i.sku, r.status
         HAVING COUNT(l.id) FILTER (WHERE l.kind = 'reserved') <> 1
             OR COUNT(l.id) FILTER (WHERE l.kind IN ('released', 'expired', 'sold'))
                <> CASE WHEN r.status = 'held' THEN 0 ELSE 1 END
             OR COUNT(l.id) FILTER (WHERE l.kind = CASE r.status
                    WHEN 'confirmed' THEN 'sold' WHEN 'cancelled' THEN 'released'
                    WHEN 'expired' THEN 'expired' END)
                <> CASE WHEN r.status = 'held' THEN 0 ELSE 1 END",
    )
    .fetch_all(&app.pool)
    .await
    .expect("ledger rows per line");
    assert!(
        bad_lines.is_empty(),
        "(reservation, sku, status, reserved rows, terminal rows): {bad_lines:?}"
    );
}

/// Confirms, cancels and sweeper batches race over the same holds as they
/// expire: each hold ends in exactly one state and is released at most once.
#[tokio::test]
async fn confirm_cancel_and_sweeper_racing_over_expiring_holds_end_each_hold_once() {
    let app = InventoryApp::spawn(&[
        "--sweeper-interval-ms",
        "3600000",
        "--database-acquire-timeout-ms",
        "4000",
    ])
    .await;
    app.create_product("R1", 1_000).await;
    app.create_product("R2", 1_000).await;
    let mut holds = Vec::new();
    for n in 0..120 {
        let quantity = n % 3 + 1;
        let response = app
            .post_json(
                "/v1/reservations",
                &json!({"items": [{"sku": "R1", "quantity": quantity}, {"sku": "R2", "quantity": 1}], "ttl_seconds": 1}),
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("reservation");
        holds.push(body["id"].as_str().expect("id").to_owned());
    }
    // Start the race as the first holds expire: those made last are still
    // held for a moment, those made first are due.
    wait_until_holds_are_due(&app, false).await;

    let sweeper = inventory::store::PgStore::new(
        app.pool.clone(),
        inventory::store::StoreSettings {
            strategy: inventory::store::LockingStrategy::Optimistic,
            retry: inventory::store::RetryPolicy {
                max_attempts: 20,
                base_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(50),
                budget: Duration::from_secs(5),
            },
            coalescing: None,
        },
    );
    let sweeps = (0..4).map(|_| async {
        for _ in 0..30 {
            sweeper.sweep_expired(5).await.expect("a sweep succeeds");
        }
    });
    let app = &app;
    let finishes = holds.iter().map(|id| async move {
        let (confirm_path, cancel_path, empty) = (
            format!("/v1/reservations/{id}/confirm"),
            format!("/v1/reservations/{id}/cancel"),
            json!({}),
        );
        let (confirm, cancel) = futures::join!(
            app.post_json(&confirm_path, &empty),
            app.post_json(&cancel_path, &empty),
        );
        (
            id.clone(),
            confirm.status().as_u16(),
            cancel.status().as_u16(),
        )
    });
    let (answers, _) = futures::join!(join_all(finishes), join_all(sweeps));
    // Whatever is left is released by one last sweep.
    sweeper.sweep_expired(1_000).await.expect("final sweep");

    for (id, confirm, cancel) in &answers {
        let status: String = sqlx::query_scalar("SELECT status FROM reservations WHERE id = $1")
            .bind(uuid::Uuid::parse_str(id).expect("uuid"))
            .fetch_one(&app.pool)
            .await
            .expect("status");
        let expected = match (confirm, cancel) {
            (200, 409) => "confirmed",
            (409, 200) => "cancelled",
            (409, 409) => "expired",
            other => panic!("hold {id}: confirm and cancel answered {other:?}"),
        };
        assert_eq!(status, expected, "hold {id} ends as its answers said");
    }
    assert_reservations_match_the_counters(app).await;
    app.assert_ledger_replays().await;
    assert_eq!(app.counters("R1").await.reserved, 0, "every hold ended");
}

/// A session outside the service holds one product's row lock for longer than
/// the lock timeout. Requests that need that row get a prompt `503` with
/// `Retry-After`; reads of it and requests for other products go on; when the
/// lock goes, everything sells again and no connection was lost.
async fn a_row_locked_from_outside_costs_its_requests_a_503_and_nobody_else_anything(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(
        mode,
        &[
            "--database-lock-timeout-ms",
            "300",
            "--database-statement-timeout-ms",
            "2000",
            "--database-max-connections",
            "16",
        ],
    )
    .await;
    app.create_product("LOCKED", 100).await;
    app.create_product("FREE", 1_000).await;
    let hold: Value = app
        .reserve(&[("LOCKED", 1)], None)
        .await
        .json()
        .await
        .expect("hold");
    let hold_id = hold["id"].as_str().expect("id").to_owned();

    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("database name");
    let (base, _) = e2e::postgres_admin_url()
        .rsplit_once('/')
        .map(|(base, db)| (base.to_owned(), db.to_owned()))
        .expect("URL with a database");
    let mut outsider =
        e2e::inventory_app::lock_product_from_outside(&format!("{base}/{database}"), "LOCKED")
            .await;

    let (app, hold_id) = (&app, hold_id.as_str());
    let blocked = (0..12).map(|n| async move {
        let started = Instant::now();
        let response = match n % 4 {
            0 | 1 => app.reserve(&[("LOCKED", 1)], None).await,
            2 => {
                app.post_json(&format!("/v1/reservations/{hold_id}/confirm"), &json!({}))
                    .await
            }
            _ => app
                .client
                .patch(app.url("/v1/products/LOCKED"))
                .header("If-Match", "*")
                .json(&json!({"restock": 1}))
                .send()
                .await
                .expect("PATCH reaches the service"),
        };
        let took = started.elapsed();
        assert!(
            response.headers().contains_key("retry-after"),
            "a refusal says when to retry"
        );
        expect_problem(response, 503).await;
        took
    });
    let others = (0..48).map(|_| async {
        let response = app.reserve(&[("FREE", 1)], None).await;
        response.status().as_u16()
    });
    let reads = (0..8).map(|_| async {
        let response = app.get("/v1/products/LOCKED").await;
        assert_eq!(response.status(), 200, "reads take no lock");
        let product: Value = response.json().await.expect("product");
        assert_eq!(product["reserved"], 1);
    });
    let (waits, other_statuses, _) =
        futures::join!(join_all(blocked), join_all(others), join_all(reads));
    for took in &waits {
        // The lock timeout (0.3 s) plus queueing on a 2-core machine; far
        // below the 10 s HTTP timeout that would answer otherwise.
        assert!(*took < Duration::from_secs(5), "refused after {took:?}");
    }
    assert!(
        other_statuses.iter().all(|status| *status == 201),
        "other products keep selling: {other_statuses:?}"
    );
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(&database)
    .fetch_one(&app.pool)
    .await
    .expect("activity");
    assert_eq!(
        waiting, 0,
        "no pooled connection is left waiting on the lock"
    );

    sqlx::query("ROLLBACK")
        .execute(&mut outsider)
        .await
        .expect("release the lock");
    assert_eq!(app.reserve(&[("LOCKED", 1)], None).await.status(), 201);
    let confirmed = app
        .post_json(&format!("/v1/reservations/{hold_id}/confirm"), &json!({}))
        .await;
    assert_eq!(confirmed.status(), 200);
    // The whole pool serves again: as many requests at once as connections.
    let again = join_all((0..16).map(|_| app.reserve(&[("FREE", 1)], None))).await;
    assert!(again.iter().all(|response| response.status() == 201));
    let locked = app.counters("LOCKED").await;
    assert_eq!(
        (locked.received, locked.reserved, locked.sold),
        (100, 1, 1),
        "nothing refused changed anything"
    );
    assert_eq!(app.counters("FREE").await.reserved, 48 + 16);
    app.assert_ledger_replays().await;
}

e2e::per_strategy!(
    a_storm_of_baskets_never_answers_500_and_keeps_every_invariant,
    a_row_locked_from_outside_costs_its_requests_a_503_and_nobody_else_anything,
);

#[tokio::test]
async fn control_characters_are_refused_naming_the_field_and_change_nothing() {
    let app = InventoryApp::spawn(&[]).await;
    for (body, field) in [
        (json!({"sku": "NUL", "name": "a\u{0}b", "stock": 1}), "name"),
        (json!({"sku": "TAB", "name": "a\tb", "stock": 1}), "name"),
        (
            json!({"sku": "BEL\u{7}", "name": "bell", "stock": 1}),
            "sku",
        ),
    ] {
        let problem = expect_problem(app.post_json("/v1/products", &body).await, 422).await;
        assert_eq!(problem["field"], field, "{problem}");
    }
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(products, 0, "no refused product was created");

    app.create_product("OK", 5).await;
    let rename = app
        .client
        .patch(app.url("/v1/products/OK"))
        .header("If-Match", "\"1\"")
        .json(&json!({"name": "line\nbreak"}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(expect_problem(rename, 422).await["field"], "name");
    let key = app
        .client
        .post(app.url("/v1/reservations"))
        .header("Idempotency-Key", "order\t1")
        .json(&json!({"items": [{"sku": "OK", "quantity": 1}]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(expect_problem(key, 422).await["field"], "Idempotency-Key");
    let product: Value = app.get("/v1/products/OK").await.json().await.expect("json");
    assert_eq!(
        (&product["name"], &product["version"], &product["reserved"]),
        (&json!("Product OK"), &json!(1), &json!(0))
    );
}

#[tokio::test]
async fn if_match_follows_rfc_9110() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("TAG", 1).await;
    let patch = |if_match: &'static str| {
        app.client
            .patch(app.url("/v1/products/TAG"))
            .header("If-Match", if_match)
            .json(&json!({"restock": 1}))
            .send()
    };
    // Version 1 → 2 with "*", 2 → 3 with a list holding the current tag.
    assert_eq!(patch("*").await.expect("send").status(), 200);
    assert_eq!(patch("\"9\", \"2\"").await.expect("send").status(), 200);
    // Tags that name no current version (weak ones never match) are 412.
    for refused in ["\"03\"", "W/\"3\"", "\"1\", \"2\""] {
        let problem = expect_problem(patch(refused).await.expect("send"), 412).await;
        assert_eq!(problem["current_version"], 3, "If-Match: {refused}");
    }
    // A value that is not `*` or a list of entity tags is malformed: 400.
    expect_problem(patch("not a tag").await.expect("send"), 400).await;
    assert_eq!(
        app.counters("TAG").await.received,
        3,
        "only the matching writes applied"
    );
    app.assert_ledger_replays().await;
}

#[tokio::test]
async fn malformed_ids_are_400_and_unknown_ones_404() {
    let app = InventoryApp::spawn(&[]).await;
    for path in ["/v1/reservations/not-a-uuid", "/v1/reservations/123"] {
        let problem = expect_problem(app.get(path).await, 400).await;
        assert_eq!(problem["field"], "id");
    }
    for action in ["confirm", "cancel"] {
        let response = app
            .post_json(&format!("/v1/reservations/nope/{action}"), &json!({}))
            .await;
        expect_problem(response, 400).await;
    }
    let unknown = uuid::Uuid::now_v7();
    expect_problem(app.get(&format!("/v1/reservations/{unknown}")).await, 404).await;
    expect_problem(
        app.post_json(&format!("/v1/reservations/{unknown}/confirm"), &json!({}))
            .await,
        404,
    )
    .await;
}

/// Settings that cannot work stop the binary at start-up with a message, before
/// it touches the database.
#[tokio::test]
async fn invalid_configuration_stops_the_binary_with_a_message() {
    let binary = e2e::workspace_binary("inventory");
    let closed = e2e::closed_port().await;
    for (variable, value, mentions) in [
        ("SWEEPER_INTERVAL_MS", "0", "sweeper-interval-ms"),
        (
            "RESERVATION_DEFAULT_TTL_SECS",
            "7200",
            "RESERVATION_DEFAULT_TTL_SECS",
        ),
        (
            "DATABASE_STATEMENT_TIMEOUT_MS",
            "20000",
            "HTTP_REQUEST_TIMEOUT_SECS",
        ),
        (
            "DATABASE_LOCK_TIMEOUT_MS",
            "9000",
            "DATABASE_LOCK_TIMEOUT_MS",
        ),
        ("DATABASE_MAX_CONNECTIONS", "0", "database-max-connections"),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&binary)
                .env("DATABASE_URL", format!("postgres://postgres@{closed}/none"))
                .env("INVENTORY_ADDR", "127.0.0.1:0")
                .env(variable, value)
                .output(),
        )
        .await
        .expect("the binary exits by itself")
        .expect("run the binary");
        assert!(!output.status.success(), "{variable}={value} is refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(mentions),
            "{variable}={value}: the message names {mentions}: {stderr}"
        );
    }
}

/// A server that turns read-only under the pool, as a deposed primary does
/// during a failover, costs its requests a `503` with `Retry-After` (never a
/// `500`) and changes nothing; once it takes writes again, so does the service.
#[tokio::test]
async fn a_database_turned_read_only_is_unavailable_not_an_error() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("RO-1", 5).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("database name");
    set_read_only(&database, true).await;

    let response = app.reserve(&[("RO-1", 1)], Some("read-only-1")).await;
    assert!(
        response.headers().contains_key("retry-after"),
        "a refusal says when to retry"
    );
    expect_problem(response, 503).await;
    let counters = app.counters("RO-1").await;
    assert_eq!(
        (counters.available, counters.reserved),
        (5, 0),
        "nothing changed"
    );

    set_read_only(&database, false).await;
    let retried = app.reserve(&[("RO-1", 1)], Some("read-only-1")).await;
    assert_eq!(retried.status(), 201, "the same key, once writes are back");
    assert_eq!(app.counters("RO-1").await.reserved, 1);
    app.assert_ledger_replays().await;
}

/// Makes new sessions of `database` read-only (or not) and ends the service's
/// sessions, so its pool reconnects under the new setting.
async fn set_read_only(database: &str, read_only: bool) {
    let mut admin = PgConnection::connect(&e2e::postgres_admin_url())
        .await
        .expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" SET default_transaction_read_only = {read_only}"
    )))
    .execute(&mut admin)
    .await
    .expect("alter the database");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .execute(&mut admin)
    .await
    .expect("end the service's sessions");
}
