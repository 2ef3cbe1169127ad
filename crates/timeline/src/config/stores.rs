//! Where the data lives and where the work travels: Cassandra and the
//! JetStream stream, shared by the API and the worker.

use std::time::Duration;

use service_kit::config::HttpConfig;

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

    /// Consistency of the write that stores a post: `quorum` (a logged batch,
    /// all or nothing) or `one` (an unlogged batch that a node cut off from
    /// its peers can still take). Only the post's own write: follows, the
    /// outbox relay and the fan-out stay at QUORUM, and reads are unaffected.
    #[arg(long, env = "POST_WRITE_CONSISTENCY", value_enum, default_value_t = PostWriteConsistency::Quorum)]
    pub post_write_consistency: PostWriteConsistency,
}

/// How the post, its per-author row, its feed-bucket rows, the author's own
/// timeline row, its outbox row and the outbox watermark floor are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PostWriteConsistency {
    /// One logged batch at QUORUM: every row lands or none does, and a `202`
    /// means a majority of each row's replicas has it. A node that is cut off
    /// from the majority refuses posts (`503`).
    #[default]
    Quorum,
    /// One unlogged batch at ONE: each row needs one live replica, so a node
    /// cut off from its peers still takes posts. (A logged batch would not do:
    /// it first writes its batchlog to other live nodes of the data centre,
    /// which fails as unavailable at any level on a node that is alone,
    /// unless the cluster is that single node.)
    ///
    /// The price: the rows are no longer atomic together. A post that fails
    /// can leave some of them behind, e.g. a post readable by its id but never
    /// fanned out, or missing from the author's posts; a client retry without
    /// an `Idempotency-Key` makes a second post. A `202` means one replica has
    /// each row, which a node lost before the others catch up can take with
    /// it. And the `Idempotency-Key` claim is a lightweight transaction
    /// (Paxos), which needs a majority whatever this level: a post with a key
    /// is still refused (`503`) where no majority answers.
    One,
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
