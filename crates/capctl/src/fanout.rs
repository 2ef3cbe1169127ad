//! `capctl fanout`: build a follow graph, post, wait until every timeline has
//! converged, and count what is missing or duplicated (both must be 0).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand::seq::IndexedRandom;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::auth::Minter;
use crate::client::{ServiceClient, histogram_buckets, histogram_quantile, metric_sum};
use crate::latency::{Latencies, LatencySummary};
use crate::timeline_load::wait_for;

/// The size of the experiment.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Users in the graph.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Users each user follows (chosen at random).
    #[arg(long, default_value_t = 50)]
    pub follows: usize,
    /// Posts, from random authors.
    #[arg(long, default_value_t = 500)]
    pub posts: usize,
    /// Posts per second (0 = as fast as they are accepted).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Requests in flight at once while building the graph and reading timelines.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Give up waiting for convergence after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub worker: crate::client::WorkerUrl,
}

/// What the run measured, and the invariant it checked.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// The run's users are `<user_prefix>0` … `<user_prefix><users - 1>`.
    pub user_prefix: String,
    pub users: usize,
    pub follow_edges: usize,
    pub posts: usize,
    pub post_rate_target: f64,
    /// Posts accepted per second, as achieved.
    pub post_rate_achieved: f64,
    pub post_latency: LatencySummary,
    /// Seconds from the first post until every timeline was complete.
    pub convergence_secs: f64,
    pub converged: bool,
    /// Timeline rows the worker(s) wrote per second while converging.
    pub deliveries_per_sec: f64,
    /// Fan-out lag (post accepted → row written) from the worker's histogram, seconds
    /// (bucket upper bounds).
    pub lag_p50_secs: Option<f64>,
    pub lag_p95_secs: Option<f64>,
    pub lag_p99_secs: Option<f64>,
    /// The distribution behind those quantiles: the worker's lag histogram
    /// between the first post and convergence, one entry per bucket.
    pub lag_histogram: Vec<LagBucket>,
    /// Expected entries absent from a timeline at the end (must be 0).
    pub missing: usize,
    /// Entries present more than once in a timeline (must be 0).
    pub duplicates: usize,
    /// Entries present that no followee posted (must be 0).
    pub unexpected: usize,
    pub invariant_holds: bool,
}

/// One bucket of the fan-out lag histogram: the rows written with a lag above
/// the previous bucket's bound and at most `le_secs` (`None`: above every bound).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagBucket {
    pub le_secs: Option<f64>,
    pub count: f64,
}

/// Per-bucket counts of what a cumulative Prometheus histogram observed
/// between two scrapes.
fn lag_histogram(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<LagBucket> {
    let cumulative_before = |le: f64| {
        before
            .iter()
            .find(|(bound, _)| *bound == le)
            .map_or(0.0, |(_, count)| *count)
    };
    let mut previous = 0.0;
    after
        .iter()
        .map(|(le, count)| {
            let cumulative = count - cumulative_before(*le);
            let bucket = LagBucket {
                le_secs: le.is_finite().then_some(*le),
                count: (cumulative - previous).max(0.0),
            };
            previous = cumulative;
            bucket
        })
        .collect()
}

pub async fn run(
    timeline: &ServiceClient,
    args: &FanoutArgs,
    minter: &Minter,
    show_progress: bool,
) -> anyhow::Result<FanoutReport> {
    ensure!(args.users >= 2, "at least two users");
    ensure!(args.follows < args.users, "follows must be below users");
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let user_prefix = format!("fo{}-", &run_id[..8]);
    let users: Vec<String> = (0..args.users)
        .map(|i| format!("{user_prefix}{i}"))
        .collect();
    let worker = args.worker.client()?;
    // Every user follows, posts and reads its home timeline as itself.
    let clients: HashMap<&str, ServiceClient> = users
        .iter()
        .map(String::as_str)
        .zip(minter.clients(timeline, &users))
        .collect();

    // The graph: who follows whom; followers[author] is who should see author's posts.
    let mut followers: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut edges = Vec::new();
    for user in &users {
        let targets: Vec<&String> = users
            .iter()
            .filter(|u| *u != user)
            .collect::<Vec<_>>()
            .choose_multiple(&mut rand::rng(), args.follows)
            .copied()
            .collect();
        for target in targets {
            followers
                .entry(target.as_str())
                .or_default()
                .push(user.as_str());
            edges.push((user.as_str(), target.as_str()));
        }
    }
    // Each follow is a fan-out message too (a backfill); counted so that the
    // posts below are not queued behind them, which would inflate their lag.
    let deliveries_before = worker
        .metrics()
        .await
        .ok()
        .map(|text| metric_sum(&text, "timeline_fanout_deliveries_total"));
    let progress = bar(show_progress, edges.len(), "follows");
    let mut follows = futures::stream::iter(&edges)
        .map(|(user, target)| {
            let client = &clients[user];
            async move {
                let path = format!("/v1/users/{user}/following/{target}");
                client.send_paced(Method::PUT, &path, None).await
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(answer) = follows.next().await {
        answer?.into_success().context("following")?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    if let Some(delivered) = deliveries_before {
        wait_for(
            &worker,
            "timeline_fanout_deliveries_total",
            delivered + edges.len() as f64,
            Duration::from_secs(args.timeout_secs),
        )
        .await;
    }

    let before = worker.metrics().await.unwrap_or_default();
    let started = Instant::now();
    let mut expected: HashMap<&str, HashSet<String>> =
        users.iter().map(|u| (u.as_str(), HashSet::new())).collect();
    let mut latencies = Latencies::default();
    let progress = bar(show_progress, args.posts, "posts");
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    for n in 0..args.posts {
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(n as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let author = users[rand::rng().random_range(0..users.len())].as_str();
        let sent = Instant::now();
        // Paced: a small graph posting fast could reach an author's write limit.
        let post = clients[author]
            .send_paced(
                Method::POST,
                "/v1/posts",
                Some(&json!({"author_id": author, "content": format!("post {n} of run {run_id}")})),
            )
            .await?
            .into_success()
            .context("posting")?;
        latencies.record(sent.elapsed());
        let id = post["id"].as_str().context("post id")?.to_owned();
        expected.entry(author).or_default().insert(id.clone());
        for follower in followers.get(author).into_iter().flatten() {
            expected.entry(follower).or_default().insert(id.clone());
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let posting = started.elapsed();

    // Re-read the timelines that are not complete yet until all are, or the deadline.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut pending: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut last_seen: HashMap<&str, Vec<String>> = HashMap::new();
    let progress = bar(show_progress, users.len(), "converged timelines");
    loop {
        let reads = futures::stream::iter(pending.clone())
            .map(|user| {
                let client = &clients[user];
                async move { (user, client.timeline_ids(user).await) }
            })
            .buffer_unordered(args.concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut still = Vec::new();
        for (user, seen) in reads {
            let seen = seen?;
            let want = &expected[user];
            let complete = seen.len() == want.len() && seen.iter().all(|id| want.contains(id));
            last_seen.insert(user, seen);
            if complete {
                progress.inc(1);
            } else {
                still.push(user);
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress.finish_and_clear();
    let convergence = started.elapsed();
    let after = worker.metrics().await.unwrap_or_default();

    let (mut missing, mut duplicates, mut unexpected) = (0, 0, 0);
    for user in &users {
        let seen = &last_seen[user.as_str()];
        let want = &expected[user.as_str()];
        let distinct: HashSet<&String> = seen.iter().collect();
        duplicates += seen.len() - distinct.len();
        missing += want.iter().filter(|id| !distinct.contains(id)).count();
        unexpected += distinct.iter().filter(|id| !want.contains(**id)).count();
    }
    let rows = metric_sum(&after, "timeline_fanout_rows_written_total")
        - metric_sum(&before, "timeline_fanout_rows_written_total");
    let (lag_before, lag_after) = (
        histogram_buckets(&before, "timeline_fanout_lag_seconds"),
        histogram_buckets(&after, "timeline_fanout_lag_seconds"),
    );
    Ok(FanoutReport {
        user_prefix,
        users: args.users,
        follow_edges: edges.len(),
        posts: args.posts,
        post_rate_target: args.rate,
        post_rate_achieved: args.posts as f64 / posting.as_secs_f64().max(f64::EPSILON),
        post_latency: latencies.summary(),
        convergence_secs: convergence.as_secs_f64(),
        converged: pending.is_empty(),
        deliveries_per_sec: rows / convergence.as_secs_f64().max(f64::EPSILON),
        lag_p50_secs: histogram_quantile(&lag_before, &lag_after, 0.50),
        lag_p95_secs: histogram_quantile(&lag_before, &lag_after, 0.95),
        lag_p99_secs: histogram_quantile(&lag_before, &lag_after, 0.99),
        lag_histogram: lag_histogram(&lag_before, &lag_after),
        missing,
        duplicates,
        unexpected,
        invariant_holds: missing == 0 && duplicates == 0 && unexpected == 0,
    })
}

fn bar(show: bool, len: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{pos}}/{{len}} [{{bar:40}}] {{per_sec}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

impl std::fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |s| format!("≤{:.3} s", s));
        writeln!(
            f,
            "fan-out: {} users, {} follow edges, {} posts",
            self.users, self.follow_edges, self.posts
        )?;
        writeln!(
            f,
            "  posting     {:.0} posts/s (target {}), accept latency {}",
            self.post_rate_achieved, self.post_rate_target, self.post_latency
        )?;
        writeln!(
            f,
            "  converged   {} in {:.2} s",
            if self.converged {
                "yes"
            } else {
                "NO (timed out)"
            },
            self.convergence_secs
        )?;
        writeln!(f, "  deliveries  {:.0} rows/s", self.deliveries_per_sec)?;
        writeln!(
            f,
            "  lag         p50 {}, p95 {}, p99 {}",
            secs(self.lag_p50_secs),
            secs(self.lag_p95_secs),
            secs(self.lag_p99_secs)
        )?;
        writeln!(f, "  missing     {}   (must be 0)", self.missing)?;
        writeln!(f, "  duplicates  {}   (must be 0)", self.duplicates)?;
        writeln!(f, "  unexpected  {}   (must be 0)", self.unexpected)?;
        write!(
            f,
            "  invariant   {}: every timeline holds exactly its followees' posts, once",
            if self.invariant_holds {
                "HOLDS"
            } else {
                "VIOLATED"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_histogram_counts_each_bucket_between_the_scrapes() {
        let before = [(0.1, 1.0), (1.0, 1.0), (f64::INFINITY, 1.0)];
        let after = [(0.1, 51.0), (1.0, 100.0), (f64::INFINITY, 101.0)];
        assert_eq!(
            lag_histogram(&before, &after),
            vec![
                LagBucket {
                    le_secs: Some(0.1),
                    count: 50.0
                },
                LagBucket {
                    le_secs: Some(1.0),
                    count: 49.0
                },
                LagBucket {
                    le_secs: None,
                    count: 1.0
                },
            ]
        );
    }
}
