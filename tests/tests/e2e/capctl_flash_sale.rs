//! `capctl flash-sale`, the real binary, against a real inventory service: the
//! invariant it reports (oversold = 0) is checked again in the database.

use e2e::inventory_app::InventoryApp;
use e2e::workspace_binary;
use serde_json::Value;

async fn flash_sale(app: &InventoryApp, args: &[&str]) -> Value {
    let inventory_url = format!("http://{}", app.addr);
    let output = tokio::process::Command::new(workspace_binary("capctl"))
        .args(["--inventory-url", &inventory_url, "--json", "flash-sale"])
        .args(args)
        .output()
        .await
        .expect("run capctl");
    assert!(
        output.status.success(),
        "capctl failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("capctl --json prints one JSON report")
}

#[tokio::test]
async fn flash_sale_reports_no_oversell_and_the_database_agrees() {
    let app = InventoryApp::spawn(&[]).await;
    let report = flash_sale(
        &app,
        &[
            "--stock",
            "20",
            "--buyers",
            "200",
            "--concurrency",
            "32",
            "--confirm",
        ],
    )
    .await;

    assert_eq!(report["oversold"], 0);
    assert_eq!(report["invariant_holds"], true);
    assert_eq!(report["buyers"], 200);
    let held = report["held"].as_u64().expect("held");
    let refused = report["refused"].as_u64().expect("refused");
    let unavailable = report["unavailable"].as_u64().expect("unavailable");
    assert_eq!(
        held + refused + unavailable,
        200,
        "every buyer is accounted for: {report}"
    );
    assert_eq!(report["units_taken"], 20, "the stock sold out: {report}");
    assert_eq!(report["confirmed"], report["held"]);
    assert!(report["latency"]["p99_ms"].as_f64().expect("p99") > 0.0);

    let sku = report["skus"][0].as_str().expect("sku");
    let counters = app.counters(sku).await;
    assert_eq!(
        (counters.sold, counters.reserved, counters.available),
        (20, 0, 0)
    );
    app.assert_ledger_replays().await;
}

#[tokio::test]
async fn flash_sale_with_mixed_quantities_over_several_products() {
    let app = InventoryApp::spawn(&["--reservation-strategy", "guarded"]).await;
    let report = flash_sale(
        &app,
        &[
            "--stock",
            "10",
            "--buyers",
            "120",
            "--concurrency",
            "16",
            "--max-quantity",
            "3",
            "--products",
            "3",
        ],
    )
    .await;
    assert_eq!(report["oversold"], 0);
    assert_eq!(report["invariant_holds"], true);
    let taken: i64 = sqlx::query_scalar("SELECT (SUM(reserved) + SUM(sold))::BIGINT FROM products")
        .fetch_one(&app.pool)
        .await
        .expect("sum");
    assert_eq!(report["units_taken"], taken);
    assert!(taken <= 30);
    app.assert_ledger_replays().await;
}
