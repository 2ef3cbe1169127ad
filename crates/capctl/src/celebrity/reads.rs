//! `capctl celebrity-reads`: how soon a celebrity's posts reach its followers' first pages.

use super::*;

/// Whose reads to time, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct CelebrityReadsArgs {
    /// The author (`follower-load`'s).
    #[arg(long)]
    pub author: String,
    /// Followers are `<follower-prefix>0` … `<follower-prefix><followers - 1>`.
    #[arg(long)]
    pub follower_prefix: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub followers: usize,
    /// Followers, chosen at random, who look for each post.
    #[arg(long, default_value_t = 200)]
    pub sample: usize,
    /// Posts made before the timed ones (the first makes the author a
    /// celebrity), so that followers' first pages are full whatever ran before.
    #[arg(long, default_value_t = 20)]
    pub earlier_posts: usize,
    /// Posts timed, one after the other.
    #[arg(long, default_value_t = 5)]
    pub posts: usize,
    /// Timeline reads in flight at once while the sample looks for a post.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// A follower who has not seen a post after this many seconds counts as not seeing it.
    #[arg(long, default_value_t = 10)]
    pub visible_timeout_secs: u64,
    /// Give up waiting for the author's first post to be merged after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub mark_timeout_secs: u64,
    #[command(flatten)]
    pub worker: crate::client::WorkerUrl,
}

/// How soon a celebrity's posts reach its followers.
#[derive(Debug, Clone, Serialize)]
pub struct CelebrityReadsReport {
    pub author: String,
    pub followers: usize,
    pub sample: usize,
    pub earlier_posts: usize,
    pub posts: usize,
    /// Follower reads in flight at once while looking for a post.
    pub concurrency: usize,
    /// Seconds from the `202` of the author's first post until a follower's
    /// first page showed it: the worker marking the author, then the API's
    /// copy of the celebrity set being refreshed.
    pub first_post_visible_secs: f64,
    /// From a timed post's `202` to the end of the first read of each sampled
    /// follower's first page that showed it.
    pub visibility: LatencySummary,
    /// Follower reads that did not show the post yet (each retried after 10 ms).
    pub stale_reads: u64,
    /// (post, follower) pairs not seen within the timeout (must be 0).
    pub not_seen: u64,
    /// Timeline rows the worker wrote while handling these posts (expected 0).
    pub rows_written: f64,
    /// Posts the worker skipped as a celebrity's (every post: the earlier and the timed ones).
    pub celebrity_skips: f64,
    /// The worker handled every post within the timeout.
    pub worker_done: bool,
}

pub async fn celebrity_reads(
    timeline: &ServiceClient,
    args: &CelebrityReadsArgs,
    minter: &Minter,
) -> anyhow::Result<CelebrityReadsReport> {
    anyhow::ensure!(
        args.followers > 0 && args.sample > 0 && args.concurrency > 0 && args.earlier_posts > 0,
        "followers, sample, concurrency and earlier posts must be positive"
    );
    let worker = args.worker.client()?;
    let sample: Vec<String> = rand::seq::index::sample(
        &mut rand::rng(),
        args.followers,
        args.sample.min(args.followers),
    )
    .into_iter()
    .map(|i| format!("{}{i}", args.follower_prefix))
    .collect();
    // The author posts, and each sampled follower reads its own timeline,
    // each with a token of its own.
    let author = minter.client_for(timeline, &args.author, &[]);
    let readers = minter.clients(timeline, &sample);
    let before = worker.metrics().await?;
    let (rows_before, skips_before) = (
        metric_sum(&before, "timeline_fanout_rows_written_total"),
        metric_sum(&before, "timeline_fanout_celebrity_skips_total"),
    );

    // The first post makes the author a celebrity (if it is not yet), and shows
    // once this API process's copy of the celebrity set has it.
    let (first, accepted) = post(&author, &args.author, "a celebrity's first post").await?;
    let deadline = accepted + Duration::from_secs(args.mark_timeout_secs);
    loop {
        if first_page_has(&readers[0], &sample[0], &first).await? {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}'s first post did not reach {} within {} s: is the author a celebrity?",
            args.author,
            sample[0],
            args.mark_timeout_secs
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_post_visible_secs = accepted.elapsed().as_secs_f64();
    for n in 1..args.earlier_posts {
        post(&author, &args.author, &format!("an earlier post {n}")).await?;
    }

    let mut visibility = Latencies::default();
    let (stale_reads, mut not_seen) = (AtomicU64::new(0), 0);
    let timeout = Duration::from_secs(args.visible_timeout_secs);
    for n in 0..args.posts {
        let (id, accepted) = post(&author, &args.author, &format!("celebrity post {n}")).await?;
        let seen: Vec<anyhow::Result<Option<Duration>>> =
            futures::stream::iter(sample.iter().zip(&readers))
                .map(|(follower, reader)| {
                    let (id, stale_reads) = (id.as_str(), &stale_reads);
                    async move {
                        loop {
                            if first_page_has(reader, follower, id).await? {
                                return Ok(Some(accepted.elapsed()));
                            }
                            if accepted.elapsed() > timeout {
                                return Ok(None);
                            }
                            stale_reads.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                })
                .buffer_unordered(args.concurrency)
                .collect()
                .await;
        for outcome in seen {
            match outcome? {
                Some(elapsed) => visibility.record(elapsed),
                None => not_seen += 1,
            }
        }
    }

    let (worker_done, _) = wait_for(
        &worker,
        "timeline_fanout_celebrity_skips_total",
        skips_before + (args.earlier_posts + args.posts) as f64,
        Duration::from_secs(30),
    )
    .await;
    let after = worker.metrics().await?;
    Ok(CelebrityReadsReport {
        author: args.author.clone(),
        followers: args.followers,
        sample: sample.len(),
        earlier_posts: args.earlier_posts,
        posts: args.posts,
        concurrency: args.concurrency,
        first_post_visible_secs,
        visibility: visibility.summary(),
        stale_reads: stale_reads.load(Ordering::Relaxed),
        not_seen,
        rows_written: metric_sum(&after, "timeline_fanout_rows_written_total") - rows_before,
        celebrity_skips: metric_sum(&after, "timeline_fanout_celebrity_skips_total") - skips_before,
        worker_done,
    })
}

/// Posts as `author` (`timeline` holds the author's token), waiting out the
/// author's write limit if it is reached; the post's id and when its `202` arrived.
pub(super) async fn post(
    timeline: &ServiceClient,
    author: &str,
    content: &str,
) -> anyhow::Result<(String, Instant)> {
    let body = timeline
        .send_paced(
            reqwest::Method::POST,
            "/v1/posts",
            Some(&json!({"author_id": author, "content": content})),
        )
        .await?
        .into_success()
        .context("posting")?;
    let accepted = Instant::now();
    let id = body["id"].as_str().context("post id")?.to_owned();
    Ok((id, accepted))
}

/// Whether `post` is on `user`'s first timeline page (20 entries); `timeline`
/// holds `user`'s token (a home timeline is read by its owner only).
pub(super) async fn first_page_has(
    timeline: &ServiceClient,
    user: &str,
    post: &str,
) -> anyhow::Result<bool> {
    let page = timeline
        .get(&format!("/v1/users/{user}/timeline"))
        .await?
        .into_success()
        .context("reading a timeline")?;
    Ok(page["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|item| item["id"] == post)))
}

impl std::fmt::Display for CelebrityReadsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "celebrity reads: {} with {} followers, {} posts (after {} earlier) × {} sampled followers",
            self.author, self.followers, self.posts, self.earlier_posts, self.sample
        )?;
        writeln!(
            f,
            "  first post  merged after {:.2} s",
            self.first_post_visible_secs
        )?;
        writeln!(f, "  202 → seen  {}", self.visibility)?;
        writeln!(
            f,
            "  stale reads {}, not seen {}   (must be 0)",
            self.stale_reads, self.not_seen
        )?;
        write!(
            f,
            "  worker      {} rows written (expected 0), {} posts skipped as a celebrity's{}",
            self.rows_written,
            self.celebrity_skips,
            if self.worker_done {
                ""
            } else {
                " (NOT all handled in time)"
            }
        )
    }
}
