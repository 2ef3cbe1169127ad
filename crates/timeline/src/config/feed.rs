//! How timelines are laid out, expired and merged: settings every process of
//! a deployment must agree on.

use std::time::Duration;

/// How timelines are laid out and merged.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedConfig {
    /// Width of a time bucket (one partition of a timeline or of an author's posts), in seconds.
    /// Must be the same in every process and must not change once data is written.
    #[arg(long, env = "TIMELINE_BUCKET_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub bucket_seconds: u64,

    /// Timeline rows expire this many days after the post was made: 1 to 7300
    /// (Cassandra's TTL limit, 20 years). Cassandra before 5.0, and 5.0 in its
    /// default storage compatibility mode, also refuse a row that would expire
    /// after 2038-01-19, whatever its TTL.
    #[arg(long, env = "TIMELINE_TTL_DAYS", default_value_t = 30, value_parser = parse_ttl_days)]
    pub ttl_days: u64,

    /// Authors with more followers than this are not fanned out; their posts are merged at read time.
    #[arg(long, env = "FANOUT_CELEBRITY_THRESHOLD", default_value_t = 10_000)]
    pub celebrity_threshold: usize,

    /// Celebrities a timeline read takes per query when it checks which of them the reader
    /// follows (each page becomes one `IN` query, so at most 100).
    #[arg(long, env = "TIMELINE_CELEBRITY_CHUNK", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub celebrity_chunk: u16,

    /// How long a timeline API process keeps its copy of the celebrity set
    /// before reading it again, in milliseconds. The set only grows, so a copy
    /// this old misses at most the authors marked since (their new posts show
    /// up in followers' timelines this much later); 0 reads it for every page.
    #[arg(long, env = "TIMELINE_CELEBRITY_REFRESH_MS", default_value_t = 10_000)]
    pub celebrity_refresh_ms: u64,

    /// Number of a followee's most recent posts copied into a new follower's timeline.
    #[arg(long, env = "BACKFILL_POSTS", default_value_t = 20)]
    pub backfill_posts: usize,
}

impl FeedConfig {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_days * 86_400)
    }
}

/// The longest TTL Cassandra accepts on a write, in seconds (20 years); a
/// longer one fails the write.
pub const MAX_TTL_SECONDS: u64 = 630_720_000;

/// The longest `TIMELINE_TTL_DAYS`: whole days within [`MAX_TTL_SECONDS`].
pub const MAX_TTL_DAYS: u64 = MAX_TTL_SECONDS / 86_400;

fn parse_ttl_days(raw: &str) -> Result<u64, String> {
    let days: u64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a whole number of days"))?;
    if (1..=MAX_TTL_DAYS).contains(&days) {
        Ok(days)
    } else {
        Err(format!(
            "TIMELINE_TTL_DAYS must be 1 to {MAX_TTL_DAYS} days: Cassandra refuses \
             a TTL above {MAX_TTL_SECONDS} seconds (20 years)"
        ))
    }
}
