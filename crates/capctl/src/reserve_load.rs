//! `capctl reserve-load`: hold stock on existing products as fast as the
//! inventory service allows, for a fixed time; the inventory half of `make bench`.
//!
//! Unlike `flash-sale` it creates nothing: the products `<prefix>0` …
//! `<prefix><skus - 1>` must exist with enough stock (`make bench` inserts
//! them with psql, 10,000 of them being slow to create through the API). Each
//! request holds one unit of a product chosen uniformly at random. The
//! invariant (nothing oversold) is checked by the caller against the
//! database, which is cheaper than reading 10,000 products back.
//!
//! The requests go round-robin from `--buyers` subjects, a token each minted
//! before the run, so that no subject comes near the per-subject write limit
//! (1,000 buyers allow 50,000 holds/s at the default 50/s each).

use std::sync::Arc;

use rand::Rng;
use serde::Serialize;
use serde_json::json;

use crate::auth::Minter;
use crate::client::{ServiceClient, metric_sum};
use crate::load::{LoadShape, LoadSummary, closed_loop};

/// Which products to hold, and how hard.
#[derive(Debug, Clone, clap::Args)]
pub struct ReserveLoadArgs {
    /// Products are `<sku-prefix>0` … `<sku-prefix><skus - 1>`.
    #[arg(long)]
    pub sku_prefix: String,
    /// How many products (1 = one hot product).
    #[arg(long, default_value_t = 1)]
    pub skus: usize,
    /// Hold length asked for (long enough that nothing expires during the run).
    #[arg(long, default_value_t = 3600)]
    pub ttl_seconds: i64,
    /// Simulated buyers, each its own subject; the requests go round-robin.
    #[arg(long, default_value_t = 1000)]
    pub buyers: usize,
    #[command(flatten)]
    pub shape: LoadShape,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReserveLoadReport {
    pub sku_prefix: String,
    pub skus: usize,
    /// Subjects the requests were spread over.
    pub buyers: usize,
    #[serde(flatten)]
    pub load: LoadSummary,
    /// `201`s: units held (one each).
    pub held: u64,
    pub reservations_per_sec: f64,
    /// `409`: not enough stock (should be 0 with enough stock).
    pub refused: u64,
    /// `503`: contention outlasted the retry budget.
    pub unavailable: u64,
    /// Any other status, or no answer (0).
    pub other: u64,
    /// Version conflicts and retries the service counted during the window
    /// (and the warm-up: the counters are read before and after the run).
    pub conflicts: f64,
    pub retries: f64,
}

pub async fn run(
    inventory: &ServiceClient,
    args: &ReserveLoadArgs,
    minter: &Minter,
) -> anyhow::Result<ReserveLoadReport> {
    anyhow::ensure!(
        args.skus > 0 && args.buyers > 0,
        "skus and buyers must be positive"
    );
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let buyers = Arc::new(minter.clients(
        inventory,
        (0..args.buyers).map(|n| format!("load-{}-{n}", &run_id[..8])),
    ));
    let before = inventory.metrics().await?;
    let skus: Arc<Vec<String>> = Arc::new(
        (0..args.skus)
            .map(|i| format!("{}{i}", args.sku_prefix))
            .collect(),
    );
    let ttl = args.ttl_seconds;
    let measured = closed_loop(&args.shape, move |n| {
        let client = buyers[n as usize % buyers.len()].clone();
        let skus = skus.clone();
        async move {
            let sku = &skus[rand::rng().random_range(0..skus.len())];
            let body = json!({"items": [{"sku": sku, "quantity": 1}], "ttl_seconds": ttl});
            Ok(match client.post("/v1/reservations", &body).await {
                Ok(answer) => answer.status.as_u16(),
                Err(_) => 0,
            })
        }
    })
    .await?;
    let after = inventory.metrics().await?;
    let delta = |name| metric_sum(&after, name) - metric_sum(&before, name);
    let held = measured.count_of(201);
    let (refused, unavailable) = (measured.count_of(409), measured.count_of(503));
    Ok(ReserveLoadReport {
        sku_prefix: args.sku_prefix.clone(),
        skus: args.skus,
        buyers: args.buyers,
        load: LoadSummary::new(&args.shape, &measured),
        held,
        reservations_per_sec: measured.rate_of(held),
        refused,
        unavailable,
        other: measured.count() - held - refused - unavailable,
        conflicts: delta("inventory_transaction_conflicts_total"),
        retries: delta("inventory_transaction_retries_total"),
    })
}

impl std::fmt::Display for ReserveLoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "reserve load: {} product(s) `{}N`, {} in flight, {:.1} s",
            self.skus, self.sku_prefix, self.load.concurrency, self.load.window_secs
        )?;
        writeln!(
            f,
            "  held       {} ({:.0} reservations/s)",
            self.held, self.reservations_per_sec
        )?;
        writeln!(
            f,
            "  refused    {}, 503 {}, other {}",
            self.refused, self.unavailable, self.other
        )?;
        writeln!(
            f,
            "  conflicts  {}, retries {}",
            self.conflicts, self.retries
        )?;
        write!(f, "  latency    {}", self.load.latency)
    }
}
