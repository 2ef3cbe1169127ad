//! A single-node Apache Cassandra of a test's own, on free loopback ports,
//! started and stopped with the project's own scripts (`scripts/start.sh`,
//! `wait.sh`, `stop.sh`), so a test can take it down for real (the shared
//! node must stay up for every other test).

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

/// A private Cassandra node; stopped and deleted on drop.
#[derive(Debug)]
pub struct CassandraInstance {
    dir: PathBuf,
    pub port: u16,
    storage_port: u16,
    jmx_port: u16,
}

impl CassandraInstance {
    /// Starts a fresh node and waits until it answers CQL.
    pub async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("cap-cassandra-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the node's directory");
        let instance = Self {
            dir,
            port: crate::server_port().await,
            storage_port: crate::server_port().await,
            jmx_port: crate::server_port().await,
        };
        instance.start_again().await;
        instance
    }

    /// The contact point of this node.
    pub fn nodes(&self) -> Vec<String> {
        vec![format!("127.0.0.1:{}", self.port)]
    }

    /// Starts the (stopped) node on its ports and data, and waits until it answers CQL.
    pub async fn start_again(&self) {
        self.script("start.sh").await;
        self.script("wait.sh").await;
    }

    /// Stops the node (SIGTERM, waiting for the process to exit), as an operator would.
    pub async fn stop(&self) {
        self.script("stop.sh").await;
    }

    async fn script(&self, name: &str) {
        let path = scripts_dir().join(name);
        let output = Command::new(&path)
            .arg("cassandra")
            .env("LOCAL_DIR", &self.dir)
            .env("CASSANDRA_PORT", self.port.to_string())
            .env("CASSANDRA_STORAGE_PORT", self.storage_port.to_string())
            .env("CASSANDRA_JMX_PORT", self.jmx_port.to_string())
            .env("CASSANDRA_HEAP", "512M")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run a stack script");
        assert!(
            output.status.success(),
            "{} cassandra failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for CassandraInstance {
    fn drop(&mut self) {
        let _ = std::process::Command::new(scripts_dir().join("stop.sh"))
            .arg("cassandra")
            .env("LOCAL_DIR", &self.dir)
            .env("CASSANDRA_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The project's `scripts/` directory.
fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}
