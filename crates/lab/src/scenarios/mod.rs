//! Every claim of the trade-off as a scenario: each makes a real fault,
//! records what clients saw, and checks the claim.

mod ap_available;
mod convergence;
mod cp_refuses;
mod crash_restart;
mod linearizability;
mod nwr;
mod pg_failover;
mod pg_sync_cost;
mod queue_partition;
mod read_your_writes;

use std::time::Duration;

use crate::lab::Lab;
use crate::report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    CpRefuses,
    ApAvailable,
    Nwr,
    Convergence,
    ReadYourWrites,
    QueuePartition,
    CrashRestart,
    Linearizability,
    PgPartition,
    PgPrimaryKill,
    PgNodeCrash,
    PgSwitchover,
    PgSyncCost,
}

impl Scenario {
    pub const ALL: [Self; 13] = [
        Self::CpRefuses,
        Self::ApAvailable,
        Self::Nwr,
        Self::Convergence,
        Self::ReadYourWrites,
        Self::QueuePartition,
        Self::CrashRestart,
        Self::Linearizability,
        Self::PgPartition,
        Self::PgPrimaryKill,
        Self::PgNodeCrash,
        Self::PgSwitchover,
        Self::PgSyncCost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::CpRefuses => "cp-refuses",
            Self::ApAvailable => "ap-available",
            Self::Nwr => "nwr",
            Self::Convergence => "convergence",
            Self::ReadYourWrites => "read-your-writes",
            Self::QueuePartition => "queue-partition",
            Self::CrashRestart => "crash-restart",
            Self::Linearizability => "linearizability",
            Self::PgPartition => "pg-partition",
            Self::PgPrimaryKill => "pg-primary-kill",
            Self::PgNodeCrash => "pg-node-crash",
            Self::PgSwitchover => "pg-switchover",
            Self::PgSyncCost => "pg-sync-cost",
        }
    }

    pub fn claim(self) -> &'static str {
        match self {
            Self::CpRefuses => {
                "CP refuses under partition: the inventory cut off from PostgreSQL answers 503 + \
                 Retry-After, writes nothing partial, recovers by itself, and a retried \
                 Idempotency-Key is answered exactly once"
            }
            Self::ApAvailable => {
                "AP stays available: with one and then two of three nodes cut off, reads at ONE \
                 answer while QUORUM and ALL refuse; posts are taken when their write level \
                 allows it, and every acknowledged post reaches every follower after the heal"
            }
            Self::Nwr => {
                "N, W, R: with {node 1} | {node 2, node 3}, W+R > N reads the latest value and \
                 W+R <= N may not"
            }
            Self::Convergence => {
                "Convergence after heal, and its cost: hints drain, blocking read repair and \
                 nodetool repair fix stale replicas, and last write wins loses an acknowledged write"
            }
            Self::ReadYourWrites => {
                "Read-your-writes on a real cluster: with one node of three down a post at QUORUM \
                 is visible to its author at once; ALL refuses until the node returns"
            }
            Self::QueuePartition => {
                "Queue partition: the timeline API cut off from NATS still takes posts (outbox); \
                 the relay catches up after the heal; nothing lost, nothing duplicated"
            }
            Self::CrashRestart => {
                "Worker crash and store faults mid fan-out: a SIGKILLed worker, a SIGKILLed and \
                 restarted node and a hung (SIGSTOP) node lose nothing; every follower converges"
            }
            Self::Linearizability => {
                "C in CAP, checked: inventory histories stay linearizable across a database \
                 partition; a register written and read at ONE across a node partition does not"
            }
            Self::PgPartition => {
                "CP on a consensus-run PostgreSQL: a primary cut off from the majority stops \
                 taking writes once it loses its leader key, the majority elects another, no \
                 acknowledged write is lost and the history stays linearizable"
            }
            Self::PgPrimaryKill => {
                "A primary killed (SIGKILL) in a flash sale: the synchronous standby takes over \
                 within 15 s, every acknowledged reservation exists, nothing is oversold, the \
                 ledger replays, the history is linearizable, the old primary returns as a standby"
            }
            Self::PgNodeCrash => {
                "A primary's whole node lost in a flash sale: once its leader key expires the \
                 majority fails over, nothing acknowledged is lost, and the node returns as a standby"
            }
            Self::PgSwitchover => {
                "A planned switchover costs a short refusal, never a lost or doubled reservation"
            }
            Self::PgSyncCost => {
                "The price of CP beyond one machine: the flash sale and a spread workload on one \
                 server and on the 3-node synchronous cluster, measured in the same run"
            }
        }
    }

    /// Runs the scenario; an error ends it as failed (the lab is put back by the caller).
    pub async fn run(self, lab: &Lab) -> (bool, String) {
        let mut report = Report::new(self.name(), self.claim());
        let result = match self {
            Self::CpRefuses => cp_refuses::run(lab, &mut report).await,
            Self::ApAvailable => ap_available::run(lab, &mut report).await,
            Self::Nwr => nwr::run(lab, &mut report).await,
            Self::Convergence => convergence::run(lab, &mut report).await,
            Self::ReadYourWrites => read_your_writes::run(lab, &mut report).await,
            Self::QueuePartition => queue_partition::run(lab, &mut report).await,
            Self::CrashRestart => crash_restart::run(lab, &mut report).await,
            Self::Linearizability => linearizability::run(lab, &mut report).await,
            Self::PgPartition => pg_failover::partition(lab, &mut report).await,
            Self::PgPrimaryKill => pg_failover::primary_kill(lab, &mut report).await,
            Self::PgNodeCrash => pg_failover::node_crash(lab, &mut report).await,
            Self::PgSwitchover => pg_failover::switchover(lab, &mut report).await,
            Self::PgSyncCost => pg_sync_cost::run(lab, &mut report).await,
        };
        if let Err(error) = result {
            report.error(&error);
        }
        report.finish()
    }
}

/// A name no earlier run used (users, skus, keys).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// `count` new users (named after `prefix`) who follow `author`, 16 follows
/// in flight; fails unless every follow is taken.
pub async fn followers_of(
    lab: &Lab,
    author: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt;
    let followers: Vec<String> = (0..count)
        .map(|i| unique(&format!("{prefix}{i}")))
        .collect();
    let follows: Vec<_> = followers
        .iter()
        .map(|follower| {
            let url = lab
                .timeline
                .url(&format!("/v1/users/{follower}/following/{author}"));
            let http = lab.http.as_user(follower);
            async move { http.send(reqwest::Method::PUT, &url, None, &[]).await }
        })
        .collect();
    let answers: Vec<_> = futures::stream::iter(follows)
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(refused) = answers.iter().find(|call| !call.is(204)) {
        anyhow::bail!(
            "a follow of {author} was refused: {:?} {}",
            refused.status,
            refused.body
        );
    }
    Ok(followers)
}

/// Cuts the nodes `isolated` off from their peers, then waits until every
/// node's failure detector agrees (each isolated node alone, the others seeing
/// the rest), so requests fail fast as Unavailable instead of timing out.
pub async fn partition_nodes(
    lab: &Lab,
    report: &mut Report,
    isolated: &[usize],
) -> anyhow::Result<()> {
    for &index in isolated {
        let node = lab.cluster.node(index);
        let rules = lab.firewall.isolate_node(node.group, &node.address).await?;
        report.step(format!(
            "cut node {index} off from its peers: `nft add rule inet lab out {}`",
            rules.join("` + `")
        ));
    }
    let expected: Vec<usize> = (1..=3)
        .map(|index| {
            if isolated.contains(&index) {
                1
            } else {
                3 - isolated.len()
            }
        })
        .collect();
    let took = lab
        .cluster
        .wait_alive(&expected, Duration::from_secs(90))
        .await?;
    report.step(format!(
        "the nodes see {expected:?} replicas alive (nodes 1, 2, 3) after {:.1} s",
        took.as_secs_f64()
    ));
    Ok(())
}

/// Removes every rule and waits until every node sees all three again.
pub async fn heal_nodes(lab: &Lab, report: &mut Report) -> anyhow::Result<Duration> {
    lab.firewall.heal().await?;
    let took = lab
        .cluster
        .wait_alive(&[3, 3, 3], Duration::from_secs(90))
        .await?;
    report.step(format!(
        "healed (`nft flush chain inet lab out`): every node sees 3 alive after {:.1} s",
        took.as_secs_f64()
    ));
    Ok(took)
}

/// Polls `done` every 250 ms until it holds or `timeout` passes; returns how long it took.
pub async fn poll_until<F, Fut>(timeout: Duration, mut done: F) -> anyhow::Result<Option<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = std::time::Instant::now();
    loop {
        if done().await? {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
