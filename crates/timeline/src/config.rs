//! Configuration of the timeline service: flags, each with an environment variable.

use std::net::SocketAddr;

use service_kit::config::{HttpConfig, TelemetryConfig};

/// Everything the timeline service reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "timeline", version, about = "The AP timeline service")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TIMELINE_ADDR", default_value = "127.0.0.1:8082")]
    pub addr: SocketAddr,

    /// Cassandra or ScyllaDB contact points, comma-separated `host:port`.
    #[arg(
        long,
        env = "CASSANDRA_NODES",
        default_value = "127.0.0.1:9042",
        value_delimiter = ','
    )]
    pub cassandra_nodes: Vec<String>,

    /// NATS server URL (JetStream must be enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    #[command(flatten)]
    pub http: HttpConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}
