//! `capctl flash-sale`: many buyers race for little stock; nothing may be oversold.
//!
//! The buyers go round-robin to every `--inventory-url` given (several replicas
//! of the inventory on one database); the product is created through the first,
//! and the service counters (conflicts, retries, batch sizes) are summed over all.
//! A live progress bar (stderr, only on a terminal) shows the outcomes so far.
//!
//! Every buyer is a subject of its own (`buyer-<run>-<n>`, a token each,
//! minted before the race; past [`MAX_BUYER_SUBJECTS`] buyers share them
//! round-robin), so that no buyer comes near the per-subject write limit; the
//! products are created and read back with an `inventory:admin` token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde::Serialize;
use serde_json::json;

use crate::auth::Minter;
use crate::client::{ServiceClient, metric_sum, metric_sum_by};
use crate::latency::{Latencies, LatencySummary};

/// What to race.
#[derive(Debug, Clone, clap::Args)]
pub struct FlashSaleArgs {
    /// Units of the product on sale.
    #[arg(long, default_value_t = 100)]
    pub stock: i64,
    /// Buyers, each one reservation request.
    #[arg(long, default_value_t = 2000)]
    pub buyers: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Each buyer asks for 1..=max-quantity units (uniformly at random).
    #[arg(long, default_value_t = 1)]
    pub max_quantity: i64,
    /// Spread the buyers over this many products (1 = one hot product).
    #[arg(long, default_value_t = 1)]
    pub products: usize,
    /// Confirm each successful hold (held → sold), as a checkout would.
    #[arg(long)]
    pub confirm: bool,
}

/// The result of a flash sale, and the invariant it checked.
///
/// The lab (`crates/lab`, pg-sync-cost) and `make bench` read this as JSON:
/// fields are only ever added.
#[derive(Debug, Clone, Serialize)]
pub struct FlashSaleReport {
    pub skus: Vec<String>,
    /// The inventory replicas the buyers were spread over, round-robin.
    pub inventory_urls: Vec<String>,
    pub stock_per_product: i64,
    pub buyers: usize,
    pub concurrency: usize,
    /// Units held or sold, per the service's counters after the race.
    pub units_taken: i64,
    /// Units taken according to the buyers' `201` answers.
    pub units_acknowledged: i64,
    /// Units taken beyond the stock; the guarantee is that this is 0.
    pub oversold: i64,
    pub held: usize,
    pub confirmed: usize,
    /// `409`: not enough stock left.
    pub refused: usize,
    /// `503`: contention outlasted the retry budget, or the database was unreachable.
    pub unavailable: usize,
    /// Any other status, by code (must be empty).
    pub other: BTreeMap<u16, usize>,
    /// Version conflicts and retries the service counted during the race.
    pub conflicts: f64,
    pub retries: f64,
    /// The conflicts by their `cause` label.
    pub conflicts_by_cause: BTreeMap<String, f64>,
    /// Transactions of coalesced reservations the service ran during the race
    /// (`inventory_reservation_batch_size`; `None` when the service has no such metric).
    pub batches: Option<f64>,
    /// Requests per such transaction, on average.
    pub batch_size_mean: Option<f64>,
    pub elapsed_secs: f64,
    /// Every answer (`201`, `409`, `503`, …) per second, over the whole race.
    pub requests_per_sec: f64,
    /// From the start until the last `201` arrived: while there was stock to sell.
    pub selling_secs: f64,
    /// `201`s per second while there was stock to sell (`held / selling_secs`).
    pub holds_per_sec: f64,
    pub latency: LatencySummary,
    /// `oversold == 0`, the counters match the acknowledged holds, and no unexpected status.
    pub invariant_holds: bool,
}

enum Outcome {
    Held { quantity: i64, confirmed: bool },
    Refused,
    Unavailable,
    Other(u16),
}

/// Distinct buyer subjects at most: each holds (and confirms) once or a few
/// times, far below the per-subject write limit, and minting stays quick.
pub const MAX_BUYER_SUBJECTS: usize = 10_000;

pub async fn run(
    inventories: &[ServiceClient],
    args: &FlashSaleArgs,
    minter: &Minter,
    show_progress: bool,
) -> anyhow::Result<FlashSaleReport> {
    let inventory = minter.admin(
        inventories
            .first()
            .context("at least one inventory URL is needed")?,
    );
    ensure!(
        args.buyers > 0 && args.concurrency > 0 && args.products > 0,
        "buyers, concurrency and products must be positive"
    );
    ensure!(args.max_quantity >= 1, "max-quantity must be at least 1");
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let skus: Vec<String> = (0..args.products)
        .map(|i| format!("flash-{}-{i}", &run_id[..12]))
        .collect();
    // Each buyer's client: its own token, on its replica (round-robin).
    let buyers: Vec<ServiceClient> = minter
        .tokens(
            (0..args.buyers.min(MAX_BUYER_SUBJECTS))
                .map(|n| format!("buyer-{}-{n}", &run_id[..12])),
        )
        .into_iter()
        .enumerate()
        .map(|(n, token)| inventories[n % inventories.len()].with_token(token))
        .collect();
    for sku in &skus {
        inventory
            .send_paced(
                reqwest::Method::POST,
                "/v1/products",
                Some(&json!({"sku": sku, "name": "Flash sale item", "stock": args.stock})),
            )
            .await?
            .into_success()
            .with_context(|| format!("creating product {sku}"))?;
    }
    let before = scrape_all(inventories).await;

    let progress = progress_bar(show_progress, args.buyers);
    let started = Instant::now();
    let mut latencies = Latencies::default();
    let mut outcomes = Vec::with_capacity(args.buyers);
    let mut tally = Tally::default();
    {
        let buyers = futures::stream::iter(0..args.buyers)
            .map(|buyer| {
                let sku = &skus[buyer % skus.len()];
                // Buyer n's own subject and replica (beyond the pool of
                // subjects, they are reused round-robin).
                let client = &buyers[buyer % buyers.len()];
                let quantity = rand::rng().random_range(1..=args.max_quantity);
                buy(client, sku, quantity, args.confirm)
            })
            .buffer_unordered(args.concurrency);
        futures::pin_mut!(buyers);
        while let Some(result) = buyers.next().await {
            let (outcome, elapsed) = result?;
            latencies.record(elapsed);
            tally.count(&outcome, started.elapsed());
            outcomes.push(outcome);
            progress.set_message(tally.to_string());
            progress.inc(1);
        }
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let after = scrape_all(inventories).await;
    let delta = |name: &str| metric_sum(&after, name) - metric_sum(&before, name);
    let mut conflicts_by_cause = metric_sum_by(&after, CONFLICTS, "cause");
    for (cause, earlier) in metric_sum_by(&before, CONFLICTS, "cause") {
        *conflicts_by_cause.entry(cause).or_default() -= earlier;
    }
    conflicts_by_cause.retain(|_, count| *count > 0.0);
    let batched = after.contains(BATCH_SIZE);
    let batches = batched.then(|| delta(&format!("{BATCH_SIZE}_count")));
    let batch_size_mean = batches
        .filter(|count| *count > 0.0)
        .map(|count| delta(&format!("{BATCH_SIZE}_sum")) / count);
    let mut units_taken = 0;
    let mut oversold = 0;
    for sku in &skus {
        let product = inventory
            .get(&format!("/v1/products/{sku}"))
            .await?
            .into_success()?;
        let taken = product["reserved"].as_i64().unwrap_or_default()
            + product["sold"].as_i64().unwrap_or_default();
        units_taken += taken;
        oversold += (taken - args.stock).max(0);
    }

    let selling = tally.last_hold.unwrap_or(elapsed);
    let mut report = FlashSaleReport {
        skus,
        inventory_urls: inventories.iter().map(|client| client.url("")).collect(),
        stock_per_product: args.stock,
        buyers: args.buyers,
        concurrency: args.concurrency,
        units_taken,
        units_acknowledged: 0,
        oversold,
        held: 0,
        confirmed: 0,
        refused: 0,
        unavailable: 0,
        other: BTreeMap::new(),
        conflicts: delta(CONFLICTS),
        retries: delta("inventory_transaction_retries_total"),
        conflicts_by_cause,
        batches,
        batch_size_mean,
        elapsed_secs: elapsed.as_secs_f64(),
        requests_per_sec: args.buyers as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        selling_secs: selling.as_secs_f64(),
        holds_per_sec: tally.held as f64 / selling.as_secs_f64().max(f64::EPSILON),
        latency: latencies.summary(),
        invariant_holds: false,
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Held {
                quantity,
                confirmed,
            } => {
                report.held += 1;
                report.confirmed += usize::from(confirmed);
                report.units_acknowledged += quantity;
            }
            Outcome::Refused => report.refused += 1,
            Outcome::Unavailable => report.unavailable += 1,
            Outcome::Other(status) => *report.other.entry(status).or_default() += 1,
        }
    }
    report.invariant_holds = report.oversold == 0
        && report.units_taken == report.units_acknowledged
        && report.other.is_empty();
    Ok(report)
}

/// The service's counter of lost compare-and-sets and serialization failures.
const CONFLICTS: &str = "inventory_transaction_conflicts_total";
/// The service's histogram of requests per coalesced transaction.
const BATCH_SIZE: &str = "inventory_reservation_batch_size";

/// Every replica's `/metrics` text, one after the other (a replica that does
/// not answer adds nothing: the figures are then lower bounds).
async fn scrape_all(inventories: &[ServiceClient]) -> String {
    let mut text = String::new();
    for inventory in inventories {
        text.push_str(&inventory.metrics().await.unwrap_or_default());
        text.push('\n');
    }
    text
}

/// The outcomes so far, for the progress bar and the selling window.
#[derive(Debug, Default)]
struct Tally {
    held: usize,
    refused: usize,
    unavailable: usize,
    other: usize,
    /// When the last `201` arrived, since the start.
    last_hold: Option<Duration>,
}

impl Tally {
    fn count(&mut self, outcome: &Outcome, at: Duration) {
        match outcome {
            Outcome::Held { .. } => {
                self.held += 1;
                self.last_hold = Some(at);
            }
            Outcome::Refused => self.refused += 1,
            Outcome::Unavailable => self.unavailable += 1,
            Outcome::Other(_) => self.other += 1,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "held {} · sold out {} · 503 {}",
            self.held, self.refused, self.unavailable
        )?;
        if self.other > 0 {
            write!(f, " · other {}", self.other)?;
        }
        Ok(())
    }
}

/// A bar over the buyers with the outcomes so far; hidden unless asked for.
fn progress_bar(show: bool, buyers: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(buyers as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} buyers {pos}/{len} [{bar:30}] {per_sec} eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

async fn buy(
    inventory: &ServiceClient,
    sku: &str,
    quantity: i64,
    confirm: bool,
) -> anyhow::Result<(Outcome, Duration)> {
    let started = Instant::now();
    let answer = inventory
        .post(
            "/v1/reservations",
            &json!({"items": [{"sku": sku, "quantity": quantity}]}),
        )
        .await?;
    let elapsed = started.elapsed();
    let outcome = match answer.status.as_u16() {
        201 => {
            let mut confirmed = false;
            if confirm && let Some(id) = answer.body["id"].as_str() {
                confirmed = inventory
                    .post(&format!("/v1/reservations/{id}/confirm"), &json!({}))
                    .await?
                    .is_success();
            }
            Outcome::Held {
                quantity,
                confirmed,
            }
        }
        409 => Outcome::Refused,
        503 => Outcome::Unavailable,
        other => Outcome::Other(other),
    };
    Ok((outcome, elapsed))
}

impl std::fmt::Display for FlashSaleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "flash sale: {} buyers, {} in flight, {} unit(s) of stock on {} product(s), {} replica(s)",
            self.buyers,
            self.concurrency,
            self.stock_per_product,
            self.skus.len(),
            self.inventory_urls.len()
        )?;
        writeln!(
            f,
            "  taken      {} units ({} holds, {} confirmed)",
            self.units_taken, self.held, self.confirmed
        )?;
        writeln!(f, "  oversold   {}   (must be 0)", self.oversold)?;
        writeln!(f, "  refused    {}   (409 sold out)", self.refused)?;
        writeln!(
            f,
            "  503        {}   (contention or database unavailable)",
            self.unavailable
        )?;
        if !self.other.is_empty() {
            writeln!(f, "  other      {:?}   (unexpected)", self.other)?;
        }
        write!(f, "  conflicts  {}", self.conflicts)?;
        if !self.conflicts_by_cause.is_empty() {
            let causes: Vec<String> = self
                .conflicts_by_cause
                .iter()
                .map(|(cause, count)| format!("{cause} {count}"))
                .collect();
            write!(f, " ({})", causes.join(", "))?;
        }
        writeln!(f, ", retries {}", self.retries)?;
        match (self.batches, self.batch_size_mean) {
            (Some(batches), Some(mean)) => writeln!(
                f,
                "  batches    {batches} transactions, {mean:.1} requests each on average"
            )?,
            (Some(batches), None) => writeln!(f, "  batches    {batches}")?,
            _ => {}
        }
        writeln!(
            f,
            "  throughput {:.0} holds/s while selling ({:.2} s), {:.0} requests/s over {:.2} s",
            self.holds_per_sec, self.selling_secs, self.requests_per_sec, self.elapsed_secs
        )?;
        writeln!(f, "  latency    {}", self.latency)?;
        write!(
            f,
            "  invariant  {}: oversold = 0, counters = acknowledged holds ({}), no unexpected status",
            if self.invariant_holds {
                "HOLDS"
            } else {
                "VIOLATED"
            },
            self.units_acknowledged
        )
    }
}
