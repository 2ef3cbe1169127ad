//! The no-oversell guarantee under real concurrency: many real HTTP clients
//! race for the same stock, and the invariants are checked afterwards in the
//! database.

use std::collections::HashSet;

use e2e::inventory_app::{InventoryApp, Mode};
use futures::future::join_all;
use serde_json::Value;

/// Flags that let a 500-buyer race finish on a 2-core machine: queueing for a
/// pooled connection may take longer than the production default.
const RACE_FLAGS: &[&str] = &["--database-acquire-timeout-ms", "10000"];

/// Every buyer at once, each its own request; returns `(status, quantity, body)`.
async fn race(app: &InventoryApp, sku: &str, quantities: &[i64]) -> Vec<(u16, i64, Value)> {
    let buyers = quantities.iter().map(|&quantity| async move {
        let response = app.reserve(&[(sku, quantity)], None).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, quantity, body)
    });
    join_all(buyers).await
}

async fn flash_sale_of_single_units_sells_exactly_the_stock(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(mode, RACE_FLAGS).await;
    app.create_product("FLASH", 50).await;

    let outcomes = race(&app, "FLASH", &[1; 500]).await;

    let mut held = 0;
    for (status, _, body) in &outcomes {
        match status {
            201 => held += 1,
            409 => assert_eq!(
                body["type"], "/problems/insufficient-stock",
                "409 body: {body}"
            ),
            503 => assert_eq!(body["type"], "/problems/unavailable", "503 body: {body}"),
            other => panic!("a buyer got {other}: {body}"),
        }
    }
    assert_eq!(held, 50, "exactly the stock is held");
    if mode.coalescing {
        assert!(
            outcomes.iter().all(|(status, _, _)| *status != 503),
            "coalesced buyers never race each other into a 503"
        );
        assert_coalesced(&app).await;
    }
    let counters = app.counters("FLASH").await;
    assert_eq!(
        (counters.available, counters.reserved, counters.sold),
        (0, 50, 0)
    );
    let held_rows: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::BIGINT FROM reservation_items WHERE sku = 'FLASH'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("sum");
    assert_eq!(
        held_rows, 50,
        "reservation lines add up to the reserved counter"
    );
    app.assert_ledger_replays().await;
}

async fn flash_sale_of_mixed_quantities_never_oversells(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(mode, RACE_FLAGS).await;
    app.create_product("MIXED", 50).await;
    let quantities: Vec<i64> = (0..500).map(|i| (i % 3) + 1).collect();

    let outcomes = race(&app, "MIXED", &quantities).await;

    let mut held = 0;
    let mut refused_quantities = Vec::new();
    for (status, quantity, body) in &outcomes {
        match status {
            201 => held += quantity,
            409 => {
                assert_eq!(body["items"][0]["requested"], *quantity, "409 body: {body}");
                assert!(body["items"][0]["available"].as_i64().expect("available") < *quantity);
                refused_quantities.push(*quantity);
            }
            503 => assert_eq!(body["type"], "/problems/unavailable"),
            other => panic!("a buyer got {other}: {body}"),
        }
    }
    let counters = app.counters("MIXED").await;
    assert!(held <= 50, "held {held} of 50");
    assert_eq!(
        counters.reserved, held,
        "the counter is the sum of the successful holds"
    );
    assert_eq!(counters.available, 50 - held);
    // Stock only went down during the race, so whoever was refused for being
    // short is still short now: nobody was refused while enough was left.
    for quantity in refused_quantities {
        assert!(
            counters.available < quantity,
            "refused {quantity} with {} left",
            counters.available
        );
    }
    app.assert_ledger_replays().await;
}

async fn concurrent_duplicates_with_one_idempotency_key_create_one_reservation(mode: Mode) {
    // A process of its own: its metrics count only this test's batches.
    let mut args = mode.args().to_vec();
    args.extend_from_slice(RACE_FLAGS);
    let app =
        InventoryApp::spawn_process_on(&e2e::fresh_database("inventory_idem").await, &args).await;
    app.create_product("IDEM", 100).await;

    let attempts = (0..50).map(|_| async {
        let response = app.reserve(&[("IDEM", 2)], Some("order-42")).await;
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let body: Value = response.json().await.expect("json");
        (status, replayed, body)
    });
    let answers = join_all(attempts).await;

    let ids: HashSet<_> = answers
        .iter()
        .map(|(_, _, body)| body["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "every answer carries the same id");
    assert!(answers.iter().all(|(status, _, _)| *status == 201));
    if mode.coalescing {
        let (batches, requests) = app.batches().await;
        assert!(
            batches < requests,
            "{requests} duplicates in {batches} batches: some shared a batch"
        );
    }
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "one original, the rest replays"
    );
    let first = &answers[0].2;
    assert!(
        answers.iter().all(|(_, _, body)| body == first),
        "replays answer the original body"
    );

    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(reservations, 1);
    assert_eq!(app.counters("IDEM").await.reserved, 2);

    // The same key with a different body is refused and changes nothing.
    let reused = app.reserve(&[("IDEM", 3)], Some("order-42")).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(app.counters("IDEM").await.reserved, 2);
    app.assert_ledger_replays().await;
}

/// Checks that the service applied some reservations together: the holds a
/// batch writes share their `created_at` (the time its transaction began).
async fn assert_coalesced(app: &InventoryApp) {
    let (holds, transactions): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT created_at) FROM reservations")
            .fetch_one(&app.pool)
            .await
            .expect("count holds");
    assert!(
        holds > transactions,
        "{holds} holds written by {transactions} transactions: some were applied together"
    );
}

/// Baskets and single-unit buyers share a hot product (first in sku order,
/// so they share its lane) and race for it; the baskets also want a scarce
/// product. A basket that does not fit takes nothing, not even from the hot
/// product, and the requests in its batch still succeed.
async fn baskets_sharing_a_hot_product_stay_all_or_nothing(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(mode, RACE_FLAGS).await;
    app.create_product("A-HOT", 1_000).await;
    app.create_product("Z-SCARCE", 5).await;

    let requests = (0..120).map(|n| {
        let app = &app;
        async move {
            let basket = n % 2 == 0;
            let items: &[(&str, i64)] = if basket {
                &[("A-HOT", 1), ("Z-SCARCE", 1)]
            } else {
                &[("A-HOT", 1)]
            };
            let response = app.reserve(items, None).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (basket, status, body)
        }
    });
    let answers = join_all(requests).await;

    let count = |basket: bool, status: u16| {
        answers
            .iter()
            .filter(|(b, s, _)| *b == basket && *s == status)
            .count() as i64
    };
    for (basket, status, body) in &answers {
        match (basket, status) {
            (_, 201) => {}
            (true, 409) => assert_eq!(
                body["items"],
                serde_json::json!([{"sku": "Z-SCARCE", "requested": 1, "available": 0}]),
                "a refused basket names only the product it could not get"
            ),
            (_, 503) if !mode.coalescing => {}
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    let (baskets, singles) = (count(true, 201), count(false, 201));
    if mode.coalescing {
        assert_eq!(
            (baskets, singles),
            (5, 60),
            "every single fits; 5 baskets do"
        );
        assert_coalesced(&app).await;
    }
    let hot = app.counters("A-HOT").await;
    let scarce = app.counters("Z-SCARCE").await;
    assert_eq!(
        hot.reserved,
        baskets + singles,
        "refused baskets took nothing from the hot product"
    );
    assert_eq!(scarce.reserved, baskets);
    assert!(scarce.reserved <= 5);
    app.assert_ledger_replays().await;
}

/// Two service instances on one database, each coalescing its own buyers,
/// sell out exactly: their batches meet in the database, where the
/// strategy keeps them apart.
async fn two_instances_on_one_database_sell_out_exactly(mode: Mode) {
    let url = e2e::fresh_database("inventory_two").await;
    let mut args = mode.args().to_vec();
    args.extend_from_slice(RACE_FLAGS);
    let first = InventoryApp::spawn_on(&url, &args).await;
    let second = InventoryApp::spawn_on(&url, &args).await;
    first.create_product("SHARED", 150).await;

    let buyers = (0..400).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        async move {
            let response = app.reserve(&[("SHARED", 1)], None).await;
            response.status().as_u16()
        }
    });
    let statuses = join_all(buyers).await;

    let held = statuses.iter().filter(|&&s| s == 201).count() as i64;
    let unavailable = statuses.iter().filter(|&&s| s == 503).count();
    assert!(
        statuses.iter().all(|s| [201, 409, 503].contains(s)),
        "only 201, 409 and 503: {statuses:?}"
    );
    if unavailable == 0 {
        assert_eq!(held, 150, "exactly the stock is held");
    }
    let counters = first.counters("SHARED").await;
    assert_eq!(
        (counters.reserved, counters.available + counters.reserved),
        (held, 150),
        "the database holds exactly what was acknowledged"
    );
    let lines: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::BIGINT FROM reservation_items WHERE sku = 'SHARED'",
    )
    .fetch_one(&first.pool)
    .await
    .expect("sum");
    assert_eq!(lines, held);
    first.assert_ledger_replays().await;
}

e2e::per_strategy!(
    flash_sale_of_single_units_sells_exactly_the_stock,
    flash_sale_of_mixed_quantities_never_oversells,
    concurrent_duplicates_with_one_idempotency_key_create_one_reservation,
    baskets_sharing_a_hot_product_stay_all_or_nothing,
    two_instances_on_one_database_sell_out_exactly
);

#[tokio::test]
async fn contention_beyond_the_retry_budget_is_a_503_with_retry_after() {
    // One attempt only: every lost compare-and-set exhausts the budget. The
    // buyers race each other (no coalescing), as replicas of the service do.
    let app = InventoryApp::spawn(&[
        "--transaction-max-attempts",
        "1",
        "--reservation-coalescing",
        "off",
    ])
    .await;
    app.create_product("HOT", 1_000).await;

    let buyers = (0..64).map(|_| async {
        let response = app.reserve(&[("HOT", 1)], None).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, retry_after, body)
    });
    let answers = join_all(buyers).await;

    let held = answers
        .iter()
        .filter(|(status, _, _)| *status == 201)
        .count() as i64;
    let contended: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 503)
        .collect();
    assert!(
        !contended.is_empty(),
        "64 racing buyers with one attempt each: some lose"
    );
    for (_, retry_after, body) in &contended {
        assert!(retry_after.is_some(), "a 503 says when to retry");
        assert_eq!(body["type"], "/problems/unavailable");
        assert_eq!(body["attempts"], 1);
    }
    assert_eq!(
        held + contended.len() as i64,
        64,
        "only 201 and 503: {answers:?}"
    );
    assert_eq!(app.counters("HOT").await.reserved, held);
    app.assert_ledger_replays().await;
}

#[tokio::test]
async fn a_refusal_is_replayed_for_its_idempotency_key_even_after_a_restock() {
    let app = InventoryApp::spawn(&[]).await;
    app.create_product("SCARCE", 1).await;

    let first = app.reserve(&[("SCARCE", 2)], Some("order-77")).await;
    assert_eq!(first.status(), 409);
    let first: Value = first.json().await.expect("problem");

    let product = app.get("/v1/products/SCARCE").await;
    let etag = product.headers()["etag"].to_str().expect("etag").to_owned();
    let restock = app
        .client
        .patch(app.url("/v1/products/SCARCE"))
        .header("If-Match", etag)
        .json(&serde_json::json!({"restock": 5}))
        .send()
        .await
        .expect("restock");
    assert_eq!(restock.status(), 200);

    // The same request with the same key answers as it did the first time.
    let retry = app.reserve(&[("SCARCE", 2)], Some("order-77")).await;
    assert_eq!(retry.status(), 409);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["content-type"], "application/problem+json");
    assert_eq!(retry.json::<Value>().await.expect("problem"), first);
    assert_eq!(app.counters("SCARCE").await.reserved, 0);

    // A new key is a new request, and now there is stock for it.
    assert_eq!(
        app.reserve(&[("SCARCE", 2)], Some("order-78"))
            .await
            .status(),
        201
    );
    app.assert_ledger_replays().await;
}
