//! Scenario 13: the cost of synchronous replication. The same flash sale
//! (one hot product) and the same spread workload (100 products), driven by
//! `capctl flash-sale`, against the inventory on one PostgreSQL server and
//! against the inventory on the 3-node cluster (through HAProxy, each commit
//! confirmed by a standby), in the same run. A measurement: the checks are
//! the invariants, not the speed.

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::lab::Lab;
use crate::report::Report;
use crate::services::Service;

const STOCK: &str = "3000";
const BUYERS: &str = "6000";
const CONCURRENCY: &str = "32";

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    report.step(format!(
        "`capctl flash-sale --stock {STOCK} --buyers {BUYERS} --concurrency {CONCURRENCY}` (hot: 1 product; spread: `--products 100`) against each inventory"
    ));
    let mut rows = Vec::new();
    let mut all_hold = true;
    for (workload, products) in [
        ("flash sale, 1 hot product", "1"),
        ("spread, 100 products", "100"),
    ] {
        for (target, service) in [
            ("one server", &lab.inventory),
            ("3 nodes, synchronous", &lab.inventory_ha),
        ] {
            let sale = flash_sale(lab, service, products).await?;
            let holds = sale["invariant_holds"] == true && sale["oversold"] == 0;
            all_hold &= holds;
            rows.push(vec![
                workload.to_owned(),
                target.to_owned(),
                format!(
                    "{:.0}",
                    sale["requests_per_sec"].as_f64().unwrap_or_default()
                ),
                format!(
                    "{:.1}",
                    sale["latency"]["p50_ms"].as_f64().unwrap_or_default()
                ),
                format!(
                    "{:.1}",
                    sale["latency"]["p99_ms"].as_f64().unwrap_or_default()
                ),
                sale["unavailable"].to_string(),
                sale["oversold"].to_string(),
            ]);
        }
    }
    report.table(
        &[
            "workload",
            "PostgreSQL",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "503",
            "oversold",
        ],
        rows,
    );
    report.check(
        "both sales on both databases kept the invariant: nothing oversold",
        all_hold,
    );
    Ok(())
}

async fn flash_sale(lab: &Lab, service: &Service, products: &str) -> anyhow::Result<Value> {
    let output = Command::new(lab.paths.bin_dir.join("capctl"))
        .args(["flash-sale", "--json", "--stock", STOCK, "--buyers", BUYERS])
        .args(["--concurrency", CONCURRENCY, "--products", products])
        .args(["--inventory-url", &service.url("")])
        // capctl mints its buyers' tokens with the lab's signing key.
        .env("CAPCTL_SIGNING_KEY", lab.signing_key())
        .output()
        .await
        .context("run capctl flash-sale")?;
    if !output.status.success() {
        bail!(
            "capctl flash-sale failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("capctl's JSON report")
}
