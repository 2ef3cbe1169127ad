//! `capctl post-load` and `capctl read-load`: the timeline half of `make bench`.
//!
//! `post-load` builds a follow graph through the API, then posts from random
//! authors in closed loops for a fixed time (the accept rate), then waits for
//! the fan-out worker to write every follower's row and reports the worker's
//! rows per second from `timeline_fanout_rows_written_total` (the posting
//! outruns the worker, so the worker is saturated from the first post to the
//! last row). `read-load` reads the timelines of such a graph's users at a
//! chosen consistency.
//!
//! Every user of the graph acts with a token of its own, minted before the
//! run: each follows, posts and reads its home timeline as itself, and the
//! posts go from random authors, so that no subject comes near the
//! per-subject write limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use rand::Rng;
use rand::seq::IndexedRandom;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::auth::Minter;
use crate::client::{ServiceClient, histogram_buckets, histogram_quantile, metric_sum};
use crate::load::{LoadShape, LoadSummary, closed_loop};

/// The graph and the posting load.
#[derive(Debug, Clone, clap::Args)]
pub struct PostLoadArgs {
    /// Users are `<user-prefix>0` … (a fresh random prefix by default).
    #[arg(long)]
    pub user_prefix: Option<String>,
    /// Users in the graph.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Users each user follows (so each post fans out to about this many followers).
    #[arg(long, default_value_t = 50)]
    pub follows: usize,
    /// Follow requests in flight while building the graph.
    #[arg(long, default_value_t = 64)]
    pub graph_concurrency: usize,
    /// Give up waiting for the fan-out to finish after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub drain_timeout_secs: u64,
    #[command(flatten)]
    pub worker: crate::client::WorkerUrl,
    #[command(flatten)]
    pub shape: LoadShape,
}

/// What `post-load` measured.
#[derive(Debug, Clone, Serialize)]
pub struct PostLoadReport {
    pub user_prefix: String,
    pub users: usize,
    pub follow_edges: usize,
    pub graph_secs: f64,
    #[serde(flatten)]
    pub load: LoadSummary,
    /// `202`s in the measured window, per second: the accept rate.
    pub accepted: u64,
    pub posts_per_sec: f64,
    /// Answers other than `202` (or no answer).
    pub rejected: u64,
    /// Every accepted post (warm-up included) times its author's followers.
    pub expected_rows: u64,
    /// Rows the worker wrote from the first post until they were all written.
    pub rows_written: f64,
    pub drain_secs: f64,
    pub drained: bool,
    /// `rows_written / drain_secs`: the worker's delivery rate while saturated.
    pub deliveries_per_sec: f64,
    /// The delivery rate after the posting stopped, the worker draining its
    /// backlog with no API traffic competing for the machine.
    pub backlog_deliveries_per_sec: f64,
    /// Fan-out lag while saturated (bucket upper bounds, seconds).
    pub lag_p50_secs: Option<f64>,
    pub lag_p99_secs: Option<f64>,
}

pub async fn post_load(
    timeline: &ServiceClient,
    args: &PostLoadArgs,
    minter: &Minter,
) -> anyhow::Result<PostLoadReport> {
    anyhow::ensure!(args.users >= 2, "at least two users");
    anyhow::ensure!(args.follows < args.users, "follows must be below users");
    let prefix = args.user_prefix.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("pl{}-", &id[..8])
    });
    let worker = args.worker.client()?;
    let clients =
        Arc::new(minter.clients(timeline, (0..args.users).map(|u| format!("{prefix}{u}"))));

    // The graph: user i follows `follows` others chosen at random.
    let graph_started = Instant::now();
    let before_graph = worker.metrics().await?;
    let mut followers = vec![0_u64; args.users];
    let mut edges = Vec::with_capacity(args.users * args.follows);
    let everyone: Vec<usize> = (0..args.users).collect();
    for user in 0..args.users {
        let others: Vec<usize> = everyone.iter().copied().filter(|u| *u != user).collect();
        for target in others.choose_multiple(&mut rand::rng(), args.follows) {
            followers[*target] += 1;
            edges.push((user, *target));
        }
    }
    let mut follows = futures::stream::iter(&edges)
        .map(|(user, target)| {
            let path = format!("/v1/users/{prefix}{user}/following/{prefix}{target}");
            let client = &clients[*user];
            async move { client.send_paced(Method::PUT, &path, None).await }
        })
        .buffer_unordered(args.graph_concurrency.max(1));
    while let Some(answer) = follows.next().await {
        answer?.into_success().context("following")?;
    }
    drop(follows);
    // Let the worker finish the follow messages (backfills) before measuring.
    let graph_messages =
        metric_sum(&before_graph, "timeline_fanout_deliveries_total") + edges.len() as f64;
    wait_for(
        &worker,
        "timeline_fanout_deliveries_total",
        graph_messages,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let graph_secs = graph_started.elapsed().as_secs_f64();

    let before = worker.metrics().await?;
    let rows_before = metric_sum(&before, "timeline_fanout_rows_written_total");
    let expected = Arc::new(AtomicU64::new(0));
    let followers = Arc::new(followers);
    let first_post = Instant::now();
    let measured = {
        let (clients, prefix, expected, followers) = (
            clients.clone(),
            prefix.clone(),
            expected.clone(),
            followers.clone(),
        );
        closed_loop(&args.shape, move |n| {
            let author = rand::rng().random_range(0..followers.len());
            let (client, prefix, expected, followers) = (
                clients[author].clone(),
                prefix.clone(),
                expected.clone(),
                followers.clone(),
            );
            async move {
                let body = json!({"author_id": format!("{prefix}{author}"), "content": format!("bench post {n}")});
                let status = match client.post("/v1/posts", &body).await {
                    Ok(answer) => answer.status.as_u16(),
                    Err(_) => 0,
                };
                if status == 202 {
                    expected.fetch_add(followers[author], Ordering::Relaxed);
                }
                Ok(status)
            }
        })
        .await?
    };
    let expected = expected.load(Ordering::Relaxed);
    let posting_ended = Instant::now();
    let rows_at_posting_end = worker
        .metrics()
        .await
        .map(|text| metric_sum(&text, "timeline_fanout_rows_written_total"))
        .unwrap_or(rows_before);
    let (drained, last) = wait_for(
        &worker,
        "timeline_fanout_rows_written_total",
        rows_before + expected as f64,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await;
    let drain_secs = (last - first_post).as_secs_f64();
    let after = worker.metrics().await?;
    let rows = metric_sum(&after, "timeline_fanout_rows_written_total") - rows_before;
    let (lag_before, lag_after) = (
        histogram_buckets(&before, "timeline_fanout_lag_seconds"),
        histogram_buckets(&after, "timeline_fanout_lag_seconds"),
    );
    let accepted = measured.count_of(202);
    Ok(PostLoadReport {
        user_prefix: prefix,
        users: args.users,
        follow_edges: edges.len(),
        graph_secs,
        load: LoadSummary::new(&args.shape, &measured),
        accepted,
        posts_per_sec: measured.rate_of(accepted),
        rejected: measured.count() - accepted,
        expected_rows: expected,
        rows_written: rows,
        drain_secs,
        drained,
        deliveries_per_sec: rows / drain_secs.max(f64::EPSILON),
        backlog_deliveries_per_sec: (rows_before + rows - rows_at_posting_end)
            / last
                .saturating_duration_since(posting_ended)
                .as_secs_f64()
                .max(f64::EPSILON),
        lag_p50_secs: histogram_quantile(&lag_before, &lag_after, 0.50),
        lag_p99_secs: histogram_quantile(&lag_before, &lag_after, 0.99),
    })
}

/// Polls `metric` on `service` until it reaches `target` or `timeout` passes.
/// Returns whether it did, and when it was last seen to grow.
pub(crate) async fn wait_for(
    service: &ServiceClient,
    metric: &str,
    target: f64,
    timeout: Duration,
) -> (bool, Instant) {
    let deadline = Instant::now() + timeout;
    let (mut last_value, mut last_change) = (f64::NAN, Instant::now());
    loop {
        let value = service
            .metrics()
            .await
            .map(|text| metric_sum(&text, metric))
            .unwrap_or(last_value);
        if value != last_value {
            (last_value, last_change) = (value, Instant::now());
        }
        if value >= target {
            return (true, last_change);
        }
        if Instant::now() > deadline {
            return (false, last_change);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whose timelines to read, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadLoadArgs {
    /// Users are `<user-prefix>0` … `<user-prefix><users - 1>` (e.g. a `post-load` graph).
    #[arg(long)]
    pub user_prefix: String,
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// `one`, `quorum` or `all`.
    #[arg(long, default_value = "one")]
    pub consistency: String,
    /// Page size of each read.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Readers at most: a home timeline is read by its owner only, so each
    /// reader needs a token, minted before the run; with more users than
    /// this, a uniform random sample of them reads.
    #[arg(long, default_value_t = 10_000)]
    pub max_readers: usize,
    #[command(flatten)]
    pub shape: LoadShape,
}

/// What `read-load` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReadLoadReport {
    pub consistency: String,
    /// Users whose timelines were read (all, or a sample of `max_readers`).
    pub readers: usize,
    #[serde(flatten)]
    pub load: LoadSummary,
    /// `200`s per second.
    pub reads_per_sec: f64,
    /// Answers other than `200` (or no answer).
    pub failed: u64,
    /// Entries returned per successful read, on average.
    pub mean_items: f64,
}

pub async fn read_load(
    timeline: &ServiceClient,
    args: &ReadLoadArgs,
    minter: &Minter,
) -> anyhow::Result<ReadLoadReport> {
    anyhow::ensure!(args.users > 0, "users must be positive");
    let items = Arc::new(AtomicU64::new(0));
    anyhow::ensure!(args.max_readers > 0, "max-readers must be positive");
    // A home timeline is read by its owner only: a token per reader.
    let readers: Vec<String> = rand::seq::index::sample(
        &mut rand::rng(),
        args.users,
        args.users.min(args.max_readers),
    )
    .into_iter()
    .map(|u| format!("{}{u}", args.user_prefix))
    .collect();
    let clients = Arc::new(
        readers
            .iter()
            .cloned()
            .zip(minter.clients(timeline, &readers))
            .collect::<Vec<_>>(),
    );
    let readers = clients.len();
    let measured = {
        let items = items.clone();
        let (limit, consistency) = (args.limit, args.consistency.clone());
        closed_loop(&args.shape, move |_| {
            let (user, client) = &clients[rand::rng().random_range(0..clients.len())];
            let (client, items) = (client.clone(), items.clone());
            let path = format!("/v1/users/{user}/timeline?limit={limit}&consistency={consistency}");
            async move {
                Ok(match client.get(&path).await {
                    Ok(answer) => {
                        let count = answer.body["items"].as_array().map_or(0, Vec::len);
                        items.fetch_add(count as u64, Ordering::Relaxed);
                        answer.status.as_u16()
                    }
                    Err(_) => 0,
                })
            }
        })
        .await?
    };
    let ok = measured.count_of(200);
    Ok(ReadLoadReport {
        consistency: args.consistency.clone(),
        readers,
        load: LoadSummary::new(&args.shape, &measured),
        reads_per_sec: measured.rate_of(ok),
        failed: measured.count() - ok,
        // Items are counted during the warm-up too; close enough for a mean.
        mean_items: items.load(Ordering::Relaxed) as f64 / ok.max(1) as f64,
    })
}

fn secs(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |s| format!("≤{s:.3} s"))
}

impl std::fmt::Display for PostLoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "post load: {} users `{}N`, {} follow edges (built in {:.1} s), {} in flight",
            self.users, self.user_prefix, self.follow_edges, self.graph_secs, self.load.concurrency
        )?;
        writeln!(
            f,
            "  accepted    {} ({:.0} posts/s), rejected {}",
            self.accepted, self.posts_per_sec, self.rejected
        )?;
        writeln!(f, "  latency     {}", self.load.latency)?;
        writeln!(
            f,
            "  fan-out     {} of {} rows in {:.2} s{}: {:.0} rows/s ({:.0} rows/s once posting stopped)",
            self.rows_written,
            self.expected_rows,
            self.drain_secs,
            if self.drained { "" } else { " (TIMED OUT)" },
            self.deliveries_per_sec,
            self.backlog_deliveries_per_sec
        )?;
        write!(
            f,
            "  lag         p50 {}, p99 {} (saturated)",
            secs(self.lag_p50_secs),
            secs(self.lag_p99_secs)
        )
    }
}

impl std::fmt::Display for ReadLoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "read load at {}: {} in flight, {:.1} s",
            self.consistency, self.load.concurrency, self.load.window_secs
        )?;
        writeln!(
            f,
            "  reads       {:.0}/s, failed {}, {:.1} items per page",
            self.reads_per_sec, self.failed, self.mean_items
        )?;
        write!(f, "  latency     {}", self.load.latency)
    }
}
