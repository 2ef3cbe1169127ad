//! `capctl relay-catchup`: how fast the outbox relay catches up after a NATS
//! outage. Three phases, which `make bench` runs around stopping and starting
//! the deployment's nats-server:
//!
//! - `graph` (NATS up): one author and its followers, through the API; waits
//!   until the worker has done the follow messages.
//! - `post` (NATS down): waits until the API reports NATS down, then posts N
//!   times from the author; each post is accepted and its fan-out message waits
//!   in the outbox. Prints the counters `measure` starts from.
//! - `measure` (started while NATS is still down): waits until NATS accepts
//!   connections again, then times the API reconnecting, the relay
//!   re-publishing every post (`timeline_outbox_relayed_total`) and the worker
//!   writing every follower's row (`timeline_fanout_rows_written_total`);
//!   finally reads every follower's whole timeline and counts the posts
//!   missing (must be 0).
//!
//! Each follower follows and reads its own timeline with a token of its own;
//! the author posts with its own. One author posting as fast as it can is
//! what this measures, so the API's per-subject write limit
//! (`RATE_LIMIT_WRITES_PER_SECOND`, `RATE_LIMIT_BURST`) must allow it: `make
//! bench` raises it for the relay section's API; a `429` counts as rejected.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::auth::Minter;
use crate::client::{ServiceClient, metric_sum};
use crate::latency::{Latencies, LatencySummary};
use crate::timeline_load::wait_for;

mod measure;
mod report;

pub use measure::{RelayMeasureArgs, RelayMeasureReport, measure};

/// The API's counter of outbox rows the relay published and saw acked.
pub(super) const RELAYED: &str = "timeline_outbox_relayed_total";
/// The API's counter of posts whose fan-out message was left in the outbox.
pub(super) const DEFERRED: &str = "timeline_outbox_deferred_total";
/// The worker's counter of timeline rows written.
pub(super) const ROWS_WRITTEN: &str = "timeline_fanout_rows_written_total";
/// How often `measure` samples the counters.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// The phase to run.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayCatchupArgs {
    #[command(subcommand)]
    pub phase: RelayPhase,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RelayPhase {
    /// With NATS up: one author and its followers; waits for the worker.
    Graph(RelayGraphArgs),
    /// With NATS down: post N times from the author; every post waits in the outbox.
    Post(RelayPostArgs),
    /// Started while NATS is down: time the catch-up once it is back.
    Measure(RelayMeasureArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RelayGraphArgs {
    /// Followers of the author.
    #[arg(long, default_value_t = 50)]
    pub followers: usize,
    /// Give up waiting for the worker after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub worker: crate::client::WorkerUrl,
}

/// What `graph` built.
#[derive(Debug, Clone, Serialize)]
pub struct RelayGraphReport {
    /// Followers are `<user_prefix>f0` … `<user_prefix>f<followers - 1>`.
    pub user_prefix: String,
    pub author: String,
    pub followers: usize,
    pub graph_secs: f64,
    /// The worker finished the follow messages in time.
    pub settled: bool,
}

pub async fn graph(
    timeline: &ServiceClient,
    args: &RelayGraphArgs,
    minter: &Minter,
) -> anyhow::Result<RelayGraphReport> {
    anyhow::ensure!(args.followers > 0, "at least one follower");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let user_prefix = format!("rc{}-", &id[..8]);
    let author = format!("{user_prefix}author");
    let worker = args.worker.client()?;
    let started = Instant::now();
    let delivered = metric_sum(&worker.metrics().await?, "timeline_fanout_deliveries_total");
    let followers = minter.clients(
        timeline,
        (0..args.followers).map(|i| format!("{user_prefix}f{i}")),
    );
    let mut follows = futures::stream::iter(followers.iter().enumerate())
        .map(|(i, follower)| {
            let path = format!("/v1/users/{user_prefix}f{i}/following/{author}");
            async move { follower.send_paced(Method::PUT, &path, None).await }
        })
        .buffer_unordered(32);
    while let Some(answer) = follows.next().await {
        answer?.into_success().context("following")?;
    }
    drop(follows);
    // Each follow is a message too; the posts must not queue behind them.
    let (settled, _) = wait_for(
        &worker,
        "timeline_fanout_deliveries_total",
        delivered + args.followers as f64,
        Duration::from_secs(args.timeout_secs),
    )
    .await;
    Ok(RelayGraphReport {
        user_prefix,
        author,
        followers: args.followers,
        graph_secs: started.elapsed().as_secs_f64(),
        settled,
    })
}

#[derive(Debug, Clone, clap::Args)]
pub struct RelayPostArgs {
    /// The author (`graph`'s `author`).
    #[arg(long)]
    pub author: String,
    /// Posts to make while NATS is down.
    #[arg(long, default_value_t = 3000)]
    pub posts: usize,
    /// Posts in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Give up waiting for the API to see NATS gone after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub nats_down_timeout_secs: u64,
    #[command(flatten)]
    pub worker: crate::client::WorkerUrl,
}

/// What `post` did, and the counters `measure` starts from.
#[derive(Debug, Clone, Serialize)]
pub struct RelayPostReport {
    pub author: String,
    pub posts: usize,
    pub concurrency: usize,
    /// `202`s: posts stored, their fan-out waiting in the outbox.
    pub accepted: u64,
    pub rejected: u64,
    pub posting_secs: f64,
    pub posts_per_sec: f64,
    pub latency: LatencySummary,
    /// Posts the API left in the outbox (its `timeline_outbox_deferred_total`
    /// grew by this much; equals `accepted` when NATS was down throughout).
    pub deferred: f64,
    /// The API's relayed counter when posting ended.
    pub relayed_before: f64,
    /// The worker's rows-written counter when posting ended.
    pub rows_before: f64,
}

pub async fn post(
    timeline: &ServiceClient,
    args: &RelayPostArgs,
    minter: &Minter,
) -> anyhow::Result<RelayPostReport> {
    anyhow::ensure!(args.concurrency > 0, "concurrency must be positive");
    let worker = args.worker.client()?;
    let deadline = Instant::now() + Duration::from_secs(args.nats_down_timeout_secs);
    while nats_ready(timeline).await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the timeline API still reports NATS up after {} s",
            args.nats_down_timeout_secs
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deferred_before = metric_sum(&timeline.metrics().await?, DEFERRED);
    let started = Instant::now();
    let mut latencies = Latencies::default();
    let (mut accepted, mut rejected) = (0, 0);
    let author = args.author.as_str();
    let as_author = minter.client_for(timeline, author, &[]);
    let as_author = &as_author;
    let mut posts = futures::stream::iter(0..args.posts)
        .map(|n| async move {
            let body = json!({"author_id": author, "content": format!("while NATS is down {n}")});
            let sent = Instant::now();
            let status = match as_author.post("/v1/posts", &body).await {
                Ok(answer) => answer.status.as_u16(),
                Err(_) => 0,
            };
            (status, sent.elapsed())
        })
        .buffer_unordered(args.concurrency);
    while let Some((status, elapsed)) = posts.next().await {
        if status == 202 {
            accepted += 1;
            latencies.record(elapsed);
        } else {
            rejected += 1;
        }
    }
    drop(posts);
    let posting_secs = started.elapsed().as_secs_f64();
    let api = timeline.metrics().await?;
    Ok(RelayPostReport {
        author: args.author.clone(),
        posts: args.posts,
        concurrency: args.concurrency,
        accepted,
        rejected,
        posting_secs,
        posts_per_sec: accepted as f64 / posting_secs.max(f64::EPSILON),
        latency: latencies.summary(),
        deferred: metric_sum(&api, DEFERRED) - deferred_before,
        relayed_before: metric_sum(&api, RELAYED),
        rows_before: metric_sum(&worker.metrics().await?, ROWS_WRITTEN),
    })
}

/// Whether the API's `/readyz` reports its NATS check up.
pub(super) async fn nats_ready(timeline: &ServiceClient) -> bool {
    let Ok(answer) = timeline.get("/readyz").await else {
        return false;
    };
    answer.body["checks"].as_array().is_some_and(|checks| {
        checks
            .iter()
            .any(|check| check["name"] == "nats" && check["status"] == "up")
    })
}

/// `host:port` of a `nats://host:port` URL.
pub(super) fn nats_address(url: &str) -> anyhow::Result<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let address = rest.split(['/', ',']).next().unwrap_or_default();
    let address = address.rsplit_once('@').map_or(address, |(_, host)| host);
    anyhow::ensure!(!address.is_empty(), "no host in the NATS URL {url:?}");
    Ok(if address.contains(':') {
        address.to_owned()
    } else {
        format!("{address}:4222")
    })
}

/// Entries in `user`'s whole timeline, across all pages.
pub(super) async fn timeline_length(timeline: &ServiceClient, user: &str) -> anyhow::Result<u64> {
    Ok(timeline.timeline_ids(user).await?.len() as u64)
}

pub(super) fn secs(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.2} s"))
}

pub(super) fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.0} posts/s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nats_address_comes_from_the_url() {
        assert_eq!(
            nats_address("nats://127.0.0.1:4333").expect("address"),
            "127.0.0.1:4333"
        );
        assert_eq!(
            nats_address("nats://user:pw@localhost").expect("address"),
            "localhost:4222"
        );
        assert_eq!(
            nats_address("127.0.0.1:5000").expect("address"),
            "127.0.0.1:5000"
        );
        assert!(nats_address("nats://").is_err());
    }
}
