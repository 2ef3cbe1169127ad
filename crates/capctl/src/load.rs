//! A closed-loop load runner: a fixed number of workers, each sending its next
//! request as soon as the previous one answered, for a fixed time.
//!
//! Used by the `make bench` subcommands (`reserve-load`, `post-load`,
//! `read-load`, `cql-insert-loop`). A warm-up period (connections opening,
//! caches filling) runs first and is not counted; then only requests that
//! both start and finish inside the measured window count, so the rate is
//! `completed / window`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::latency::{Latencies, LatencySummary};

/// How long and how hard to push.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadShape {
    /// Requests in flight at once (one closed-loop worker each).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
}

/// What a window of load measured: latencies and a count per outcome.
#[derive(Debug, Clone)]
pub struct Measured<K> {
    pub latencies: Latencies,
    pub outcomes: BTreeMap<K, u64>,
    pub window: Duration,
}

impl<K: Ord + Copy> Measured<K> {
    pub fn count(&self) -> u64 {
        self.outcomes.values().sum()
    }

    pub fn count_of(&self, key: K) -> u64 {
        self.outcomes.get(&key).copied().unwrap_or_default()
    }

    /// Completions per second of the measured window.
    pub fn rate_of(&self, count: u64) -> f64 {
        count as f64 / self.window.as_secs_f64().max(f64::EPSILON)
    }
}

/// The summary every load subcommand prints.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub concurrency: usize,
    pub window_secs: f64,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub latency: LatencySummary,
}

impl LoadSummary {
    pub fn new<K: Ord + Copy>(shape: &LoadShape, measured: &Measured<K>) -> Self {
        Self {
            concurrency: shape.concurrency,
            window_secs: measured.window.as_secs_f64(),
            requests: measured.count(),
            requests_per_sec: measured.rate_of(measured.count()),
            latency: measured.latencies.summary(),
        }
    }
}

/// Runs `op` in `shape.concurrency` closed loops for the warm-up and then the
/// measured window. `op(n)` gets a number unique across workers and returns
/// the outcome to count (an error aborts the run).
pub async fn closed_loop<K, F, Fut>(shape: &LoadShape, op: F) -> anyhow::Result<Measured<K>>
where
    K: Ord + Copy + Send + 'static,
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<K>> + Send,
{
    anyhow::ensure!(shape.concurrency > 0, "concurrency must be positive");
    anyhow::ensure!(
        shape.duration_secs > 0.0 && shape.warmup_secs >= 0.0,
        "duration must be positive"
    );
    let begin = Instant::now();
    let start = begin + Duration::from_secs_f64(shape.warmup_secs);
    let end = start + Duration::from_secs_f64(shape.duration_secs);
    let workers = shape.concurrency as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let op = op.clone();
        tasks.spawn(async move {
            let mut latencies = Latencies::default();
            let mut outcomes: BTreeMap<K, u64> = BTreeMap::new();
            let mut n = worker;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = op(n).await?;
                let done = Instant::now();
                if sent >= start && done <= end {
                    latencies.record(done - sent);
                    *outcomes.entry(outcome).or_default() += 1;
                }
                n += workers;
            }
            anyhow::Ok((latencies, outcomes))
        });
    }
    let mut measured = Measured {
        latencies: Latencies::default(),
        outcomes: BTreeMap::new(),
        window: end - start,
    };
    while let Some(joined) = tasks.join_next().await {
        let (latencies, outcomes) = joined??;
        measured.latencies.add(&latencies);
        for (key, count) in outcomes {
            *measured.outcomes.entry(key).or_default() += count;
        }
    }
    Ok(measured)
}
