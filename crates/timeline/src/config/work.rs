//! How each process does its share of the work: the API's outbox relay and
//! the worker's consumer.

use std::time::Duration;

use super::DEFAULT_OUTBOX_SHARDS;

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
