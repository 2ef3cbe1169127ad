//! `capctl relay-catchup measure`: once NATS is back, how fast the relay drains the outbox and the followers converge.

use super::*;

#[derive(Debug, Clone, clap::Args)]
pub struct RelayMeasureArgs {
    /// `graph`'s `user_prefix`.
    #[arg(long)]
    pub user_prefix: String,
    /// `graph`'s `followers`.
    #[arg(long)]
    pub followers: usize,
    /// Posts waiting in the outbox (`post`'s `accepted`).
    #[arg(long)]
    pub posts: u64,
    /// `post`'s `relayed_before`.
    #[arg(long)]
    pub relayed_before: f64,
    /// `post`'s `rows_before`.
    #[arg(long)]
    pub rows_before: f64,
    /// The NATS server the deployment uses; the clock starts when it accepts connections.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Give up after this many seconds (waiting for NATS, then for convergence).
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub worker: crate::client::WorkerUrl,
}

/// The catch-up, timed from the moment NATS accepted connections again.
#[derive(Debug, Clone, Serialize)]
pub struct RelayMeasureReport {
    pub followers: usize,
    pub posts: u64,
    /// NATS already accepted connections when `measure` started (the clock then
    /// starts late by however long it had been up).
    pub nats_up_at_start: bool,
    /// Seconds until the API's `/readyz` said NATS is up.
    pub api_reconnected_secs: Option<f64>,
    /// Seconds until the relay's counter first grew, and until it reached `posts`.
    pub first_relayed_secs: Option<f64>,
    pub all_relayed_secs: Option<f64>,
    /// Posts the relay re-published (its counter's growth).
    pub relayed: f64,
    /// Relay throughput: the counter's growth from its first sample above the
    /// start to the sample that reached `posts`, over the time between them.
    pub relay_posts_per_sec: Option<f64>,
    /// `posts` over the seconds from NATS back to the last one relayed.
    pub catchup_posts_per_sec: Option<f64>,
    /// Seconds until the worker wrote its first row, and until it had written
    /// every follower's row of every post.
    pub first_row_secs: Option<f64>,
    pub converged_secs: Option<f64>,
    pub converged: bool,
    pub expected_rows: u64,
    pub rows_written: f64,
    /// Posts absent from a follower's timeline at the end, summed over followers (must be 0).
    pub missing: u64,
    /// Entries beyond `posts` in a follower's timeline, summed (must be 0).
    pub unexpected: u64,
}

pub async fn measure(
    timeline: &ServiceClient,
    args: &RelayMeasureArgs,
    minter: &Minter,
) -> anyhow::Result<RelayMeasureReport> {
    // Each follower reads its own timeline (minted before the clock starts).
    let followers = minter.clients(
        timeline,
        (0..args.followers).map(|i| format!("{}f{i}", args.user_prefix)),
    );
    let worker = args.worker.client()?;
    let address = nats_address(&args.nats_url)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut nats_up_at_start = true;
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        nats_up_at_start = false;
        anyhow::ensure!(
            Instant::now() < deadline,
            "NATS at {address} did not come back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let back = Instant::now();
    let expected_rows = args.posts * args.followers as u64;
    let since_back = |at: Option<Instant>| at.map(|at| (at - back).as_secs_f64());
    let (mut api_reconnected, mut first_relayed, mut all_relayed) = (None, None, None);
    let (mut first_row, mut converged) = (None, None);
    let (mut first_relayed_count, mut relayed) = (0.0, 0.0);
    let mut rows = 0.0;
    while Instant::now() < deadline {
        let now = Instant::now();
        if api_reconnected.is_none() && nats_ready(timeline).await {
            api_reconnected = Some(now);
        }
        if all_relayed.is_none()
            && let Ok(text) = timeline.metrics().await
        {
            relayed = metric_sum(&text, RELAYED) - args.relayed_before;
            if relayed > 0.0 && first_relayed.is_none() {
                (first_relayed, first_relayed_count) = (Some(now), relayed);
            }
            if relayed >= args.posts as f64 {
                all_relayed = Some(now);
            }
        }
        if let Ok(text) = worker.metrics().await {
            rows = metric_sum(&text, ROWS_WRITTEN) - args.rows_before;
            if rows > 0.0 && first_row.is_none() {
                first_row = Some(now);
            }
            if rows >= expected_rows as f64 {
                converged = Some(now);
            }
        }
        if converged.is_some() && all_relayed.is_some() {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let relay_posts_per_sec = match (first_relayed, all_relayed) {
        (Some(first), Some(all)) if all > first => {
            Some((relayed - first_relayed_count) / (all - first).as_secs_f64())
        }
        _ => None,
    };
    let catchup_posts_per_sec =
        all_relayed.map(|all| args.posts as f64 / (all - back).as_secs_f64().max(f64::EPSILON));

    // Every follower's whole timeline: exactly the author's posts.
    let counts: Vec<anyhow::Result<u64>> = futures::stream::iter(followers.iter().enumerate())
        .map(|(i, follower)| {
            let user = format!("{}f{i}", args.user_prefix);
            async move { timeline_length(follower, &user).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (mut missing, mut unexpected) = (0, 0);
    for count in counts {
        let count = count?;
        missing += args.posts.saturating_sub(count);
        unexpected += count.saturating_sub(args.posts);
    }
    Ok(RelayMeasureReport {
        followers: args.followers,
        posts: args.posts,
        nats_up_at_start,
        api_reconnected_secs: since_back(api_reconnected),
        first_relayed_secs: since_back(first_relayed),
        all_relayed_secs: since_back(all_relayed),
        relayed,
        relay_posts_per_sec,
        catchup_posts_per_sec,
        first_row_secs: since_back(first_row),
        converged_secs: since_back(converged),
        converged: converged.is_some(),
        expected_rows,
        rows_written: rows,
        missing,
        unexpected,
    })
}
