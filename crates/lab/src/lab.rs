//! The lab itself: where things live, the stores and services it started,
//! and how it puts everything back after a scenario (heal the network,
//! resume and restart nodes, restart services).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::Cluster;
use crate::firewall::Firewall;
use crate::http::Http;
use crate::pg_cluster::PgCluster;
use crate::services::{self, Service};

/// Where the lab runs from (set by `scripts/lab.sh`).
#[derive(Debug, Clone, clap::Args)]
pub struct Paths {
    /// The lab's data and logs (wiped at the start).
    #[arg(long, env = "CAP_LAB_DIR")]
    pub dir: PathBuf,
    /// The clone's root (scripts/, crates/lab/cassandra/).
    #[arg(long, env = "CAP_LAB_ROOT")]
    pub root: PathBuf,
    /// Where the service binaries are.
    #[arg(long, env = "CAP_LAB_BIN_DIR")]
    pub bin_dir: PathBuf,
    /// The linearizability checker (built by scripts/lab.sh).
    #[arg(long, env = "CAP_LAB_CHECKER")]
    pub checker: PathBuf,
    /// The Cassandra jars (scripts/install.sh).
    #[arg(long, env = "CAP_LAB_CASSANDRA_HOME")]
    pub cassandra_home: PathBuf,
    #[arg(long, env = "CAP_LAB_JAVA", default_value = "java")]
    pub java: String,
    /// Patroni's venv (scripts/install.sh --lab).
    #[arg(long, env = "CAP_LAB_PATRONI_HOME")]
    pub patroni_home: PathBuf,
}

/// Group ids the firewall matches (Cassandra nodes use 7101–7103).
pub mod groups {
    pub const INVENTORY: u32 = 7201;
    pub const TIMELINE: u32 = 7202;
    pub const TIMELINE_ONE: u32 = 7203;
    pub const WORKER: u32 = 7204;
    pub const INVENTORY_HA: u32 = 7205;
}

/// What a running lab has.
#[derive(Debug)]
pub struct Lab {
    pub paths: Paths,
    pub cluster: Cluster,
    pub firewall: Firewall,
    pub http: Http,
    probe: reqwest::Client,
    pub inventory: Service,
    /// The timeline API with the default post write level (QUORUM).
    pub timeline: Service,
    /// A second timeline API writing posts at ONE (`POST_WRITE_CONSISTENCY=one`).
    pub timeline_one: Service,
    pub worker: Service,
    /// The highly available PostgreSQL (Patroni, etcd, HAProxy).
    pub pg_cluster: PgCluster,
    /// A second inventory, on the highly available PostgreSQL through HAProxy.
    pub inventory_ha: Service,
    pub pg: sqlx::PgPool,
    pub cluster_start: Duration,
    pub pg_cluster_start: Duration,
    pub stack_start: Duration,
}

/// The inventory's timeouts in the lab (every refusal comes within these).
pub const INVENTORY_ACQUIRE_TIMEOUT_MS: u64 = 1000;
pub const INVENTORY_LOCK_TIMEOUT_MS: u64 = 2000;
pub const INVENTORY_REQUEST_TIMEOUT_SECS: u64 = 3;

/// Where, under the lab's directory, its development key pair lives.
const AUTH_DIR: &str = "auth";

impl Lab {
    /// The lab's development signing key (for `capctl`'s tokens).
    pub fn signing_key(&self) -> std::path::PathBuf {
        service_kit::auth::DevKeys::in_dir(&self.paths.dir.join(AUTH_DIR)).signing_key
    }

    /// Starts everything; prints what it does.
    pub async fn start(paths: Paths) -> anyhow::Result<Self> {
        let origin = Instant::now();
        in_private_namespace()?;
        if paths.dir.exists() {
            std::fs::remove_dir_all(&paths.dir).context("wipe the previous lab")?;
        }
        let log_dir = paths.dir.join("log");
        std::fs::create_dir_all(&log_dir)?;

        let firewall = Firewall::create().await?;
        println!("- nftables table `inet lab` created in the lab's network namespace");

        services::stores_script(&paths.root, &paths.dir, "start.sh").await?;
        let mut cluster = Cluster::new(
            &paths.dir,
            &paths.root,
            paths.cassandra_home.clone(),
            paths.java.clone(),
        );
        let cluster_start = cluster
            .start(&paths.root.join("crates/lab/cassandra/node.yaml"))
            .await?;
        println!(
            "- Cassandra: 3 nodes (127.0.0.1-3, RF=3) up and seeing each other in {:.1} s",
            cluster_start.as_secs_f64()
        );
        services::stores_script(&paths.root, &paths.dir, "wait.sh").await?;
        println!("- PostgreSQL on 127.0.0.1:5432 and NATS (JetStream) on 127.0.0.1:4222 up");
        let (pg_cluster, pg_cluster_start) =
            PgCluster::start(&paths.dir, &paths.root, &paths.patroni_home, &log_dir).await?;
        println!(
            "- highly available PostgreSQL: 3 nodes (127.0.0.1-3:5433, Patroni, etcd, synchronous replication) behind HAProxy (127.0.0.1:5000), one primary and two streaming standbys in {:.1} s",
            pg_cluster_start.as_secs_f64()
        );

        // The development key pair: the services verify with its public half,
        // the lab's clients (and capctl) mint tokens with its private half.
        let keys = service_kit::auth::DevKeys::ensure(&paths.dir.join(AUTH_DIR))?;
        let issuer = service_kit::auth::TokenIssuer::from_pem_file(
            &keys.signing_key,
            service_kit::auth::TokenIssuer::DEFAULT_ISSUER,
            service_kit::auth::TokenIssuer::DEFAULT_AUDIENCE,
        )?;
        println!(
            "- development key pair created; the services verify bearer tokens with {}",
            keys.verifying_key.display()
        );
        let verifying_key = keys.verifying_key.to_string_lossy().into_owned();

        let pg = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect("postgres://postgres@127.0.0.1:5432/inventory")
            .await
            .context("connect to the lab's PostgreSQL")?;

        let bin = |name: &str| paths.bin_dir.join(name);
        // Every service verifies tokens with the lab's key.
        let env = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .chain([("AUTH_VERIFYING_KEY_FILE".to_owned(), verifying_key.clone())])
                .collect()
        };
        let nodes = cluster.contact_points();
        let timeline_env = |addr: &str, level: &str| {
            env(&[
                ("TIMELINE_ADDR", addr.to_owned()),
                ("CASSANDRA_NODES", nodes.clone()),
                ("CASSANDRA_REPLICATION_FACTOR", "3".into()),
                ("POST_WRITE_CONSISTENCY", level.into()),
                ("NATS_URL", "nats://127.0.0.1:4222".into()),
                ("OUTBOX_RELAY_AFTER_SECS", "2".into()),
            ])
        };
        // Both inventories alike but for their address and database.
        let inventory_env = |addr: &str, database_url: String| {
            env(&[
                ("INVENTORY_ADDR", addr.to_owned()),
                ("DATABASE_URL", database_url),
                (
                    "DATABASE_ACQUIRE_TIMEOUT_MS",
                    INVENTORY_ACQUIRE_TIMEOUT_MS.to_string(),
                ),
                (
                    "DATABASE_LOCK_TIMEOUT_MS",
                    INVENTORY_LOCK_TIMEOUT_MS.to_string(),
                ),
                ("DATABASE_STATEMENT_TIMEOUT_MS", "2500".into()),
                (
                    "HTTP_REQUEST_TIMEOUT_SECS",
                    INVENTORY_REQUEST_TIMEOUT_SECS.to_string(),
                ),
                ("READINESS_TIMEOUT_MS", "1000".into()),
                ("RESERVATION_DEFAULT_TTL_SECS", "3600".into()),
            ])
        };
        let inventory = Service::new(
            "inventory",
            bin("inventory"),
            "127.0.0.1:8081",
            groups::INVENTORY,
            inventory_env(
                "127.0.0.1:8081",
                "postgres://postgres@127.0.0.1:5432/inventory".into(),
            ),
            &log_dir,
        );
        let inventory_ha = Service::new(
            "inventory-ha",
            bin("inventory"),
            "127.0.0.1:8085",
            groups::INVENTORY_HA,
            inventory_env("127.0.0.1:8085", PgCluster::url("inventory")),
            &log_dir,
        );
        let timeline = Service::new(
            "timeline",
            bin("timeline"),
            "127.0.0.1:8082",
            groups::TIMELINE,
            timeline_env("127.0.0.1:8082", "quorum"),
            &log_dir,
        );
        let timeline_one = Service::new(
            "timeline-one",
            bin("timeline"),
            "127.0.0.1:8084",
            groups::TIMELINE_ONE,
            timeline_env("127.0.0.1:8084", "one"),
            &log_dir,
        );
        let worker = Service::new(
            "timeline-worker",
            bin("timeline-worker"),
            "127.0.0.1:8083",
            groups::WORKER,
            env(&[
                ("TIMELINE_WORKER_ADDR", "127.0.0.1:8083".into()),
                ("CASSANDRA_NODES", nodes.clone()),
                ("CASSANDRA_REPLICATION_FACTOR", "3".into()),
                ("NATS_URL", "nats://127.0.0.1:4222".into()),
                ("FANOUT_CHUNK_SIZE", "50".into()),
                ("FANOUT_RETRY_MAX_DELAY_MS", "2000".into()),
            ]),
            &log_dir,
        );
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        // The first timeline process migrates the keyspace; the others find it done.
        for service in [&inventory, &inventory_ha, &timeline, &timeline_one, &worker] {
            let took = service.start(&probe).await?;
            println!(
                "- {} on http://{} ready in {:.1} s",
                service.name,
                service.addr,
                took.as_secs_f64()
            );
        }
        let stack_start = origin.elapsed();
        Ok(Self {
            http: Http::new(Instant::now(), Duration::from_secs(15), issuer)?,
            paths,
            cluster,
            firewall,
            probe,
            inventory,
            timeline,
            timeline_one,
            worker,
            pg_cluster,
            inventory_ha,
            pg,
            cluster_start,
            pg_cluster_start,
            stack_start,
        })
    }

    /// Puts the lab back as it was after a scenario, whatever it did: heals
    /// the network, resumes hung nodes, restarts stopped ones and dead
    /// services, turns hints back on, and waits until every node sees three.
    pub async fn recover(&self) -> anyhow::Result<()> {
        self.firewall.heal().await?;
        for node in &self.cluster.nodes {
            if let Some(pid) = node.pid() {
                let _ = services::kill(pid, "CONT").await;
            }
            if node.pid().is_none_or(|pid| !services::process_alive(pid)) {
                self.cluster.start_again(node.index).await?;
            }
        }
        self.cluster
            .wait_alive(&[3, 3, 3], Duration::from_secs(120))
            .await?;
        for node in 1..=3 {
            self.cluster.nodetool(node, &["enablehandoff"]).await.ok();
            if !self.pg_cluster.node_running(node).await {
                self.pg_cluster.start_node(node).await?;
            }
        }
        self.pg_cluster.wait_whole(Duration::from_secs(120)).await?;
        for service in self.services() {
            if !service.running().await {
                service.start(&self.probe).await?;
            }
            service
                .wait_ready(&self.probe, Duration::from_secs(60))
                .await?;
        }
        Ok(())
    }

    pub fn services(&self) -> [&Service; 4] {
        [
            &self.inventory,
            &self.timeline,
            &self.timeline_one,
            &self.worker,
        ]
    }

    pub fn probe(&self) -> &reqwest::Client {
        &self.probe
    }

    /// A file under the lab's directory (histories, visualisations).
    pub fn file(&self, name: &str) -> PathBuf {
        self.paths.dir.join(name)
    }
}

/// The lab adds firewall rules and binds the stores' usual ports: it refuses
/// to run anywhere but in a network namespace of its own (only `lo`), which
/// `scripts/lab.sh` creates.
fn in_private_namespace() -> anyhow::Result<()> {
    // /proc/net shows the reader's namespace (/sys/class/net the mounter's).
    let interfaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .context("list network interfaces")?
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_owned())
        .collect();
    if interfaces != ["lo"] {
        bail!(
            "cap-lab runs only in a network namespace of its own (found interfaces {interfaces:?}); \
             start it with `make lab` (scripts/lab.sh)"
        );
    }
    Ok(())
}
