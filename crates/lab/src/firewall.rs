//! Real partitions: nftables rules in the lab's own network namespace.
//!
//! Every process of the lab shares `lo`, and Cassandra's internode
//! connections leave from 127.0.0.1 whatever the node's address, so rules on
//! addresses alone cannot separate nodes. Each node and each service runs
//! under a group id of its own instead, and an output rule matches the
//! socket's group (`meta skgid`). A node is cut off from its peers by dropping
//! what it sends to the internode port and what anyone sends to its internode
//! address; its CQL port stays open, so clients still reach it (a true
//! minority side). Packets are dropped, not refused: a partition looks like
//! silence, as on a real network.

use anyhow::{Context, bail};
use tokio::process::Command;

/// The internode (storage) port of every Cassandra node.
pub const STORAGE_PORT: u16 = 7000;

const TABLE: &str = "inet lab";
const CHAIN: &str = "out";

#[derive(Debug)]
pub struct Firewall;

impl Firewall {
    /// Creates the lab's table with an empty output chain (accept by default).
    pub async fn create() -> anyhow::Result<Self> {
        let ruleset = format!(
            "table {TABLE} {{\n  chain {CHAIN} {{\n    type filter hook output priority 0; policy accept;\n  }}\n}}\n"
        );
        nft_stdin(&ruleset).await?;
        Ok(Self)
    }

    /// Cuts a Cassandra node (its group and its address) off from every peer;
    /// returns the rules added.
    pub async fn isolate_node(&self, group: u32, address: &str) -> anyhow::Result<Vec<String>> {
        let rules = vec![
            format!("meta skgid {group} tcp dport {STORAGE_PORT} drop"),
            format!("ip daddr {address} tcp dport {STORAGE_PORT} drop"),
        ];
        for rule in &rules {
            self.add(rule).await?;
        }
        Ok(rules)
    }

    /// Cuts node `index` of the highly available PostgreSQL (its etcd member,
    /// Patroni and PostgreSQL) off from the other two nodes, both ways; clients
    /// (HAProxy, the services) still reach it. Returns the rules added.
    pub async fn isolate_pg_node(
        &self,
        cluster: &crate::pg_cluster::PgCluster,
        index: usize,
    ) -> anyhow::Result<Vec<String>> {
        let node = &cluster.nodes[index - 1];
        let ports = crate::pg_cluster::NODE_PORTS
            .map(|p| p.to_string())
            .join(", ");
        let others = cluster
            .nodes
            .iter()
            .filter(|other| other.index != index)
            .map(|other| other.group.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rules = vec![
            format!(
                "meta skgid {} ip daddr != {} tcp dport {{ {ports} }} drop",
                node.group, node.address
            ),
            format!(
                "ip daddr {} tcp dport {{ {ports} }} meta skgid {{ {others} }} drop",
                node.address
            ),
        ];
        for rule in &rules {
            self.add(rule).await?;
        }
        Ok(rules)
    }

    /// Drops everything the processes of `group` send to `port` (a service
    /// cut off from PostgreSQL or NATS); returns the rule added.
    pub async fn cut(&self, group: u32, port: u16) -> anyhow::Result<String> {
        let rule = format!("meta skgid {group} tcp dport {port} drop");
        self.add(&rule).await?;
        Ok(rule)
    }

    /// Removes every rule: the network is whole again.
    pub async fn heal(&self) -> anyhow::Result<()> {
        nft(&["flush", "chain", "inet", "lab", CHAIN]).await
    }

    async fn add(&self, rule: &str) -> anyhow::Result<()> {
        let mut args = vec!["add", "rule", "inet", "lab", CHAIN];
        args.extend(rule.split_whitespace());
        nft(&args).await
    }
}

async fn nft(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("nft")
        .args(args)
        .output()
        .await
        .context("running nft (scripts/install.sh --lab installs nftables)")?;
    if !output.status.success() {
        bail!(
            "nft {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

async fn nft_stdin(ruleset: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (scripts/install.sh --lab installs nftables)")?;
    let mut stdin = child.stdin.take().context("nft's stdin")?;
    stdin.write_all(ruleset.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "nft -f failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
