//! Configuration of the timeline API and of the fan-out worker: flags, each
//! with an environment variable and a documented default.
//!
//! The two binaries share the groups that must agree between them
//! ([`CassandraConfig`], [`StreamConfig`], [`FeedConfig`]); a process that
//! buckets or expires rows differently from its peers would write rows the
//! others cannot find.

use std::net::SocketAddr;

use service_kit::config::{AuthConfig, HttpConfig, TelemetryConfig};

mod feed;
mod stores;
mod work;

pub use feed::{FeedConfig, MAX_TTL_DAYS, MAX_TTL_SECONDS};
pub use stores::{CassandraConfig, PostWriteConsistency, StreamConfig};
pub use work::{FanoutConfig, OutboxConfig};

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

    /// Bearer-token verification and the per-subject write rate limit.
    #[command(flatten)]
    pub auth: AuthConfig,

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn posts_are_written_at_quorum_unless_set_to_one() {
        let config = Config::parse_from(["timeline"]);
        assert_eq!(
            config.cassandra.post_write_consistency,
            PostWriteConsistency::Quorum
        );
        let one = Config::parse_from(["timeline", "--post-write-consistency", "one"]);
        assert_eq!(
            one.cassandra.post_write_consistency,
            PostWriteConsistency::One
        );
        for refused in ["all", "any", "local_one", "ONE!", ""] {
            let error = Config::try_parse_from([
                "timeline".to_owned(),
                format!("--post-write-consistency={refused}"),
            ])
            .expect_err(refused)
            .to_string();
            assert!(error.contains("--post-write-consistency"), "{error}");
        }
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
