//! Scenario 4: Convergence after heal, and its cost: hinted handoff; with hints off,
//! blocking read repair and `nodetool repair`; and last write wins, which
//! drops one of two acknowledged writes.

use std::time::{Duration, Instant};

use anyhow::Context;
use scylla::statement::Consistency;

use super::{heal_nodes, partition_nodes, poll_until, unique};
use crate::cluster::{KEYSPACE, outcome};
use crate::lab::Lab;
use crate::report::Report;

const REPAIR_KEYS: usize = 20;

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    hints(lab, report).await?;
    repair(lab, report).await?;
    last_write_wins(lab, report).await
}

/// Hinted handoff: the majority keeps hints for node 1 and replays them.
async fn hints(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let cluster = &lab.cluster;
    let key = unique("hint");
    cluster.write(1, Consistency::All, &key, "old").await?;
    partition_nodes(lab, report, &[1]).await?;
    cluster.write(2, Consistency::Quorum, &key, "new").await?;
    let stale = cluster.read(1, Consistency::One, &key).await;
    // Hints are buffered, then flushed to files (hints_flush_period).
    let hints_on_majority = || async {
        Ok::<_, anyhow::Error>(cluster.pending_hints(2).await? + cluster.pending_hints(3).await?)
    };
    let kept = poll_until(Duration::from_secs(30), || async {
        Ok(hints_on_majority().await? > 0)
    })
    .await?;
    let pending = hints_on_majority().await?;
    report.step(format!(
        "hints on: wrote `new` at QUORUM via node 2; node 1 reads {} at ONE; hint files pending for node 1 on nodes 2+3: {pending}{}",
        outcome(&stale),
        kept.map_or(String::new(), |d| format!(" (flushed {:.1} s after the write)", d.as_secs_f64()))
    ));
    heal_nodes(lab, report).await?;
    let started = Instant::now();
    let drained = poll_until(Duration::from_secs(120), || async {
        Ok(hints_on_majority().await? == 0)
    })
    .await?;
    let mut fresh = cluster.read(1, Consistency::One, &key).await;
    // A hint file is deleted once delivered: the replica has the value by then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(&fresh, Ok(Some(v)) if v == "new") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        fresh = cluster.read(1, Consistency::One, &key).await;
    }
    report.table(
        &["hinted handoff", "observed"],
        vec![
            vec!["node 1 at ONE during the partition".into(), outcome(&stale)],
            vec![
                "hint files pending on nodes 2 and 3".into(),
                pending.to_string(),
            ],
            vec![
                "hints drained after the heal".into(),
                drained.map_or("not within 120 s".into(), |d| {
                    format!("{:.1} s", d.as_secs_f64())
                }),
            ],
            vec![
                format!(
                    "node 1 at ONE after the drain ({:.1} s after the heal)",
                    started.elapsed().as_secs_f64()
                ),
                outcome(&fresh),
            ],
        ],
    );
    report.check(
        "node 1 was stale during the partition, hints were kept, drained to zero after the heal, and node 1 then answered the latest value at ONE",
        matches!(&stale, Ok(Some(v)) if v == "old")
            && pending > 0
            && drained.is_some()
            && matches!(&fresh, Ok(Some(v)) if v == "new"),
    );
    Ok(())
}

/// With hints off, node 1 stays stale after the heal until a read at ALL
/// repairs one key (blocking read repair) and `nodetool repair` the rest.
async fn repair(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let cluster = &lab.cluster;
    for node in 1..=3 {
        cluster.nodetool(node, &["disablehandoff"]).await?;
    }
    report.step("hints off on every node (`nodetool disablehandoff`)");
    let prefix = unique("repair");
    let keys: Vec<String> = (0..REPAIR_KEYS).map(|i| format!("{prefix}-{i}")).collect();
    for key in &keys {
        cluster.write(1, Consistency::All, key, "old").await?;
    }
    partition_nodes(lab, report, &[1]).await?;
    for key in &keys {
        cluster.write(2, Consistency::Quorum, key, "new").await?;
    }
    report.step(format!(
        "{REPAIR_KEYS} keys rewritten to `new` at QUORUM via node 2"
    ));
    heal_nodes(lab, report).await?;

    let stale_before = stale_on_node1(lab, &keys).await?;
    let first = &keys[0];
    let at_one = cluster.read(1, Consistency::One, first).await;
    let at_all = cluster.read(2, Consistency::All, first).await;
    let after_all = cluster.read(1, Consistency::One, first).await;
    let stale_after_read_repair = stale_on_node1(lab, &keys).await?;
    let started = Instant::now();
    cluster
        .nodetool(1, &["repair", "-full", KEYSPACE])
        .await
        .context("nodetool repair")?;
    let repair_took = started.elapsed();
    let stale_after_repair = stale_on_node1(lab, &keys).await?;
    report.table(
        &["hints off, after the heal", "observed"],
        vec![
            vec![
                format!("keys stale on node 1 (read at ONE), of {REPAIR_KEYS}"),
                stale_before.to_string(),
            ],
            vec![format!("{first} at ONE on node 1"), outcome(&at_one)],
            vec![
                format!("{first} at ALL via node 2 (blocking read repair)"),
                outcome(&at_all),
            ],
            vec![
                format!("{first} at ONE on node 1 after that"),
                outcome(&after_all),
            ],
            vec![
                "keys still stale on node 1".into(),
                stale_after_read_repair.to_string(),
            ],
            vec![
                format!("`nodetool repair -full {KEYSPACE}` on node 1"),
                format!("{:.1} s", repair_took.as_secs_f64()),
            ],
            vec![
                "keys stale on node 1 after the repair".into(),
                stale_after_repair.to_string(),
            ],
        ],
    );
    for node in 1..=3 {
        cluster.nodetool(node, &["enablehandoff"]).await?;
    }
    report.step("hints on again (`nodetool enablehandoff`)");
    report.check(
        "without hints node 1 stayed stale after the heal; a read at ALL repaired the key it read; nodetool repair repaired the rest",
        stale_before == REPAIR_KEYS
            && matches!(&at_one, Ok(Some(v)) if v == "old")
            && matches!(&at_all, Ok(Some(v)) if v == "new")
            && matches!(&after_all, Ok(Some(v)) if v == "new")
            && stale_after_read_repair == REPAIR_KEYS - 1
            && stale_after_repair == 0,
    );
    Ok(())
}

async fn stale_on_node1(lab: &Lab, keys: &[String]) -> anyhow::Result<usize> {
    let mut stale = 0;
    for key in keys {
        if lab.cluster.read(1, Consistency::One, key).await?.as_deref() != Some("new") {
            stale += 1;
        }
    }
    Ok(stale)
}

/// Two acknowledged writes on opposite sides; after the heal one is gone.
async fn last_write_wins(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let cluster = &lab.cluster;
    let key = unique("lww");
    cluster.write(1, Consistency::All, &key, "before").await?;
    partition_nodes(lab, report, &[1]).await?;
    let majority = cluster
        .write(2, Consistency::Quorum, &key, "majority (QUORUM)")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let minority = cluster
        .write(1, Consistency::One, &key, "minority (ONE)")
        .await;
    report.step(format!(
        "two writes acknowledged on opposite sides: via node 2 at QUORUM → {}, then via node 1 at ONE → {}",
        outcome(&majority),
        outcome(&minority)
    ));
    let during_majority = cluster.read(3, Consistency::Quorum, &key).await;
    heal_nodes(lab, report).await?;
    let after = cluster.read(2, Consistency::All, &key).await;
    let writetime = cluster
        .on(
            2,
            Consistency::All,
            &format!("SELECT WRITETIME(value) FROM {KEYSPACE}.register WHERE key = ?"),
            (&key,),
        )
        .await?
        .into_rows_result()?
        .single_row::<(Option<i64>,)>()?
        .0;
    report.table(
        &["last write wins", "observed"],
        vec![
            vec![
                "majority side read at QUORUM during the partition".into(),
                outcome(&during_majority),
            ],
            vec![
                "every replica after the heal (read at ALL)".into(),
                outcome(&after),
            ],
            vec![
                "write time of the survivor (µs)".into(),
                format!("{writetime:?}"),
            ],
            vec![
                "lost, although acknowledged at QUORUM".into(),
                "majority (QUORUM)".into(),
            ],
        ],
    );
    report.check(
        "both writes were acknowledged, and after the heal only the one with the later timestamp remains: the QUORUM write is silently lost",
        majority.is_ok()
            && minority.is_ok()
            && matches!(&during_majority, Ok(Some(v)) if v == "majority (QUORUM)")
            && matches!(&after, Ok(Some(v)) if v == "minority (ONE)"),
    );
    Ok(())
}
