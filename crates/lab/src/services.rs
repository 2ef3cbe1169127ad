//! PostgreSQL and NATS (started with the project's scripts, as `make run`
//! does), and the services: the inventory, two timeline APIs (posts written at
//! QUORUM and at ONE) and the fan-out worker, each under a group id of its own
//! so the firewall can cut one service off from one store.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

pub const PG_PORT: u16 = 5432;
pub const NATS_PORT: u16 = 4222;

/// Runs `scripts/NAME postgres nats` with the lab's directory.
pub async fn stores_script(root: &Path, lab_dir: &Path, name: &str) -> anyhow::Result<()> {
    let output = Command::new(root.join("scripts").join(name))
        .args(["postgres", "nats"])
        .env("LOCAL_DIR", lab_dir.join("stores"))
        .env("PG_PORT", PG_PORT.to_string())
        .env("NATS_PORT", NATS_PORT.to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run scripts/{name}"))?;
    if !output.status.success() {
        bail!(
            "scripts/{name} postgres nats failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Sends a signal to a process (`kill -s SIGNAL PID`).
pub async fn kill(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .await?;
    if !status.success() {
        bail!("kill -s {signal} {pid} failed");
    }
    Ok(())
}

/// Whether a process exists and is not a zombie (exited, not yet reaped).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// One service process.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    binary: PathBuf,
    pub addr: String,
    pub group: u32,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Service {
    pub fn new(
        name: &'static str,
        binary: PathBuf,
        addr: &str,
        group: u32,
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> Self {
        Self {
            name,
            binary,
            addr: addr.to_owned(),
            group,
            env,
            log: log_dir.join(format!("{name}.log")),
            child: Mutex::new(None),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts the process (its log appended to `<lab>/log/<name>.log`) and
    /// waits until `/readyz` answers 200.
    pub async fn start(&self, http: &reqwest::Client) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("LOG_FORMAT", "json")
            .gid(self.group)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        *self.child.lock().await = Some(child);
        self.wait_ready(http, Duration::from_secs(90)).await?;
        Ok(started.elapsed())
    }

    pub async fn wait_ready(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return Ok(());
            }
            if let Some(child) = self.child.lock().await.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{} exited ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} not ready after {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL, and reaps the process.
    pub async fn kill(&self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.lock().await.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Whether the process is running.
    pub async fn running(&self) -> bool {
        match self.child.lock().await.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}
