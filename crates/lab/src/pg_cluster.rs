//! The lab's highly available PostgreSQL: three PostgreSQL 15 instances on
//! 127.0.0.1, .2 and .3 (port 5433) run by Patroni, three etcd members whose
//! Raft log is the consensus Patroni's leader key lives in, and HAProxy on
//! 127.0.0.1:5000 routing clients to the primary only (Patroni's REST API
//! answers `GET /primary` with 200 on the leader). Every process of node i
//! (its etcd member, Patroni, PostgreSQL) runs under group 7310 + i, so the
//! firewall can cut the node off and `pkill -G` can crash it whole.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// PostgreSQL's port on each node (5432 is the lab's single server).
pub const PG_PORT: u16 = 5433;
/// HAProxy's port: the primary, wherever it is.
pub const PRIMARY_PORT: u16 = 5000;
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
const REST_PORT: u16 = 8008;
/// The ports a node's processes talk to each other on.
pub const NODE_PORTS: [u16; 4] = [ETCD_CLIENT_PORT, ETCD_PEER_PORT, PG_PORT, REST_PORT];
pub const HAPROXY_GROUP: u32 = 7400;

#[derive(Debug)]
pub struct PgNode {
    pub index: usize,
    pub address: String,
    pub group: u32,
    dir: PathBuf,
    etcd: Mutex<Option<Child>>,
    patroni: Mutex<Option<Child>>,
}

#[derive(Debug)]
pub struct PgCluster {
    pub nodes: Vec<PgNode>,
    python: PathBuf,
    log_dir: PathBuf,
    haproxy: Mutex<Option<Child>>,
    http: reqwest::Client,
}

impl PgCluster {
    /// Starts etcd, Patroni and HAProxy; waits until a primary and two
    /// streaming standbys (one synchronous) exist; creates the `inventory`
    /// database. Returns how long that took.
    pub async fn start(
        lab_dir: &Path,
        root: &Path,
        patroni_home: &Path,
        log_dir: &Path,
    ) -> anyhow::Result<(Self, Duration)> {
        let started = Instant::now();
        let template = std::fs::read_to_string(root.join("crates/lab/patroni/patroni.yml.in"))?;
        let pg_bin = pg_bindir()?;
        let nodes: Vec<PgNode> = (1..=3)
            .map(|index| PgNode {
                index,
                address: format!("127.0.0.{index}"),
                group: 7310 + index as u32,
                dir: lab_dir.join(format!("pg-{index}")),
                etcd: Mutex::new(None),
                patroni: Mutex::new(None),
            })
            .collect();
        for node in &nodes {
            std::fs::create_dir_all(node.dir.join("etcd"))?;
            let config = template
                .replace("@INDEX@", &node.index.to_string())
                .replace("@DIR@", &node.dir.display().to_string())
                .replace("@PG_BIN@", &pg_bin);
            std::fs::write(node.dir.join("patroni.yml"), config)?;
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&node.dir))
            .await?;
        }
        let cluster = Self {
            nodes,
            python: patroni_home.join("bin/python"),
            log_dir: log_dir.to_owned(),
            haproxy: Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        for node in &cluster.nodes {
            cluster.start_etcd(node, true).await?;
        }
        for node in &cluster.nodes {
            cluster.start_patroni(node).await?;
        }
        let log = log_file(log_dir, "haproxy")?;
        let haproxy = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(root.join("crates/lab/patroni/haproxy.cfg"))
            .gid(HAPROXY_GROUP)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start haproxy (scripts/install.sh --lab installs it)")?;
        *cluster.haproxy.lock().await = Some(haproxy);
        cluster
            .wait_whole(Duration::from_secs(180))
            .await
            .context("the PostgreSQL cluster did not form")?;
        let mut admin = cluster.connect_primary("postgres").await?;
        sqlx::raw_sql("CREATE DATABASE inventory")
            .execute(&mut admin)
            .await
            .context("create the inventory database on the cluster")?;
        Ok((cluster, started.elapsed()))
    }

    async fn start_etcd(&self, node: &PgNode, new: bool) -> anyhow::Result<()> {
        let peers = (1..=3)
            .map(|i| format!("pg{i}=http://127.0.0.{i}:{ETCD_PEER_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let url = |port: u16| format!("http://{}:{port}", node.address);
        let log = log_file(&self.log_dir, &format!("etcd-{}", node.index))?;
        let child = Command::new("etcd")
            .arg("--name")
            .arg(format!("pg{}", node.index))
            .arg("--data-dir")
            .arg(node.dir.join("etcd"))
            .args(["--listen-client-urls", &url(ETCD_CLIENT_PORT)])
            .args(["--advertise-client-urls", &url(ETCD_CLIENT_PORT)])
            .args(["--listen-peer-urls", &url(ETCD_PEER_PORT)])
            .args(["--initial-advertise-peer-urls", &url(ETCD_PEER_PORT)])
            .args(["--initial-cluster", &peers])
            .args(["--initial-cluster-token", "cap-lab"])
            .args([
                "--initial-cluster-state",
                if new { "new" } else { "existing" },
            ])
            // Loopback: a 100 ms heartbeat and a 1 s election timeout.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .gid(node.group)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start etcd (scripts/install.sh --lab installs it)")?;
        *node.etcd.lock().await = Some(child);
        Ok(())
    }

    async fn start_patroni(&self, node: &PgNode) -> anyhow::Result<()> {
        let log = log_file(&self.log_dir, &format!("patroni-{}", node.index))?;
        let child = Command::new(&self.python)
            .args(["-m", "patroni"])
            .arg(node.dir.join("patroni.yml"))
            .uid(postgres_uid()?)
            .gid(node.group)
            .current_dir(&node.dir)
            .env("HOME", &node.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start patroni (scripts/install.sh --lab installs it)")?;
        *node.patroni.lock().await = Some(child);
        Ok(())
    }

    /// Crashes node i whole (SIGKILL to its etcd member, Patroni and
    /// PostgreSQL): a machine that lost power.
    pub async fn kill_node(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index - 1];
        let _ = Command::new("pkill")
            .args(["-KILL", "-G", &node.group.to_string()])
            .status()
            .await?;
        for child in [&node.etcd, &node.patroni] {
            if let Some(mut child) = child.lock().await.take() {
                let _ = child.wait().await;
            }
        }
        Ok(())
    }

    /// SIGKILLs node i's PostgreSQL server (its postmaster, from
    /// `postmaster.pid`); Patroni and etcd on the node stay up.
    pub async fn kill_postgres(&self, index: usize) -> anyhow::Result<u32> {
        let node = &self.nodes[index - 1];
        let pid: u32 = std::fs::read_to_string(node.dir.join("data/postmaster.pid"))
            .context("node's postmaster.pid")?
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .context("a pid in postmaster.pid")?;
        crate::services::kill(pid, "KILL").await?;
        Ok(pid)
    }

    /// Starts a crashed node again on its data: it rejoins as a standby
    /// (Patroni rewinds it with pg_rewind if it had diverged).
    pub async fn start_node(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index - 1];
        self.start_etcd(node, false).await?;
        self.start_patroni(node).await
    }

    /// Whether node i's processes are all running.
    pub async fn node_running(&self, index: usize) -> bool {
        let node = &self.nodes[index - 1];
        for child in [&node.etcd, &node.patroni] {
            let running = match child.lock().await.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(None)),
                None => false,
            };
            if !running {
                return false;
            }
        }
        true
    }

    /// Node i's view of itself from its REST API (`GET /patroni`): role and state.
    pub async fn status(&self, index: usize) -> Option<Value> {
        let url = format!("http://127.0.0.{index}:{REST_PORT}/patroni");
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    /// The node whose REST API says it is the primary (holds the leader key).
    pub async fn primary(&self) -> Option<usize> {
        for index in 1..=3 {
            let url = format!("http://127.0.0.{index}:{REST_PORT}/primary");
            if let Ok(response) = self.http.get(url).send().await
                && response.status() == 200
            {
                return Some(index);
            }
        }
        None
    }

    /// The cluster as the leader sees it (`GET /cluster`).
    pub async fn members(&self) -> Option<Value> {
        for index in 1..=3 {
            let url = format!("http://127.0.0.{index}:{REST_PORT}/cluster");
            if let Ok(response) = self.http.get(url).send().await
                && let Ok(body) = response.json::<Value>().await
            {
                return Some(body);
            }
        }
        None
    }

    /// The synchronous standby (the only node a switchover may promote in
    /// synchronous mode, as it has every acknowledged commit).
    pub async fn sync_standby(&self) -> Option<usize> {
        let members = self.members().await?;
        members["members"]
            .as_array()?
            .iter()
            .find(|m| m["role"] == "sync_standby")?["name"]
            .as_str()?
            .strip_prefix("pg")?
            .parse()
            .ok()
    }

    /// Waits until there is one leader and two streaming standbys, one of
    /// them synchronous; returns how long it took.
    pub async fn wait_whole(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if let Some(members) = self.members().await {
                let list = members["members"].as_array().cloned().unwrap_or_default();
                let leaders = list.iter().filter(|m| m["role"] == "leader").count();
                let streaming = list
                    .iter()
                    .filter(|m| m["role"] != "leader" && m["state"] == "streaming")
                    .count();
                let sync = list.iter().any(|m| m["role"] == "sync_standby");
                if leaders == 1 && streaming == 2 && sync && list.len() == 3 {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "not one leader and two streaming standbys after {timeout:?}: {:?}",
                    self.members().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether node i's PostgreSQL, asked directly, is a standby (`None`: no answer).
    pub async fn in_recovery(&self, index: usize) -> Option<bool> {
        use sqlx::Connection;
        let url =
            format!("postgres://postgres:lab@127.0.0.{index}:{PG_PORT}/postgres?connect_timeout=1");
        let mut conn =
            tokio::time::timeout(Duration::from_secs(2), sqlx::PgConnection::connect(&url))
                .await
                .ok()?
                .ok()?;
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&mut conn),
        )
        .await
        .ok()?
        .ok()
    }

    /// A connection to `database` on the primary, through HAProxy.
    pub async fn connect_primary(&self, database: &str) -> anyhow::Result<sqlx::PgConnection> {
        use sqlx::Connection;
        Ok(sqlx::PgConnection::connect(&Self::url(database)).await?)
    }

    /// The URL clients use: HAProxy, which sends them to the primary.
    pub fn url(database: &str) -> String {
        format!("postgres://postgres:lab@127.0.0.1:{PRIMARY_PORT}/{database}")
    }

    /// A planned switchover from the current leader to `candidate` (`POST /switchover`).
    pub async fn switchover(&self, leader: usize, candidate: usize) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.{leader}:{REST_PORT}/switchover");
        let response = reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({ "leader": format!("pg{leader}"), "candidate": format!("pg{candidate}") }))
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("switchover refused: {status} {text}");
        }
        Ok(text)
    }

    /// How many times Patroni has run pg_rewind on node i (its log says so).
    pub fn rewinds(&self, index: usize) -> usize {
        std::fs::read_to_string(self.log_dir.join(format!("patroni-{index}.log")))
            .map(|log| {
                log.lines()
                    .filter(|line| {
                        line.contains("running pg_rewind from") && !line.contains("in progress")
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?)
}

async fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().await?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn postgres_uid() -> anyhow::Result<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres")).then(|| fields.get(2)?.parse().ok())?
        })
        .context("no postgres user (scripts/install.sh installs PostgreSQL)")
}

/// The newest installed PostgreSQL's binaries (as scripts/lib.sh finds them).
fn pg_bindir() -> anyhow::Result<String> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    let version = versions
        .last()
        .context("no PostgreSQL under /usr/lib/postgresql")?;
    Ok(format!("/usr/lib/postgresql/{version}/bin"))
}
