//! The inventory API end to end: products, ETags, reservations, confirm and
//! cancel, the ledger, and bad input — against the real PostgreSQL.

use e2e::expect_problem;
use e2e::inventory_app::{InventoryApp, Mode};
use serde_json::{Value, json};

#[tokio::test]
async fn products_are_created_read_and_refused_twice() {
    let app = InventoryApp::spawn(&[]).await;
    let response = app
        .post_json(
            "/v1/products",
            &json!({"sku": "SKU-1", "name": "Sneaker", "stock": 10}),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(response.headers()["location"], "/v1/products/SKU-1");
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"sku": "SKU-1", "name": "Sneaker", "available": 10, "reserved": 0, "sold": 0, "version": 1})
    );

    let read = app.get("/v1/products/SKU-1").await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"1\"");

    let duplicate = app
        .post_json(
            "/v1/products",
            &json!({"sku": "SKU-1", "name": "Other", "stock": 1}),
        )
        .await;
    expect_problem(duplicate, 409).await;
    expect_problem(app.get("/v1/products/NOPE").await, 404).await;
    app.assert_ledger_replays().await;
}

#[tokio::test]
async fn updates_need_the_current_etag() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("P", 5).await;
    let patch = |if_match: Option<&'static str>, body: Value| {
        let mut request = app.client.patch(app.url("/v1/products/P")).json(&body);
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        request.send()
    };

    expect_problem(patch(None, json!({"restock": 5})).await.expect("send"), 428).await;

    let fresh = patch(Some("\"1\""), json!({"name": "Renamed", "restock": 5}))
        .await
        .expect("send");
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.headers()["etag"], "\"2\"");
    let body: Value = fresh.json().await.expect("json");
    assert_eq!(
        (body["name"].as_str(), body["available"].as_i64()),
        (Some("Renamed"), Some(10))
    );

    let stale = expect_problem(
        patch(Some("\"1\""), json!({"restock": 100}))
            .await
            .expect("send"),
        412,
    )
    .await;
    assert_eq!(stale["current_version"], 2);
    let garbage = expect_problem(
        patch(Some("W/\"2\""), json!({"restock": 100}))
            .await
            .expect("send"),
        412,
    )
    .await;
    assert_eq!(garbage["current_version"], 2);

    // Neither refused update changed anything.
    let counters = app.counters("P").await;
    assert_eq!((counters.received, counters.available), (10, 10));
    expect_problem(patch(Some("\"2\""), json!({})).await.expect("send"), 422).await;
    expect_problem(
        patch(Some("\"2\""), json!({"restock": 0}))
            .await
            .expect("send"),
        422,
    )
    .await;
    app.assert_ledger_replays().await;
}

async fn a_reservation_is_held_confirmed_or_cancelled(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(mode, &[]).await;
    app.create_product("A", 10).await;

    let held = app.reserve(&[("A", 3)], None).await;
    assert_eq!(held.status(), 201);
    let held: Value = held.json().await.expect("json");
    assert_eq!(held["status"], "held");
    assert_eq!(held["items"], json!([{"sku": "A", "quantity": 3}]));
    let id = held["id"].as_str().expect("id").to_owned();
    let counters = app.counters("A").await;
    assert_eq!((counters.available, counters.reserved), (7, 3));

    let confirmed = app
        .post_json(&format!("/v1/reservations/{id}/confirm"), &json!({}))
        .await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(
        confirmed.json::<Value>().await.expect("json")["status"],
        "confirmed"
    );
    let counters = app.counters("A").await;
    assert_eq!(
        (counters.available, counters.reserved, counters.sold),
        (7, 0, 3)
    );
    // Confirming twice answers the same; cancelling a confirmed one is a conflict.
    assert_eq!(
        app.post_json(&format!("/v1/reservations/{id}/confirm"), &json!({}))
            .await
            .status(),
        200
    );
    expect_problem(
        app.post_json(&format!("/v1/reservations/{id}/cancel"), &json!({}))
            .await,
        409,
    )
    .await;

    let second: Value = app
        .reserve(&[("A", 2)], None)
        .await
        .json()
        .await
        .expect("json");
    let second_id = second["id"].as_str().expect("id");
    for _ in 0..2 {
        let cancelled = app
            .post_json(&format!("/v1/reservations/{second_id}/cancel"), &json!({}))
            .await;
        assert_eq!(cancelled.status(), 200, "cancel is idempotent");
        assert_eq!(
            cancelled.json::<Value>().await.expect("json")["status"],
            "cancelled"
        );
    }
    expect_problem(
        app.post_json(&format!("/v1/reservations/{second_id}/confirm"), &json!({}))
            .await,
        409,
    )
    .await;
    let counters = app.counters("A").await;
    assert_eq!(
        (counters.available, counters.reserved, counters.sold),
        (7, 0, 3)
    );

    let read: Value = app
        .get(&format!("/v1/reservations/{second_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["status"], "cancelled");
    expect_problem(
        app.get(&format!("/v1/reservations/{}", uuid::Uuid::new_v4()))
            .await,
        404,
    )
    .await;
    expect_problem(app.get("/v1/reservations/not-a-uuid").await, 400).await;
    app.assert_ledger_replays().await;
}

async fn a_multi_item_reservation_that_cannot_be_filled_changes_nothing(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(mode, &[]).await;
    app.create_product("A", 10).await;
    app.create_product("B", 1).await;
    app.create_product("C", 4).await;

    let short = expect_problem(
        app.reserve(&[("C", 2), ("A", 5), ("B", 2)], None).await,
        409,
    )
    .await;
    assert_eq!(
        short["items"],
        json!([{"sku": "B", "requested": 2, "available": 1}])
    );

    let unknown = expect_problem(app.reserve(&[("A", 1), ("ZZZ", 1)], None).await, 404).await;
    assert_eq!(unknown["skus"], json!(["ZZZ"]));

    for (sku, stock) in [("A", 10), ("B", 1), ("C", 4)] {
        let counters = app.counters(sku).await;
        assert_eq!(
            (counters.available, counters.reserved),
            (stock, 0),
            "{sku} untouched"
        );
    }
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(reservations, 0);

    // The same request that fits is held for every item at once.
    let held = app.reserve(&[("C", 2), ("A", 5), ("B", 1)], None).await;
    assert_eq!(held.status(), 201);
    for (sku, available) in [("A", 5), ("B", 0), ("C", 2)] {
        assert_eq!(app.counters(sku).await.available, available);
    }
    app.assert_ledger_replays().await;
}

#[tokio::test]
async fn the_ledger_pages_newest_first() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("L", 100).await;
    for _ in 0..7 {
        assert_eq!(app.reserve(&[("L", 1)], None).await.status(), 201);
    }
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/products/L/ledger?limit=3&cursor={c}"),
            None => "/v1/products/L/ledger?limit=3".to_owned(),
        };
        let page: Value = app.get(&path).await.json().await.expect("json");
        ids.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| e["id"].as_i64().expect("id")),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 8, "1 received + 7 reserved");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first: {ids:?}"
    );

    expect_problem(app.get("/v1/products/L/ledger?cursor=abc").await, 400).await;
    expect_problem(app.get("/v1/products/L/ledger?limit=0").await, 400).await;
    expect_problem(app.get("/v1/products/NOPE/ledger").await, 404).await;
}

async fn bad_input_is_a_problem_and_changes_nothing(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(mode, &[]).await;
    app.create_product("A", 10).await;
    let raw = |body: &'static str| {
        app.client
            .post(app.url("/v1/reservations"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    expect_problem(raw("{\"items\": [").await.expect("send"), 400).await;
    expect_problem(
        raw("{\"items\": [{\"sku\": \"A\", \"quantity\": 1}], \"extra\": 1}")
            .await
            .expect("send"),
        422,
    )
    .await;
    expect_problem(
        raw("{\"items\": [{\"sku\": \"A\", \"quantity\": \"1\"}]}")
            .await
            .expect("send"),
        422,
    )
    .await;
    expect_problem(
        raw("{\"items\": [{\"sku\": \"A\", \"quantity\": 1e400}]}")
            .await
            .expect("send"),
        400,
    )
    .await;
    expect_problem(
        raw("{\"items\": [{\"sku\": \"A\", \"quantity\": 99999999999999999999}]}")
            .await
            .expect("send"),
        422,
    )
    .await;
    expect_problem(raw("{\"items\": []}").await.expect("send"), 422).await;
    for quantity in [0, -1, 1_000_001] {
        expect_problem(app.reserve(&[("A", quantity)], None).await, 422).await;
    }
    let long_sku = "S".repeat(65);
    expect_problem(app.reserve(&[(long_sku.as_str(), 1)], None).await, 422).await;
    expect_problem(app.reserve(&[("A", 1), ("A", 1)], None).await, 422).await;
    let bad_ttl = app
        .post_json(
            "/v1/reservations",
            &json!({"items": [{"sku": "A", "quantity": 1}], "ttl_seconds": 0}),
        )
        .await;
    expect_problem(bad_ttl, 422).await;
    let no_type = app
        .client
        .post(app.url("/v1/reservations"))
        .body("{}")
        .send()
        .await
        .expect("send");
    expect_problem(no_type, 415).await;
    let huge = format!(
        "{{\"items\": [{{\"sku\": \"{}\", \"quantity\": 1}}]}}",
        "A".repeat(200_000)
    );
    let too_large = app
        .client
        .post(app.url("/v1/reservations"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("send");
    expect_problem(too_large, 413).await;
    let bad_key = app
        .client
        .post(app.url("/v1/reservations"))
        .header("Idempotency-Key", "")
        .json(&json!({"items": [{"sku": "A", "quantity": 1}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        expect_problem(bad_key, 422).await["field"],
        "Idempotency-Key"
    );

    for bad_product in [
        json!({"sku": "B", "name": "B", "stock": -1}),
        json!({"sku": "B", "name": "  ", "stock": 1}),
        json!({"sku": "B b", "name": "B", "stock": 1}),
        json!({"sku": "B", "name": "B"}),
    ] {
        expect_problem(app.post_json("/v1/products", &bad_product).await, 422).await;
    }

    let counters = app.counters("A").await;
    assert_eq!((counters.available, counters.reserved), (10, 0));
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!((reservations, products), (0, 1));
    app.assert_ledger_replays().await;
}

e2e::per_strategy!(
    a_reservation_is_held_confirmed_or_cancelled,
    a_multi_item_reservation_that_cannot_be_filled_changes_nothing,
    bad_input_is_a_problem_and_changes_nothing
);

/// On a database whose default collation is not byte order (ICU `en-US` sorts
/// `_x, a, B, Z9`; bytes sort `B, Z9, _x, a`), every line still takes stock
/// from its own product.
async fn lines_take_stock_from_their_own_products_whatever_the_collation(mode: Mode) {
    let url = e2e::fresh_database_with(
        "inventory_icu",
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0",
    )
    .await;
    let app = InventoryApp::spawn_on(&url, &mode.args()).await;
    for (sku, stock) in [("a", 10), ("B", 20), ("_x", 30), ("Z9", 40)] {
        app.create_product(sku, stock).await;
    }
    let held = app
        .reserve(&[("a", 1), ("B", 2), ("_x", 3), ("Z9", 4)], None)
        .await;
    assert_eq!(held.status(), 201);
    for (sku, available, reserved) in [("a", 9, 1), ("B", 18, 2), ("_x", 27, 3), ("Z9", 36, 4)] {
        let counters = app.counters(sku).await;
        assert_eq!(
            (counters.available, counters.reserved),
            (available, reserved),
            "{sku}"
        );
    }
    let short = expect_problem(app.reserve(&[("a", 1), ("Z9", 41)], None).await, 409).await;
    assert_eq!(
        short["items"],
        json!([{"sku": "Z9", "requested": 41, "available": 36}])
    );
    let id = held.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        app.post_json(&format!("/v1/reservations/{id}/cancel"), &json!({}))
            .await
            .status(),
        200
    );
    app.assert_ledger_replays().await;
}

e2e::per_strategy!(lines_take_stock_from_their_own_products_whatever_the_collation);
