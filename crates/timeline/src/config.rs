//! Configuration of the timeline API and of the fan-out worker: flags, each
//! with an environment variable and a documented default.
//!
//! The two binaries share the groups that must agree between them
//! ([`CassandraConfig`], [`StreamConfig`], [`FeedConfig`]); a process that
//! buckets or expires rows differently from its peers would write rows the
//! others cannot find.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::{HttpConfig, TelemetryConfig};

/// Outbox shards when `OUTBOX_SHARDS` is not set.
pub const DEFAULT_OUTBOX_SHARDS: i32 = 8;

/// Everything the timeline API reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "timeline", version, about = "The AP timeline service")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TIMELINE_ADDR", default_value = "127.0.0.1:8082")]
    pub addr: SocketAddr,

    /// How long an `Idempotency-Key` of `POST /v1/posts` is remembered, in hours.
    #[arg(long, env = "POST_IDEMPOTENCY_RETENTION_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=24 * 30))]
    pub post_idempotency_retention_hours: u64,

    #[command(flatten)]
    pub cassandra: CassandraConfig,

    #[command(flatten)]
    pub stream: StreamConfig,

    #[command(flatten)]
    pub feed: FeedConfig,

    #[command(flatten)]
    pub outbox: OutboxConfig,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Everything the fan-out worker reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "timeline-worker",
    version,
    about = "Fans timeline posts out to followers"
)]
pub struct WorkerConfig {
    /// Address of the worker's own `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "TIMELINE_WORKER_ADDR", default_value = "127.0.0.1:8083")]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub cassandra: CassandraConfig,

    #[command(flatten)]
    pub stream: StreamConfig,

    #[command(flatten)]
    pub feed: FeedConfig,

    #[command(flatten)]
    pub fanout: FanoutConfig,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Where the data lives.
#[derive(Debug, Clone, clap::Args)]
pub struct CassandraConfig {
    /// Cassandra or ScyllaDB contact points, comma-separated `host:port`.
    #[arg(
        long,
        env = "CASSANDRA_NODES",
        default_value = "127.0.0.1:9042",
        value_delimiter = ','
    )]
    pub cassandra_nodes: Vec<String>,

    /// Keyspace holding the timeline tables; created at start-up if missing.
    #[arg(long, env = "CASSANDRA_KEYSPACE", default_value = "timeline")]
    pub cassandra_keyspace: String,

    /// Replication factor of the keyspace when it is created (1 locally, 3 in a cluster).
    #[arg(long, env = "CASSANDRA_REPLICATION_FACTOR", default_value_t = 1)]
    pub cassandra_replication_factor: u16,

    /// Longest a statement may take, retries included, before it fails as unavailable,
    /// in milliseconds. Must stay below `HTTP_REQUEST_TIMEOUT_SECS`.
    #[arg(long, env = "CASSANDRA_REQUEST_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cassandra_request_timeout_ms: u64,
}

impl CassandraConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cassandra_request_timeout_ms)
    }

    /// Checks what a single flag cannot: a statement gives up before the HTTP
    /// layer abandons the request that issued it, so the client gets the
    /// service's own `503` (with `Retry-After`) and the driver stops retrying
    /// a write whose request is already over.
    pub fn validate(&self, http: &HttpConfig) -> Result<(), String> {
        if self.request_timeout() < http.request_timeout() {
            Ok(())
        } else {
            Err(format!(
                "CASSANDRA_REQUEST_TIMEOUT_MS ({}) must stay below HTTP_REQUEST_TIMEOUT_SECS ({} s)",
                self.cassandra_request_timeout_ms, http.request_timeout_secs
            ))
        }
    }
}

/// The JetStream stream that carries fan-out work.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamConfig {
    /// NATS server URL (JetStream must be enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Name of the JetStream stream (work-queue retention, file storage).
    #[arg(long, env = "NATS_STREAM", default_value = "TIMELINE")]
    pub nats_stream: String,

    /// Subject prefix: work goes to `<prefix>.fanout.<kind>` (this stream), dead letters to
    /// `<prefix>.dead.<kind>` (the dead-letter stream).
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "timeline")]
    pub nats_subject_prefix: String,

    /// Name of the durable pull consumer every worker shares.
    #[arg(long, env = "NATS_CONSUMER", default_value = "timeline-fanout")]
    pub nats_consumer: String,

    /// How long a publish may wait for the server's ack before the outbox takes over, in milliseconds.
    #[arg(long, env = "NATS_PUBLISH_TIMEOUT_MS", default_value_t = 2000)]
    pub nats_publish_timeout_ms: u64,

    /// Dead letters (in their own stream, `<NATS_STREAM>_DEAD`) are dropped after this many hours.
    #[arg(long, env = "DEAD_LETTER_MAX_AGE_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_letter_max_age_hours: u64,

    /// At most this many dead letters are kept; the oldest go first.
    #[arg(long, env = "DEAD_LETTER_MAX_MSGS", default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub dead_letter_max_msgs: i64,

    /// Copies JetStream keeps of the work and dead-letter streams: 1 on a single server,
    /// 3 in a three-server cluster (a quorum of 2 then acknowledges every publish).
    /// An existing stream is scaled to this count.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
}

impl StreamConfig {
    /// The stream that keeps dead letters: `<NATS_STREAM>_DEAD`, so every
    /// deployment (and every test's stream) has its own.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD", self.nats_stream)
    }

    pub fn dead_letter_max_age(&self) -> Duration {
        Duration::from_secs(self.dead_letter_max_age_hours.saturating_mul(3600))
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.nats_publish_timeout_ms)
    }
}

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

/// The transactional outbox of the API process.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboxConfig {
    /// How often the relay looks for unpublished fan-out messages, in milliseconds.
    #[arg(long, env = "OUTBOX_RELAY_INTERVAL_MS", default_value_t = 1000)]
    pub outbox_relay_interval_ms: u64,

    /// Age after which the relay re-publishes an outbox row, in seconds (the request that
    /// wrote it normally deletes it well before).
    #[arg(long, env = "OUTBOX_RELAY_AFTER_SECS", default_value_t = 5)]
    pub outbox_relay_after_secs: u64,

    /// Shards of the outbox: each post's message goes to a random one, and the
    /// API processes' relays share them. Must be the same in every API process
    /// of a deployment, and may grow but never shrink (rows in a dropped shard
    /// would never be relayed).
    #[arg(long, env = "OUTBOX_SHARDS", default_value_t = DEFAULT_OUTBOX_SHARDS, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub outbox_shards: i32,
}

impl OutboxConfig {
    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.outbox_relay_interval_ms)
    }

    pub fn relay_after(&self) -> Duration {
        Duration::from_secs(self.outbox_relay_after_secs)
    }
}

/// How the worker consumes.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutConfig {
    /// Messages one worker processes at the same time.
    #[arg(long, env = "FANOUT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub fanout_concurrency: u64,

    /// Timeline rows one message writes at the same time.
    #[arg(long, env = "FANOUT_WRITE_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub fanout_write_concurrency: u64,

    /// Followers per chunk message; larger follower lists are split and processed in parallel.
    #[arg(long, env = "FANOUT_CHUNK_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub fanout_chunk_size: u64,

    /// Time a delivered message may stay unacknowledged before it is redelivered, in seconds.
    #[arg(long, env = "FANOUT_ACK_WAIT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub fanout_ack_wait_secs: u64,

    /// Delay before a failed message is redelivered, in milliseconds (doubled
    /// per delivery, capped at `FANOUT_RETRY_MAX_DELAY_MS`).
    #[arg(long, env = "FANOUT_NAK_DELAY_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub fanout_nak_delay_ms: u64,

    /// Ceiling of the redelivery delay of a transient failure, in milliseconds.
    /// Transient failures are retried for as long as they last.
    #[arg(long, env = "FANOUT_RETRY_MAX_DELAY_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub fanout_retry_max_delay_ms: u64,

    /// How often the consumer's pending count is polled for the gauge, in milliseconds.
    #[arg(long, env = "FANOUT_PENDING_POLL_MS", default_value_t = 5000)]
    pub fanout_pending_poll_ms: u64,
}

impl FanoutConfig {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.fanout_ack_wait_secs)
    }

    /// The delay before redelivery after the `delivered`-th attempt failed.
    pub fn nak_delay(&self, delivered: i64) -> Duration {
        let exponent = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
        let delay = self.fanout_nak_delay_ms.saturating_mul(1 << exponent);
        Duration::from_millis(delay.min(self.fanout_retry_max_delay_ms))
    }

    pub fn chunk_size(&self) -> usize {
        usize::try_from(self.fanout_chunk_size).unwrap_or(500)
    }

    pub fn concurrency(&self) -> usize {
        usize::try_from(self.fanout_concurrency).unwrap_or(16)
    }

    pub fn write_concurrency(&self) -> usize {
        usize::try_from(self.fanout_write_concurrency).unwrap_or(32)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_parse() {
        let config = Config::parse_from(["timeline"]);
        assert_eq!(config.cassandra.cassandra_keyspace, "timeline");
        assert_eq!(config.stream.nats_stream, "TIMELINE");
        assert_eq!(config.stream.dead_letter_stream(), "TIMELINE_DEAD");
        assert_eq!(
            config.stream.dead_letter_max_age(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(config.feed.bucket_seconds, 86_400);
    }

    #[test]
    fn the_ttl_stays_within_cassandras_limit() {
        assert_eq!(MAX_TTL_DAYS, 7300);
        let longest = Config::try_parse_from(["timeline", "--ttl-days", "7300"]).expect("20 years");
        assert_eq!(longest.feed.ttl(), Duration::from_secs(MAX_TTL_SECONDS));
        for refused in ["7301", "0", "36500", "-1", "thirty"] {
            let error =
                Config::try_parse_from(["timeline".to_owned(), format!("--ttl-days={refused}")])
                    .expect_err(refused)
                    .to_string();
            assert!(error.contains("--ttl-days"), "{error}");
        }
        let error = Config::try_parse_from(["timeline", "--ttl-days", "7301"])
            .expect_err("over 20 years")
            .to_string();
        assert!(
            error.contains("TIMELINE_TTL_DAYS must be 1 to 7300 days")
                && error.contains("630720000 seconds"),
            "{error}"
        );
        let worker = WorkerConfig::try_parse_from(["timeline-worker", "--ttl-days", "7301"]);
        assert!(worker.is_err());
    }

    #[test]
    fn the_cassandra_timeout_stays_below_the_http_timeout() {
        let config = Config::parse_from(["timeline"]);
        assert_eq!(config.cassandra.request_timeout(), Duration::from_secs(5));
        assert_eq!(config.cassandra.validate(&config.http), Ok(()));
        for (cassandra_ms, http_secs) in [("10000", "10"), ("30000", "10"), ("5000", "5")] {
            let config = Config::parse_from([
                "timeline",
                "--cassandra-request-timeout-ms",
                cassandra_ms,
                "--request-timeout-secs",
                http_secs,
            ]);
            let error = config
                .cassandra
                .validate(&config.http)
                .expect_err("not below the HTTP timeout");
            assert!(
                error.contains("CASSANDRA_REQUEST_TIMEOUT_MS")
                    && error.contains("HTTP_REQUEST_TIMEOUT_SECS"),
                "{error}"
            );
        }
        let config = Config::parse_from(["timeline", "--cassandra-request-timeout-ms", "9999"]);
        assert_eq!(config.cassandra.validate(&config.http), Ok(()));
        assert!(
            Config::try_parse_from(["timeline", "--cassandra-request-timeout-ms", "0"]).is_err()
        );
    }

    #[test]
    fn nak_delay_doubles_and_caps() {
        let worker = WorkerConfig::parse_from(["timeline-worker"]);
        assert_eq!(worker.fanout.nak_delay(1), Duration::from_secs(1));
        assert_eq!(worker.fanout.nak_delay(3), Duration::from_secs(4));
        assert_eq!(worker.fanout.nak_delay(40), Duration::from_secs(30));
        let patient =
            WorkerConfig::parse_from(["timeline-worker", "--fanout-retry-max-delay-ms", "5000"]);
        assert_eq!(patient.fanout.nak_delay(40), Duration::from_secs(5));
    }
}
