//! Three Apache Cassandra 5.0 nodes on 127.0.0.1, .2 and .3 (replication
//! factor 3), started and stopped with the project's own scripts
//! (`scripts/start.sh`, `wait.sh`, `stop.sh`), ccm-style: one balanced token
//! per node, every node a seed, small heaps, its own directories and JMX port,
//! and its own group id for the firewall.
//!
//! Statements can be pinned to one coordinator, so "a read at ONE on the
//! minority side" really asks that node; waiting is by polling what the nodes
//! report (how many replicas a coordinator believes alive, pending hints).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scylla::client::execution_profile::{ExecutionProfile, ExecutionProfileHandle};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::policies::retry::FallthroughRetryPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;
use tokio::process::Command;

/// The keyspace of the lab's own register (replication factor 3).
pub const KEYSPACE: &str = "lab";

/// Balanced tokens of a 3-node Murmur3 ring (ccm's).
const TOKENS: [i64; 3] = [
    i64::MIN,
    -3_074_457_345_618_258_603,
    3_074_457_345_618_258_602,
];
const CQL_PORT: u16 = 9042;

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// 1, 2 or 3.
    pub index: usize,
    pub address: String,
    pub group: u32,
    dir: PathBuf,
    jmx_port: u16,
}

impl Node {
    pub fn cql(&self) -> SocketAddr {
        format!("{}:{CQL_PORT}", self.address)
            .parse()
            .expect("a node address is an IPv4 address")
    }

    pub fn name(&self) -> String {
        format!("node {}", self.index)
    }

    /// The JVM's pid, from the pid file `start.sh` wrote (the JVM itself:
    /// `setsid` and `setpriv` exec, they do not fork).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("run/cassandra.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// The cluster and an admin session to every node.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    scripts: PathBuf,
    cassandra_home: PathBuf,
    java: String,
    session: Option<Session>,
    pinned: Vec<ExecutionProfileHandle>,
}

impl Cluster {
    pub fn new(lab_dir: &Path, root: &Path, cassandra_home: PathBuf, java: String) -> Self {
        let nodes = (1..=3)
            .map(|index| Node {
                index,
                address: format!("127.0.0.{index}"),
                group: 7100 + index as u32,
                dir: lab_dir.join(format!("cassandra-{index}")),
                jmx_port: 7099 + 100 * index as u16,
            })
            .collect();
        Self {
            nodes,
            scripts: root.join("scripts"),
            cassandra_home,
            java,
            session: None,
            pinned: Vec::new(),
        }
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index - 1]
    }

    /// Contact points for the services.
    pub fn contact_points(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.cql().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts the three nodes together, waits until each answers CQL and
    /// every node sees the other two alive, and creates the lab's keyspace.
    /// Returns how long the cluster took.
    pub async fn start(&mut self, node_yaml: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let base = std::fs::read_to_string(node_yaml).context("read the node settings")?;
        for (node, token) in self.nodes.iter().zip(TOKENS) {
            std::fs::create_dir_all(&node.dir)?;
            std::fs::write(
                node.dir.join("node.yaml"),
                format!("{base}initial_token: {token}\n"),
            )?;
        }
        for node in &self.nodes {
            self.script(node, "start.sh").await?;
        }
        for node in &self.nodes {
            self.script(node, "wait.sh").await?;
        }
        let session = SessionBuilder::new()
            .known_nodes(self.nodes.iter().map(|node| node.cql().to_string()))
            .build()
            .await
            .context("connect to the lab cluster")?;
        self.pinned = self
            .nodes
            .iter()
            .map(|node| pinned_profile(node.cql()))
            .collect();
        self.session = Some(session);
        self.schema(&format!(
            "CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}}"
        ))
        .await?;
        // Reads pick replicas by position (no speculative second replica), so
        // a read at ONE asks exactly one replica: the coordinator's own.
        self.schema(&format!(
            "CREATE TABLE IF NOT EXISTS {KEYSPACE}.register (key text PRIMARY KEY, value text) \
             WITH speculative_retry = 'NONE'"
        ))
        .await?;
        self.wait_alive(&[3, 3, 3], Duration::from_secs(120))
            .await
            .context("the three nodes did not see each other up")?;
        Ok(started.elapsed())
    }

    pub fn session(&self) -> &Session {
        self.session.as_ref().expect("the cluster is started")
    }

    async fn schema(&self, cql: &str) -> anyhow::Result<()> {
        let mut statement = Statement::new(cql);
        statement.set_consistency(Consistency::All);
        self.session()
            .query_unpaged(statement, ())
            .await
            .with_context(|| format!("schema change: {cql}"))?;
        self.session().await_schema_agreement().await?;
        Ok(())
    }

    /// Runs `cql` on one coordinator at `consistency`, with no retry.
    pub async fn on(
        &self,
        node: usize,
        consistency: Consistency,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<QueryResult, ExecutionError> {
        let mut statement = Statement::new(cql);
        statement.set_consistency(consistency);
        statement.set_execution_profile_handle(Some(self.pinned[node - 1].clone()));
        self.session().query_unpaged(statement, values).await
    }

    /// Writes `key` = `value` in the lab's register through `node`.
    pub async fn write(
        &self,
        node: usize,
        consistency: Consistency,
        key: &str,
        value: &str,
    ) -> Result<(), ExecutionError> {
        self.on(
            node,
            consistency,
            &format!("INSERT INTO {KEYSPACE}.register (key, value) VALUES (?, ?)"),
            (key, value),
        )
        .await
        .map(|_| ())
    }

    /// Reads `key` from the lab's register through `node` (`None`: no row).
    pub async fn read(
        &self,
        node: usize,
        consistency: Consistency,
        key: &str,
    ) -> Result<Option<String>, ExecutionError> {
        let result = self
            .on(
                node,
                consistency,
                &format!("SELECT value FROM {KEYSPACE}.register WHERE key = ?"),
                (key,),
            )
            .await?;
        // A SELECT always answers rows; a row that does not decode reads as no value.
        Ok(result
            .into_rows_result()
            .ok()
            .and_then(|rows| rows.maybe_first_row::<(Option<String>,)>().ok().flatten())
            .and_then(|(value,)| value))
    }

    /// How many replicas `node` believes alive (itself included): a read at
    /// ALL that it answers means all three; its `Unavailable` names the count.
    /// `None` while it cannot tell (a timeout: a peer not yet marked down).
    pub async fn alive_seen_by(&self, node: usize) -> Option<usize> {
        match self.read(node, Consistency::All, "alive-probe").await {
            Ok(_) => Some(3),
            Err(error) => unavailable(&error).map(|(_, alive)| alive as usize),
        }
    }

    /// Waits until node i sees `expected[i - 1]` replicas alive (0: skip a
    /// node that is down). Polls every 250 ms.
    pub async fn wait_alive(
        &self,
        expected: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let mut seen = Vec::new();
            for (i, &want) in expected.iter().enumerate() {
                seen.push(if want == 0 {
                    Some(0)
                } else {
                    self.alive_seen_by(i + 1).await
                });
            }
            let matches = expected
                .iter()
                .zip(&seen)
                .all(|(&want, got)| want == 0 || *got == Some(want));
            if matches {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("the nodes saw {seen:?} replicas alive, not {expected:?}, after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Hint files `node` holds for its peers: what `system_views.pending_hints`
    /// reports, or the `.hints` files in its hints directory, whichever is more
    /// (the virtual table lists a store's files only once its writer has
    /// closed one; the file being written is on disk from the first flush).
    pub async fn pending_hints(&self, node: usize) -> anyhow::Result<i64> {
        let reported = self.reported_pending_hints(node).await?;
        let dir = self.node(node).dir.join("cassandra/hints");
        let on_disk = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "hints"))
                    .count()
            })
            .unwrap_or(0);
        Ok(reported.max(i64::try_from(on_disk).unwrap_or(i64::MAX)))
    }

    async fn reported_pending_hints(&self, node: usize) -> anyhow::Result<i64> {
        let result = self
            .on(
                node,
                Consistency::One,
                "SELECT files FROM system_views.pending_hints",
                (),
            )
            .await?
            .into_rows_result()?;
        let mut total = 0_i64;
        for row in result.rows::<(Option<i32>,)>()? {
            total += i64::from(row?.0.unwrap_or(0));
        }
        Ok(total)
    }

    /// Stops a node as an operator would (SIGTERM, waiting for the exit).
    pub async fn stop(&self, index: usize) -> anyhow::Result<()> {
        self.script(self.node(index), "stop.sh").await
    }

    /// Starts a stopped node on its data again and waits until it answers CQL.
    pub async fn start_again(&self, index: usize) -> anyhow::Result<()> {
        let node = self.node(index);
        self.script(node, "start.sh").await?;
        self.script(node, "wait.sh").await
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to a node's JVM; after
    /// `KILL`, waits until the process is gone (a signal is delivered
    /// asynchronously, and `start.sh` must not find the dying JVM running).
    pub async fn signal(&self, index: usize, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .node(index)
            .pid()
            .with_context(|| format!("node {index} has no pid file"))?;
        crate::services::kill(pid, signal).await?;
        if signal == "KILL" {
            // A JVM's main thread turns zombie before its other threads are
            // gone, and its sockets close only with the last one: wait for
            // the CQL port to close too, or start.sh would find it answering.
            let started = Instant::now();
            let cql = self.node(index).cql();
            while crate::services::process_alive(pid)
                || tokio::net::TcpStream::connect(cql).await.is_ok()
            {
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("node {index} (pid {pid}) still answers 30 s after SIGKILL");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// `nodetool ARGS` against one node (a JVM start: seconds).
    pub async fn nodetool(&self, index: usize, args: &[&str]) -> anyhow::Result<String> {
        let node = self.node(index);
        let options = std::fs::read_to_string(self.scripts.join("cassandra-jvm17.options"))?;
        let mut command = Command::new(&self.java);
        // The jars need the server's module options on Java 17.
        for line in options.lines().map(str::trim) {
            if line.starts_with("--add-") {
                command.arg(line);
            }
        }
        let output = command
            .arg("-Xmx128m")
            .arg("-cp")
            .arg(format!("{}/lib/*", self.cassandra_home.display()))
            .arg("org.apache.cassandra.tools.NodeTool")
            .args(["-h", "127.0.0.1", "-p", &node.jmx_port.to_string()])
            .args(args)
            .output()
            .await
            .context("run nodetool")?;
        if !output.status.success() {
            bail!(
                "nodetool {} on node {index} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn script(&self, node: &Node, name: &str) -> anyhow::Result<()> {
        let output = Command::new(self.scripts.join(name))
            .arg("cassandra")
            .env("LOCAL_DIR", &node.dir)
            .env("CASSANDRA_ADDRESS", &node.address)
            .env("CASSANDRA_PORT", CQL_PORT.to_string())
            .env(
                "CASSANDRA_STORAGE_PORT",
                crate::firewall::STORAGE_PORT.to_string(),
            )
            .env("CASSANDRA_JMX_PORT", node.jmx_port.to_string())
            .env("CASSANDRA_HEAP", "512M")
            .env(
                "CASSANDRA_SEEDS",
                "127.0.0.1:7000,127.0.0.2:7000,127.0.0.3:7000",
            )
            .env("CASSANDRA_NUM_TOKENS", "1")
            .env("CASSANDRA_SNITCH", "GossipingPropertyFileSnitch")
            .env("CASSANDRA_EXTRA_YAML", node.dir.join("node.yaml"))
            .env("CASSANDRA_GROUP", node.group.to_string())
            .env("CASSANDRA_WAIT_TIMEOUT", "240")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("run scripts/{name}"))?;
        if !output.status.success() {
            bail!(
                "scripts/{name} cassandra ({}) failed: {}",
                node.name(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// A profile that sends every statement to one coordinator, once.
fn pinned_profile(address: SocketAddr) -> ExecutionProfileHandle {
    ExecutionProfile::builder()
        .load_balancing_policy(SingleTargetLoadBalancingPolicy::new(
            NodeIdentifier::NodeAddress(address),
            None,
        ))
        .retry_policy(Arc::new(FallthroughRetryPolicy))
        .request_timeout(Some(Duration::from_secs(20)))
        .build()
        .into_handle()
}

/// `(required, alive)` of an `Unavailable` answer.
pub fn unavailable(error: &ExecutionError) -> Option<(i32, i32)> {
    match error {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Unavailable {
                required, alive, ..
            },
            _,
        )) => Some((*required, *alive)),
        _ => None,
    }
}

/// How a statement's outcome reads in a table.
pub fn outcome<T: Shown>(result: &Result<T, ExecutionError>) -> String {
    match result {
        Ok(value) => value.shown(),
        Err(error) => match unavailable(error) {
            Some((required, alive)) => format!("Unavailable (required {required}, alive {alive})"),
            None => format!("error: {error}"),
        },
    }
}

/// A statement's result as a table shows it.
pub trait Shown {
    fn shown(&self) -> String;
}

impl Shown for () {
    fn shown(&self) -> String {
        "ok".to_owned()
    }
}

impl Shown for Option<String> {
    fn shown(&self) -> String {
        self.as_ref()
            .map_or_else(|| "no row".to_owned(), |value| format!("`{value}`"))
    }
}
