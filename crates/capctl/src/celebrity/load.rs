//! `capctl follower-load`: the follow graph of one author, straight to Cassandra.

use super::*;

/// The rows of one follow, as the API's follow writes them.
pub(super) const INSERT_FOLLOWING_CQL: &str =
    "INSERT INTO following (user_id, target_id, since) VALUES (?, ?, ?)";
pub(super) const INSERT_FOLLOWERS_CQL: &str =
    "INSERT INTO followers (user_id, follower_id, since) VALUES (?, ?, ?)";
pub(super) const SELECT_CELEBRITY_CQL: &str =
    "SELECT author_id FROM celebrities WHERE shard = 0 AND author_id = ?";
/// `following` rows per unlogged batch: each is its own partition, and
/// Cassandra warns about unlogged batches over more partitions than this
/// (`unlogged_batch_across_partitions_warn_threshold`).
pub(super) const FOLLOWING_PER_BATCH: usize = 10;
/// Attempts of one batch before the load gives up.
pub(super) const ATTEMPTS: u32 = 5;
/// The compactions running on the node the driver asks (Cassandra 4.0 and
/// later; ScyllaDB has no such table).
pub(super) const SELECT_COMPACTIONS_CQL: &str =
    "SELECT table_name FROM system_views.sstable_tasks WHERE keyspace_name = ?";
/// How long no compaction of the keyspace may have run for the load to count as settled.
pub(super) const QUIET_FOR: Duration = Duration::from_secs(5);

/// Where to write the graph, and how big it is.
#[derive(Debug, Clone, clap::Args)]
pub struct FollowerLoadArgs {
    /// The timeline's own Cassandra settings (nodes, keyspace).
    #[command(flatten)]
    pub cassandra: timeline::config::CassandraConfig,
    /// The author everyone follows.
    #[arg(long)]
    pub author: String,
    /// Followers are `<follower-prefix>0` … `<follower-prefix><followers - 1>`.
    #[arg(long)]
    pub follower_prefix: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub followers: usize,
    /// Followers per unit of work: one single-partition batch of the author's
    /// `followers` rows, and their `following` rows in batches of 10.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Units of work in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// After writing, wait up to this many seconds for the compactions the
    /// load set off to finish, so that what is measured next reads a settled
    /// store (0: do not wait).
    #[arg(long, default_value_t = 300)]
    pub settle_timeout_secs: u64,
}

/// What the load wrote, and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct FollowerLoadReport {
    pub author: String,
    pub follower_prefix: String,
    pub followers: usize,
    /// `following` plus `followers` rows.
    pub rows: u64,
    pub secs: f64,
    pub rows_per_sec: f64,
    /// Batches written again after a failed attempt.
    pub retries: u64,
    /// Seconds from the end of the writes until the last compaction of the
    /// keyspace ended (`None` when not waited for, or not observable).
    pub settle_secs: Option<f64>,
    /// No compaction of the keyspace ran for 5 s before the timeout.
    pub settled: Option<bool>,
    /// The author was a celebrity before the load (an earlier run of the same size).
    pub already_celebrity: bool,
}

pub(super) struct GraphWriter {
    session: Session,
    following: PreparedStatement,
    followers: PreparedStatement,
    retries: AtomicU64,
}

type FollowRow<'a> = (&'a str, &'a str, chrono::DateTime<Utc>);

impl GraphWriter {
    /// One unit: the author's `followers` rows of `ids` in one batch, and the
    /// followers' `following` rows in batches of [`FOLLOWING_PER_BATCH`], all at once.
    async fn write(&self, author: &str, ids: &[String]) -> anyhow::Result<()> {
        let since = Utc::now();
        let followers = ids.iter().map(|id| (author, id.as_str(), since)).collect();
        let writes = std::iter::once(self.batch(&self.followers, followers)).chain(
            ids.chunks(FOLLOWING_PER_BATCH).map(|chunk| {
                let following = chunk
                    .iter()
                    .map(|id| (id.as_str(), author, since))
                    .collect();
                self.batch(&self.following, following)
            }),
        );
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    /// Runs `statement` once per row in one unlogged batch, at QUORUM like
    /// the API's writes, retrying with a growing pause.
    async fn batch(
        &self,
        statement: &PreparedStatement,
        rows: Vec<FollowRow<'_>>,
    ) -> anyhow::Result<()> {
        let mut batch = Batch::new(BatchType::Unlogged);
        for _ in &rows {
            batch.append_statement(statement.clone());
        }
        batch.set_consistency(Consistency::Quorum);
        batch.set_is_idempotent(true);
        let mut attempt = 1;
        loop {
            match self.session.batch(&batch, &rows).await {
                Ok(_) => return Ok(()),
                Err(_) if attempt < ATTEMPTS => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error).context("writing follows"),
            }
        }
    }
}

pub(super) async fn prepare(session: &Session, cql: &str) -> anyhow::Result<PreparedStatement> {
    session
        .prepare(cql)
        .await
        .with_context(|| format!("preparing `{cql}`"))
}

pub async fn load_followers(args: &FollowerLoadArgs) -> anyhow::Result<FollowerLoadReport> {
    anyhow::ensure!(
        args.batch_size > 0 && args.concurrency > 0,
        "batch size and concurrency must be positive"
    );
    let session = crate::raw_cql::session(&args.cassandra).await?;
    let is_celebrity = prepare(&session, SELECT_CELEBRITY_CQL).await?;
    let already_celebrity = session
        .execute_unpaged(&is_celebrity, (args.author.as_str(),))
        .await
        .context("reading the celebrity set")?
        .into_rows_result()
        .context("reading the celebrity set")?
        .rows_num()
        > 0;
    let writer = Arc::new(GraphWriter {
        following: prepare(&session, INSERT_FOLLOWING_CQL).await?,
        followers: prepare(&session, INSERT_FOLLOWERS_CQL).await?,
        session,
        retries: AtomicU64::new(0),
    });
    let started = Instant::now();
    let (batch_size, followers) = (args.batch_size, args.followers);
    futures::stream::iter((0..followers).step_by(batch_size))
        .map(|first| {
            let writer = Arc::clone(&writer);
            let (author, prefix) = (args.author.as_str(), args.follower_prefix.as_str());
            async move {
                let ids: Vec<String> = (first..(first + batch_size).min(followers))
                    .map(|i| format!("{prefix}{i}"))
                    .collect();
                writer.write(author, &ids).await
            }
        })
        .buffer_unordered(args.concurrency)
        .try_for_each(|()| async { Ok(()) })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let rows = 2 * followers as u64;
    let settle = match args.settle_timeout_secs {
        0 => None,
        timeout => {
            settle(
                &writer.session,
                &args.cassandra.cassandra_keyspace,
                Duration::from_secs(timeout),
            )
            .await?
        }
    };
    Ok(FollowerLoadReport {
        author: args.author.clone(),
        follower_prefix: args.follower_prefix.clone(),
        followers,
        rows,
        secs,
        rows_per_sec: rows as f64 / secs.max(f64::EPSILON),
        retries: writer.retries.load(Ordering::Relaxed),
        settle_secs: settle.map(|(_, secs)| secs),
        settled: settle.map(|(settled, _)| settled),
        already_celebrity,
    })
}

/// Waits until no compaction of `keyspace` has run for [`QUIET_FOR`], or
/// `timeout`. Returns whether it did and the seconds until the last one
/// ended; `None` if the server does not list its compactions.
pub(super) async fn settle(
    session: &Session,
    keyspace: &str,
    timeout: Duration,
) -> anyhow::Result<Option<(bool, f64)>> {
    let Ok(compactions) = session.prepare(SELECT_COMPACTIONS_CQL).await else {
        return Ok(None);
    };
    let started = Instant::now();
    let mut last_busy = started;
    loop {
        let running = session
            .execute_unpaged(&compactions, (keyspace,))
            .await
            .context("listing compactions")?
            .into_rows_result()
            .context("listing compactions")?
            .rows_num();
        let now = Instant::now();
        if running > 0 {
            last_busy = now;
        }
        let busy_for = (last_busy - started).as_secs_f64();
        if now - last_busy >= QUIET_FOR {
            return Ok(Some((true, busy_for)));
        }
        if now - started >= timeout {
            return Ok(Some((false, busy_for)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl std::fmt::Display for FollowerLoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "follower load: {} followers of {} (`{}N`){}",
            self.followers,
            self.author,
            self.follower_prefix,
            if self.already_celebrity {
                ", already a celebrity"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  rows        {} in {:.1} s: {:.0} rows/s, {} retries",
            self.rows, self.secs, self.rows_per_sec, self.retries
        )?;
        match (self.settled, self.settle_secs) {
            (Some(settled), Some(secs)) => write!(
                f,
                "  compaction  {} {secs:.1} s after the writes",
                if settled {
                    "done"
                } else {
                    "STILL RUNNING (gave up)"
                }
            ),
            _ => write!(f, "  compaction  not waited for"),
        }
    }
}
