//! `capctl flash-sale`, the real binary, against a real inventory service: the
//! invariant it reports (oversold = 0) is checked again in the database. Its
//! figures (throughput, percentiles, 503s, conflicts) are checked for shape,
//! never for size.

use e2e::inventory_app::InventoryApp;
use e2e::{fresh_database, workspace_binary};
use serde_json::Value;

/// `capctl [--json] --inventory-url <each app> flash-sale ARGS…`; must
/// succeed. It mints its buyers' and its admin's tokens with the development
/// signing key.
async fn run_capctl(apps: &[&InventoryApp], json: bool, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(workspace_binary("capctl"));
    command.env("CAPCTL_SIGNING_KEY", &e2e::auth::dev_keys().signing_key);
    for app in apps {
        command.args(["--inventory-url", &format!("http://{}", app.addr)]);
    }
    if json {
        command.arg("--json");
    }
    let output = command
        .arg("flash-sale")
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
    output
}

async fn flash_sale(app: &InventoryApp, args: &[&str]) -> Value {
    let output = run_capctl(&[app], true, args).await;
    serde_json::from_slice(&output.stdout).expect("capctl --json prints one JSON report")
}

/// The figures every report carries, whatever their size.
fn assert_figures(report: &Value) {
    let number = |path: &[&str]| {
        let mut value = report;
        for key in path {
            value = &value[key];
        }
        value
            .as_f64()
            .unwrap_or_else(|| panic!("{path:?} is a number: {report}"))
    };
    assert!(number(&["holds_per_sec"]) > 0.0, "{report}");
    assert!(number(&["requests_per_sec"]) > 0.0, "{report}");
    assert!(
        number(&["selling_secs"]) <= number(&["elapsed_secs"]),
        "{report}"
    );
    let (p50, p95, p99) = (
        number(&["latency", "p50_ms"]),
        number(&["latency", "p95_ms"]),
        number(&["latency", "p99_ms"]),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{report}");
    assert!(number(&["conflicts"]) >= 0.0, "{report}");
    assert!(report["conflicts_by_cause"].is_object(), "{report}");
    assert!(report["unavailable"].is_u64(), "{report}");
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
    assert_figures(&report);
    assert_eq!(
        report["inventory_urls"],
        serde_json::json!([format!("http://{}", app.addr)])
    );

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

#[tokio::test]
async fn flash_sale_spread_over_two_replicas_on_one_database_sells_out_exactly() {
    let url = fresh_database("inventory_test").await;
    let first = InventoryApp::spawn_on(&url, &[]).await;
    let second = InventoryApp::spawn_on(&url, &[]).await;
    let output = run_capctl(
        &[&first, &second],
        true,
        &["--stock", "30", "--buyers", "300", "--concurrency", "32"],
    )
    .await;
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON report");

    assert_eq!(report["oversold"], 0);
    assert_eq!(report["invariant_holds"], true);
    assert_eq!(
        report["inventory_urls"],
        serde_json::json!([
            format!("http://{}", first.addr),
            format!("http://{}", second.addr)
        ])
    );
    assert_figures(&report);
    let held = report["held"].as_u64().expect("held");
    let refused = report["refused"].as_u64().expect("refused");
    let unavailable = report["unavailable"].as_u64().expect("unavailable");
    assert_eq!(held + refused + unavailable, 300, "{report}");
    assert_eq!(report["units_taken"], 30, "the stock sold out: {report}");

    // The database's word, through either replica's pool (the same database).
    let sku = report["skus"][0].as_str().expect("sku");
    let counters = first.counters(sku).await;
    assert_eq!((counters.reserved, counters.available), (30, 0));
    first.assert_ledger_replays().await;
}

#[tokio::test]
async fn flash_sale_prints_its_figures_and_no_progress_bar_when_piped() {
    let app = InventoryApp::spawn(&[]).await;
    let output = run_capctl(
        &[&app],
        false,
        &["--stock", "10", "--buyers", "50", "--concurrency", "8"],
    )
    .await;
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    for figure in [
        "holds/s",
        "requests/s",
        "p50",
        "p95",
        "p99",
        "503",
        "conflicts",
        "oversold   0",
        "HOLDS",
    ] {
        assert!(text.contains(figure), "{figure:?} missing from:\n{text}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("buyers") && !stderr.contains('\u{1b}'),
        "no progress bar when not on a terminal: {stderr:?}"
    );
}
