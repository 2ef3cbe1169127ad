//! One function per chart; each writes one SVG file and says where.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordi32;
use plotters::prelude::*;

use crate::results::{CeilingPoint, FlashSaleCell, LagBucket, Results, Run, ThroughputPoint};

const SIZE: (u32, u32) = (960, 540);
const FONT: &str = "sans-serif";
/// One colour per strategy, then per percentile (colour-blind safe: Okabe–Ito).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Every chart the results have data for, into `out` (created if missing).
pub fn render_all(results: &Results, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let footer = footer(results.run.as_ref());
    let mut written = Vec::new();
    for workload in ["hot", "spread"] {
        let service: Vec<&ThroughputPoint> = results
            .service
            .iter()
            .filter(|p| p.workload == workload)
            .collect();
        let ceiling: Vec<&CeilingPoint> = results
            .ceiling
            .iter()
            .filter(|p| p.workload == workload)
            .collect();
        if !service.is_empty() || !ceiling.is_empty() {
            let path = out.join(format!("inventory-throughput-{workload}.svg"));
            throughput(&path, &footer, workload, &service, &ceiling)?;
            written.push(path);
        }
    }
    if !results.flash_sales.is_empty() {
        let path = out.join("flash-sale-latency.svg");
        flash_sale_latency(&path, &footer, &results.flash_sales)?;
        written.push(path);
        let path = out.join("flash-sale-throughput.svg");
        let ceiling = results
            .ceiling
            .iter()
            .filter(|p| p.workload == "hot")
            .max_by_key(|p| p.clients);
        flash_sale_throughput(&path, &footer, &results.flash_sales, ceiling)?;
        written.push(path);
    }
    if results.lag.iter().any(|bucket| bucket.count > 0.0) {
        let path = out.join("fanout-lag.svg");
        fanout_lag(&path, &footer, &results.lag)?;
        written.push(path);
    }
    Ok(written)
}

/// Which run a chart is from, written at its bottom left.
fn footer(run: Option<&Run>) -> String {
    match run {
        Some(run) => format!(
            "make bench, run started {}, {} CPU(s); raw results in bench/results/raw/",
            run.started, run.cpus
        ),
        None => "make bench; raw results in bench/results/raw/".to_owned(),
    }
}

/// A white canvas with the run's footer.
fn canvas<'a>(path: &'a Path, footer: &str) -> DrawingArea<SVGBackend<'a>, Shift> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    // Drawing on an SVG canvas only appends elements to a string: it cannot fail.
    let _ = root.fill(&WHITE);
    let height = i32::try_from(SIZE.1).unwrap_or(i32::MAX);
    let _ = root.draw(&Text::new(
        footer.to_owned(),
        (8, height - 16),
        (FONT, 13).into_font().color(&BLACK.mix(0.6)),
    ));
    root
}

/// Holds per second against requests in flight, one line per strategy, and the
/// single-statement ceiling (pgbench, one guarded `UPDATE` per unit) dashed.
pub fn throughput(
    path: &Path,
    footer: &str,
    workload: &str,
    service: &[&ThroughputPoint],
    ceiling: &[&CeilingPoint],
) -> anyhow::Result<()> {
    let mut in_flight: Vec<u32> = service
        .iter()
        .map(|p| p.in_flight)
        .chain(ceiling.iter().map(|p| p.clients))
        .collect();
    in_flight.sort_unstable();
    in_flight.dedup();
    let max_x = f64::from(*in_flight.last().unwrap_or(&64));
    let max_y = service
        .iter()
        .map(|p| p.per_sec)
        .chain(ceiling.iter().map(|p| p.tps))
        .fold(1.0, f64::max);
    let what = if workload == "hot" {
        "one hot product"
    } else {
        "spread products"
    };
    let root = canvas(path, footer);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Inventory: holds/s against requests in flight, {what}"),
            (FONT, 26),
        )
        .margin(16)
        .margin_bottom(28)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0.8f64..max_x * 1.25)
                .log_scale()
                .with_key_points(in_flight.iter().map(|c| f64::from(*c)).collect()),
            0f64..max_y * 1.15,
        )?;
    chart
        .configure_mesh()
        .x_desc("requests in flight (pgbench: clients)")
        .y_desc("holds per second")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .draw()?;

    let mut strategies: Vec<&str> = service.iter().map(|p| p.strategy.as_str()).collect();
    strategies.dedup();
    for (i, strategy) in strategies.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = service
            .iter()
            .filter(|p| p.strategy == *strategy)
            .map(|p| (f64::from(p.in_flight), p.per_sec))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))?
            .label(format!("service, {strategy}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
    }
    if !ceiling.is_empty() {
        let points: Vec<(f64, f64)> = ceiling
            .iter()
            .map(|p| (f64::from(p.clients), p.tps))
            .collect();
        chart
            .draw_series(DashedLineSeries::new(
                points.clone(),
                10,
                6,
                BLACK.stroke_width(2),
            ))?
            .label("ceiling: one guarded UPDATE per unit (pgbench)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
        chart.draw_series(
            points
                .iter()
                .map(|p| Cross::new(*p, 5, BLACK.stroke_width(2))),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// p50, p95 and p99 of every flash-sale cell, grouped bars on a log scale.
pub fn flash_sale_latency(
    path: &Path,
    footer: &str,
    cells: &[FlashSaleCell],
) -> anyhow::Result<()> {
    let values: Vec<[f64; 3]> = cells
        .iter()
        .map(|c| {
            let l = c.report.latency;
            [l.p50_ms, l.p95_ms, l.p99_ms].map(|v| v.max(0.01))
        })
        .collect();
    let low = values
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min)
        / 2.0;
    let high = values.iter().flatten().copied().fold(1.0, f64::max) * 2.0;
    let labels: Vec<String> = cells.iter().map(FlashSaleCell::label).collect();
    let root = canvas(path, footer);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Flash sale: latency percentiles per strategy and coalescing",
            (FONT, 26),
        )
        .margin(16)
        .margin_bottom(28)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(category_axis(cells.len()), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("strategy, RESERVATION_COALESCING (×2: two replicas on one database)")
        .y_desc("latency, ms (log scale)")
        .x_label_formatter(&|v| category_label(&labels, *v))
        .y_label_formatter(&|v| format!("{v}"))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .draw()?;
    for (p, name) in ["p50", "p95", "p99"].iter().enumerate() {
        let colour = PALETTE[p % PALETTE.len()];
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let left = 0.15 + 0.23 * p as f64;
                Rectangle::new(
                    [(at(i, left), low), (at(i, left + 0.21), v[p])],
                    colour.filled(),
                )
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Holds per second while selling, per flash-sale cell, with the
/// single-statement ceiling on one hot row as a line.
pub fn flash_sale_throughput(
    path: &Path,
    footer: &str,
    cells: &[FlashSaleCell],
    ceiling: Option<&CeilingPoint>,
) -> anyhow::Result<()> {
    let high = cells
        .iter()
        .map(|c| c.report.holds_per_sec)
        .chain(ceiling.map(|c| c.tps))
        .fold(1.0, f64::max)
        * 1.15;
    let labels: Vec<String> = cells.iter().map(FlashSaleCell::label).collect();
    let root = canvas(path, footer);
    let mut chart = ChartBuilder::on(&root)
        .caption("Flash sale: holds/s while there is stock", (FONT, 26))
        .margin(16)
        .margin_bottom(28)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(category_axis(cells.len()), 0f64..high)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("strategy, RESERVATION_COALESCING (×2: two replicas on one database)")
        .y_desc("holds per second")
        .x_label_formatter(&|v| category_label(&labels, *v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .draw()?;
    let colour = PALETTE[0];
    chart
        .draw_series(cells.iter().enumerate().map(|(i, c)| {
            Rectangle::new(
                [(at(i, 0.2), 0.0), (at(i, 0.8), c.report.holds_per_sec)],
                colour.filled(),
            )
        }))?
        .label("service")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    if let Some(ceiling) = ceiling {
        chart
            .draw_series(DashedLineSeries::new(
                [(0, ceiling.tps), (at(cells.len(), 0.0), ceiling.tps)],
                10,
                6,
                BLACK.stroke_width(2),
            ))?
            .label(format!(
                "ceiling: one guarded UPDATE per unit, hot row, {} clients",
                ceiling.clients
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The share of timeline rows per lag bucket of the worker's histogram.
pub fn fanout_lag(path: &Path, footer: &str, buckets: &[LagBucket]) -> anyhow::Result<()> {
    let total: f64 = buckets.iter().map(|b| b.count).sum::<f64>().max(1.0);
    let shares: Vec<f64> = buckets.iter().map(|b| 100.0 * b.count / total).collect();
    let mut labels = Vec::with_capacity(buckets.len());
    let mut previous: Option<f64> = None;
    for bucket in buckets {
        labels.push(match (previous, bucket.le_secs) {
            (_, Some(le)) => format!("≤{}", seconds(le)),
            (Some(last), None) => format!(">{}", seconds(last)),
            (None, None) => "all".to_owned(),
        });
        previous = bucket.le_secs.or(previous);
    }
    let root = canvas(path, footer);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Timeline fan-out lag, post accepted → row written ({total:.0} rows)"),
            (FONT, 26),
        )
        .margin(16)
        .margin_bottom(28)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(category_axis(buckets.len()), 0f64..100f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("lag bucket (upper bound)")
        .y_desc("share of rows, %")
        .x_label_formatter(&|v| category_label(&labels, *v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .draw()?;
    let colour = PALETTE[2];
    chart.draw_series(shares.iter().enumerate().map(|(i, share)| {
        Rectangle::new([(at(i, 0.1), 0.0), (at(i, 0.9), *share)], colour.filled())
    }))?;
    let mut cumulative = 0.0;
    let line: Vec<(i32, f64)> = shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            cumulative += share;
            (at(i, 0.5), cumulative)
        })
        .collect();
    chart
        .draw_series(LineSeries::new(line, BLACK.stroke_width(2)))?
        .label("cumulative")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The width of one category on a category axis (integer coordinates: plotters
/// formats the labels of an integer axis with key points, not of a float one).
const CATEGORY: i32 = 1000;

/// `n` categories on `0..n × CATEGORY`, each labelled at its middle.
fn category_axis(n: usize) -> WithKeyPoints<RangedCoordi32> {
    let n = i32::try_from(n.max(1)).unwrap_or(i32::MAX / CATEGORY);
    (0..n * CATEGORY).with_key_points((0..n).map(|i| i * CATEGORY + CATEGORY / 2).collect())
}

/// The x coordinate `fraction` of the way into category `i`.
fn at(i: usize, fraction: f64) -> i32 {
    let i = i32::try_from(i).unwrap_or(i32::MAX / CATEGORY);
    i * CATEGORY + (fraction * f64::from(CATEGORY)).round() as i32
}

fn category_label(labels: &[String], v: i32) -> String {
    usize::try_from(v.div_euclid(CATEGORY))
        .ok()
        .and_then(|i| labels.get(i))
        .cloned()
        .unwrap_or_default()
}

fn seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{} ms", secs * 1000.0)
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample_raw;

    #[test]
    fn every_chart_is_drawn_as_svg_with_its_text() {
        let dir = sample_raw("render");
        let results = Results::read(&dir).expect("read");
        let out = dir.join("charts");
        let written = render_all(&results, &out).expect("render");
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "inventory-throughput-hot.svg",
                "inventory-throughput-spread.svg",
                "flash-sale-latency.svg",
                "flash-sale-throughput.svg",
                "fanout-lag.svg"
            ]
        );
        for path in &written {
            let svg = std::fs::read_to_string(path).expect("svg");
            assert!(svg.starts_with("<svg"), "{}", path.display());
            assert!(svg.contains("<text"), "{} has no text", path.display());
        }
        let hot = std::fs::read_to_string(out.join("inventory-throughput-hot.svg")).expect("svg");
        assert!(hot.contains("ceiling"));
        assert!(hot.contains("service, guarded"));
        let latency = std::fs::read_to_string(out.join("flash-sale-latency.svg")).expect("svg");
        assert!(latency.contains("optimistic off"));
        assert!(latency.contains("run started 2026-11-30T12:00:00Z"));
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn an_empty_run_draws_nothing() {
        let out = std::env::temp_dir().join(format!("bench-charts-empty-{}", std::process::id()));
        assert!(
            render_all(&Results::default(), &out)
                .expect("render")
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(out);
    }
}
