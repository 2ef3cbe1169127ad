use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use tokio::sync::OnceCell;

use super::{CheckFuture, ReadinessCheck};

/// Cassandra (or ScyllaDB) answers a CQL query.
///
/// Built from the service's session, or from node addresses, in which case it
/// connects on first use and keeps trying on later checks until it succeeds,
/// so a service can start before its cluster does and become ready when it is.
#[derive(Debug, Clone)]
pub struct CassandraCheck {
    nodes: Vec<String>,
    session: Arc<OnceCell<Arc<Session>>>,
}

impl CassandraCheck {
    pub fn from_session(session: Arc<Session>) -> Self {
        Self {
            nodes: Vec::new(),
            session: Arc::new(OnceCell::new_with(Some(session))),
        }
    }

    pub fn connect_lazily(nodes: Vec<String>) -> Self {
        Self {
            nodes,
            session: Arc::new(OnceCell::new()),
        }
    }
}

impl ReadinessCheck for CassandraCheck {
    fn name(&self) -> &'static str {
        "cassandra"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let session = self
                .session
                .get_or_try_init(|| async {
                    SessionBuilder::new()
                        .known_nodes(&self.nodes)
                        .connection_timeout(Duration::from_secs(1))
                        .build()
                        .await
                        .map(Arc::new)
                })
                .await?;
            session
                .query_unpaged("SELECT release_version FROM system.local", &[])
                .await?;
            Ok(())
        })
    }
}
