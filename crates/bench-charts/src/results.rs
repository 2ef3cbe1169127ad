//! The raw results of a `make bench` run, as rows for the charts.
//!
//! File names and fields are those `scripts/bench.sh` writes (and
//! `bench/report.py` reads): `inventory-<strategy>-<workload>-c<n>.service.json`
//! (`capctl reserve-load`), `ceiling-<workload>-c<n>.json` (pgbench running the
//! single guarded `UPDATE`), `flash-sale-<cell>.json` (`capctl flash-sale` and
//! how the cell was set up; not `<cell>.capctl.json`, capctl's output alone) and `timeline-lag.json` (`capctl fanout`).

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// Everything the charts draw; empty where a section did not run.
#[derive(Debug, Default)]
pub struct Results {
    /// The service's reservations per second, per strategy, workload and concurrency.
    pub service: Vec<ThroughputPoint>,
    /// The single-statement ceiling, per workload and pgbench clients.
    pub ceiling: Vec<CeilingPoint>,
    /// One per flash-sale cell, in the order the bench ran them.
    pub flash_sales: Vec<FlashSaleCell>,
    /// The fan-out lag histogram of the timeline section.
    pub lag: Vec<LagBucket>,
    /// Which run the results are from (`meta.json`), for the charts' footers.
    pub run: Option<Run>,
}

/// When and where the run was made.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Run {
    pub started: String,
    pub cpus: u32,
}

/// `capctl reserve-load` in one cell of the inventory section.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputPoint {
    pub strategy: String,
    /// `hot` (one sku) or `spread` (10,000).
    pub workload: String,
    pub in_flight: u32,
    pub per_sec: f64,
}

/// pgbench running only the guarded `UPDATE` of one unit, autocommit, prepared.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CeilingPoint {
    pub workload: String,
    pub clients: u32,
    /// Statements (each one unit taken) per second.
    pub tps: f64,
}

/// One `capctl flash-sale` run and how its inventory was set up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FlashSaleCell {
    pub strategy: String,
    /// `on` or `off` (`RESERVATION_COALESCING`).
    pub coalescing: String,
    /// Inventory replicas on the one database.
    pub replicas: u32,
    pub report: FlashSaleReport,
}

impl FlashSaleCell {
    /// How the cell is named on a chart's axis.
    pub fn label(&self) -> String {
        if self.replicas > 1 {
            format!("{} {} ×{}", self.strategy, self.coalescing, self.replicas)
        } else {
            format!("{} {}", self.strategy, self.coalescing)
        }
    }
}

/// The fields of `capctl flash-sale --json` the charts use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FlashSaleReport {
    pub holds_per_sec: f64,
    pub latency: Latency,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Rows written with a lag at most `le_secs` and above the previous bound.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct LagBucket {
    /// `None`: above every bound of the histogram.
    pub le_secs: Option<f64>,
    pub count: f64,
}

#[derive(Deserialize)]
struct ServiceCell {
    reservations_per_sec: f64,
}

#[derive(Deserialize)]
struct FanoutReport {
    #[serde(default)]
    lag_histogram: Vec<LagBucket>,
}

/// Strategies in the order the bench and the report show them.
pub fn strategy_rank(strategy: &str) -> usize {
    ["optimistic", "pessimistic", "guarded"]
        .iter()
        .position(|s| *s == strategy)
        .unwrap_or(usize::MAX)
}

impl Results {
    /// Reads every result file under `raw`; a file that does not parse is an
    /// error (a chart must never quietly lose a cell).
    pub fn read(raw: &Path) -> anyhow::Result<Self> {
        let mut results = Self::default();
        let mut entries: Vec<_> = std::fs::read_dir(raw)
            .with_context(|| format!("reading {}", raw.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if let Some(cell) = name
                .strip_prefix("inventory-")
                .and_then(|rest| rest.strip_suffix(".service.json"))
            {
                let Some((strategy, workload, in_flight)) = parse_cell(cell) else {
                    continue;
                };
                let measured: ServiceCell = read_json(&path)?;
                results.service.push(ThroughputPoint {
                    strategy,
                    workload,
                    in_flight,
                    per_sec: measured.reservations_per_sec,
                });
            } else if name.starts_with("ceiling-") && name.ends_with(".json") {
                results.ceiling.push(read_json(&path)?);
            } else if name.starts_with("flash-sale-")
                && name.ends_with(".json")
                && !name.ends_with(".capctl.json")
            {
                // `<cell>.capctl.json` is capctl's own output, inside `<cell>.json` too.
                results.flash_sales.push(read_json(&path)?);
            } else if name == "meta.json" {
                results.run = read_json(&path).ok();
            } else if name == "timeline-lag.json" {
                results.lag = read_json::<FanoutReport>(&path)?.lag_histogram;
            }
        }
        results.service.sort_by(|a, b| {
            (strategy_rank(&a.strategy), &a.workload, a.in_flight).cmp(&(
                strategy_rank(&b.strategy),
                &b.workload,
                b.in_flight,
            ))
        });
        results
            .ceiling
            .sort_by(|a, b| (&a.workload, a.clients).cmp(&(&b.workload, b.clients)));
        results.flash_sales.sort_by(|a, b| {
            (a.replicas, strategy_rank(&a.strategy), &b.coalescing).cmp(&(
                b.replicas,
                strategy_rank(&b.strategy),
                &a.coalescing,
            ))
        });
        Ok(results)
    }
}

/// `<strategy>-<workload>-c<n>`.
fn parse_cell(cell: &str) -> Option<(String, String, u32)> {
    let mut parts = cell.split('-');
    let strategy = parts.next()?.to_owned();
    let workload = parts.next()?.to_owned();
    let in_flight = parts.next()?.strip_prefix('c')?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((strategy, workload, in_flight))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A raw directory with one file of every kind, as `bench.sh` writes them.
    pub(crate) fn sample_raw(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bench-charts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |file: &str, text: &str| std::fs::write(dir.join(file), text).expect("write");
        for (strategy, base) in [("optimistic", 400.0), ("guarded", 600.0)] {
            for (c, factor) in [(1, 1.0), (16, 2.0), (64, 2.5)] {
                for workload in ["hot", "spread"] {
                    write(
                        &format!("inventory-{strategy}-{workload}-c{c}.service.json"),
                        &format!(
                            r#"{{"reservations_per_sec": {}, "concurrency": {c}}}"#,
                            base * factor
                        ),
                    );
                }
            }
        }
        write("inventory-optimistic-hot-c1.oversold", "0");
        for (c, tps) in [(1, 900.0), (16, 2500.0), (64, 2700.0)] {
            for workload in ["hot", "spread"] {
                write(
                    &format!("ceiling-{workload}-c{c}.json"),
                    &format!(r#"{{"workload": "{workload}", "clients": {c}, "tps": {tps}}}"#),
                );
            }
        }
        for (strategy, coalescing, replicas) in [
            ("optimistic", "on", 1),
            ("optimistic", "off", 1),
            ("optimistic", "on", 2),
        ] {
            write(
                &format!("flash-sale-{strategy}-{coalescing}-r{replicas}.json"),
                &format!(
                    r#"{{"strategy": "{strategy}", "coalescing": "{coalescing}", "replicas": {replicas},
                        "oversold_db": 0,
                        "report": {{"holds_per_sec": 3000.0, "requests_per_sec": 9000.0,
                                   "latency": {{"count": 10, "p50_ms": 3.5, "p95_ms": 12.0, "p99_ms": 40.0, "max_ms": 80.0}}}}}}"#
                ),
            );
        }
        write(
            "flash-sale-optimistic-on-r1.capctl.json",
            r#"{"holds_per_sec": 3000.0}"#,
        );
        write(
            "timeline-lag.json",
            r#"{"lag_p99_secs": 0.25, "lag_histogram": [
                {"le_secs": 0.01, "count": 10.0}, {"le_secs": 0.05, "count": 80.0},
                {"le_secs": 0.25, "count": 9.0}, {"le_secs": null, "count": 1.0}]}"#,
        );
        write(
            "meta.json",
            r#"{"started": "2026-11-30T12:00:00Z", "cpus": 2, "secs": 10}"#,
        );
        dir
    }

    #[test]
    fn every_kind_of_result_is_read_in_the_report_order() {
        let dir = sample_raw("read");
        let results = Results::read(&dir).expect("read");
        assert_eq!(results.service.len(), 12);
        assert_eq!(results.service[0].strategy, "optimistic");
        assert_eq!(results.service[0].workload, "hot");
        assert_eq!(results.service[0].in_flight, 1);
        assert_eq!(results.ceiling.len(), 6);
        let labels: Vec<String> = results
            .flash_sales
            .iter()
            .map(FlashSaleCell::label)
            .collect();
        assert_eq!(
            labels,
            ["optimistic on", "optimistic off", "optimistic on ×2"]
        );
        assert_eq!(results.lag.len(), 4);
        assert_eq!(results.lag[3].le_secs, None);
        assert_eq!(results.run.as_ref().map(|run| run.cpus), Some(2));
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn cell_names_parse() {
        assert_eq!(
            parse_cell("guarded-spread-c64"),
            Some(("guarded".to_owned(), "spread".to_owned(), 64))
        );
        assert_eq!(parse_cell("guarded-spread"), None);
        assert_eq!(parse_cell("guarded-spread-c64-x"), None);
    }
}
