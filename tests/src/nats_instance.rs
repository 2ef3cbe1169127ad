//! A nats-server (JetStream) of a test's own, on a free loopback port with its
//! own store, that the test may kill and start again.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A private nats-server; killed and its store deleted on drop.
#[derive(Debug)]
pub struct NatsInstance {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsInstance {
    pub async fn start() -> Self {
        let port = crate::server_port().await;
        let store =
            std::env::temp_dir().join(format!("timeline-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).expect("store dir");
        let mut nats = Self {
            port,
            store,
            child: None,
        };
        nats.restart().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port and store, and waits until it listens.
    pub async fn restart(&mut self) {
        let mut command = Command::new(nats_server_binary());
        command.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ]);
        command.arg(&self.store);
        if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        self.child = Some(
            command
                .kill_on_drop(true)
                .spawn()
                .expect("start nats-server"),
        );
        let port = self.port;
        crate::eventually(
            "nats-server to listen",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill nats-server");
            child.wait().await.expect("reap nats-server");
        }
    }
}

impl Drop for NatsInstance {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The `nats-server` to run: `$NATS_SERVER`, else the first on `PATH`, else
/// the Debian package's `/usr/sbin/nats-server`.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}
