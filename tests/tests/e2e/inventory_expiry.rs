//! Holds expire: the sweeper releases them, and no read counts one as held.

use std::time::Duration;

use e2e::eventually;
use e2e::inventory_app::{InventoryApp, Mode};
use serde_json::Value;

async fn hold(app: &InventoryApp, sku: &str, quantity: i64, ttl_seconds: i64) -> String {
    let response = app
        .post_json(
            "/v1/reservations",
            &serde_json::json!({"items": [{"sku": sku, "quantity": quantity}], "ttl_seconds": ttl_seconds}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn the_sweeper_releases_a_one_second_hold(mode: Mode) {
    let app = InventoryApp::spawn_with_strategy(mode, &["--sweeper-interval-ms", "200"]).await;
    app.create_product("EXP", 5).await;
    let id = hold(&app, "EXP", 2, 1).await;
    let uuid: uuid::Uuid = id.parse().expect("uuid");

    // Watch the database, not the API: API reads release due holds themselves,
    // and this test is about the sweeper doing it on its own.
    eventually(
        "the sweeper to release the hold",
        Duration::from_secs(15),
        || async {
            let status: String =
                sqlx::query_scalar("SELECT status FROM reservations WHERE id = $1")
                    .bind(uuid)
                    .fetch_one(&app.pool)
                    .await
                    .expect("status");
            (status == "expired").then_some(())
        },
    )
    .await;
    let counters = app.counters("EXP").await;
    assert_eq!((counters.available, counters.reserved), (5, 0));
    let expired_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_ledger WHERE reservation_id = $1 AND kind = 'expired' AND quantity = 2")
        .bind(uuid)
        .fetch_one(&app.pool)
        .await
        .expect("ledger");
    assert_eq!(expired_rows, 1);

    let read: Value = app
        .get(&format!("/v1/reservations/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["status"], "expired");
    for action in ["confirm", "cancel"] {
        let response = app
            .post_json(
                &format!("/v1/reservations/{id}/{action}"),
                &serde_json::json!({}),
            )
            .await;
        assert_eq!(response.status(), 409, "{action} of an expired hold");
    }
    app.assert_ledger_replays().await;
}

async fn reads_never_count_an_expired_hold_even_before_the_sweeper_runs(mode: Mode) {
    // A sweeper that effectively never runs during the test.
    let app = InventoryApp::spawn_with_strategy(mode, &["--sweeper-interval-ms", "3600000"]).await;
    app.create_product("LAZY", 3).await;
    let id = hold(&app, "LAZY", 3, 1).await;
    assert_eq!(
        app.reserve(&[("LAZY", 1)], None).await.status(),
        409,
        "sold out while held"
    );

    eventually(
        "the hold to read as expired",
        Duration::from_secs(10),
        || async {
            let read: Value = app
                .get(&format!("/v1/reservations/{id}"))
                .await
                .json()
                .await
                .expect("json");
            (read["status"] == "expired").then_some(())
        },
    )
    .await;

    let product: Value = app
        .get("/v1/products/LAZY")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (product["available"].as_i64(), product["reserved"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        app.post_json(
            &format!("/v1/reservations/{id}/confirm"),
            &serde_json::json!({})
        )
        .await
        .status(),
        409
    );
    // The released stock can be reserved again.
    assert_eq!(app.reserve(&[("LAZY", 3)], None).await.status(), 201);
    app.assert_ledger_replays().await;
}

e2e::per_strategy!(
    the_sweeper_releases_a_one_second_hold,
    reads_never_count_an_expired_hold_even_before_the_sweeper_runs
);
