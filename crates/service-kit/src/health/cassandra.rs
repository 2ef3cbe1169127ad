use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use tokio::sync::OnceCell;

use super::{CheckFuture, ReadinessCheck};

/// Hands the check the service's session once it has one.
type SessionSource = Arc<dyn Fn() -> Option<Arc<Session>> + Send + Sync>;

/// Cassandra (or ScyllaDB) answers a CQL query.
///
/// Built from the service's session; from a function that gives the session
/// once the service has set its store up (until then the check fails); or
/// from node addresses, in which case it connects on first use and keeps
/// trying on later checks until it succeeds. Either way a service can start
/// before its cluster does and become ready when it is.
#[derive(Clone)]
pub struct CassandraCheck {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Deferred(SessionSource),
    Nodes {
        nodes: Vec<String>,
        session: Arc<OnceCell<Arc<Session>>>,
    },
}

impl std::fmt::Debug for CassandraCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Deferred(_) => f.write_str("CassandraCheck(deferred)"),
            Source::Nodes { nodes, .. } => write!(f, "CassandraCheck({nodes:?})"),
        }
    }
}

impl CassandraCheck {
    pub fn from_session(session: Arc<Session>) -> Self {
        Self::deferred(move || Some(Arc::clone(&session)))
    }

    /// The session comes from `source`; `None` (not set up yet) fails the check.
    pub fn deferred(source: impl Fn() -> Option<Arc<Session>> + Send + Sync + 'static) -> Self {
        Self {
            source: Source::Deferred(Arc::new(source)),
        }
    }

    pub fn connect_lazily(nodes: Vec<String>) -> Self {
        Self {
            source: Source::Nodes {
                nodes,
                session: Arc::new(OnceCell::new()),
            },
        }
    }
}

impl ReadinessCheck for CassandraCheck {
    fn name(&self) -> &'static str {
        "cassandra"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let session = match &self.source {
                Source::Deferred(source) => {
                    source().ok_or("the store is not connected or migrated yet")?
                }
                Source::Nodes { nodes, session } => Arc::clone(
                    session
                        .get_or_try_init(|| async {
                            SessionBuilder::new()
                                .known_nodes(nodes)
                                .connection_timeout(Duration::from_secs(1))
                                .build()
                                .await
                                .map(Arc::new)
                        })
                        .await?,
                ),
            };
            session
                .query_unpaged("SELECT release_version FROM system.local", &[])
                .await?;
            Ok(())
        })
    }
}
