//! Scenario 3: N, W, R: the table of the article, measured on one key of the lab's
//! register during the partition {node 1} | {node 2, node 3}, each statement
//! pinned to its coordinator.

use scylla::statement::Consistency;

use super::{heal_nodes, partition_nodes, unique};
use crate::cluster::outcome;
use crate::lab::Lab;
use crate::report::Report;

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let cluster = &lab.cluster;
    let key = unique("nwr");
    cluster.write(2, Consistency::All, &key, "v0").await?;
    report.step(format!("key {key} = v0, written at ALL (N = 3 replicas)"));
    partition_nodes(lab, report, &[1]).await?;

    let mut rows = Vec::new();
    let mut row = |step: &str,
                   node: usize,
                   level: &str,
                   rule: &str,
                   result: String,
                   expected: &str,
                   holds: bool| {
        rows.push(vec![
            step.to_owned(),
            format!("node {node}"),
            level.to_owned(),
            rule.to_owned(),
            result,
            expected.to_owned(),
            if holds { "yes".into() } else { "NO".into() },
        ]);
        holds
    };
    let mut holds = Vec::new();

    let w = cluster.write(2, Consistency::Quorum, &key, "m1").await;
    holds.push(row(
        "write m1",
        2,
        "W=QUORUM",
        "2 of 3 replicas reachable",
        outcome(&w),
        "ok",
        w.is_ok(),
    ));
    let w = cluster.write(1, Consistency::Quorum, &key, "x").await;
    holds.push(row(
        "write x",
        1,
        "W=QUORUM",
        "minority: 1 of 3",
        outcome(&w),
        "Unavailable",
        w.is_err(),
    ));
    let w = cluster.write(1, Consistency::One, &key, "n1").await;
    holds.push(row(
        "write n1 (after m1)",
        1,
        "W=ONE",
        "1 replica suffices",
        outcome(&w),
        "ok",
        w.is_ok(),
    ));
    let w = cluster.write(3, Consistency::Quorum, &key, "m2").await;
    holds.push(row(
        "write m2",
        3,
        "W=QUORUM",
        "2 of 3 replicas reachable",
        outcome(&w),
        "ok",
        w.is_ok(),
    ));

    let r = cluster.read(2, Consistency::Quorum, &key).await;
    holds.push(row(
        "read",
        2,
        "R=QUORUM",
        "W(2)+R(2)=4 > N(3): overlaps the last QUORUM write",
        outcome(&r),
        "m2 (latest)",
        matches!(&r, Ok(Some(v)) if v == "m2"),
    ));
    let r = cluster.read(1, Consistency::One, &key).await;
    holds.push(row(
        "read",
        1,
        "R=ONE",
        "W(2)+R(1)=3 <= N(3): may miss the majority's writes",
        outcome(&r),
        "n1 (stale: not m2)",
        matches!(&r, Ok(Some(v)) if v == "n1"),
    ));
    let r = cluster.read(1, Consistency::Quorum, &key).await;
    holds.push(row(
        "read",
        1,
        "R=QUORUM",
        "minority: 1 of 3",
        outcome(&r),
        "Unavailable",
        r.is_err(),
    ));

    // A value written at ONE on the minority, newer than everything on the majority.
    let w = cluster.write(1, Consistency::One, &key, "n2").await;
    holds.push(row(
        "write n2 (newest)",
        1,
        "W=ONE",
        "1 replica suffices",
        outcome(&w),
        "ok",
        w.is_ok(),
    ));
    let r = cluster.read(3, Consistency::Quorum, &key).await;
    holds.push(row(
        "read",
        3,
        "R=QUORUM",
        "W(1)+R(2)=3 <= N(3): the ONE write is on the other side",
        outcome(&r),
        "m2 (n2 invisible)",
        matches!(&r, Ok(Some(v)) if v == "m2"),
    ));
    report.table(
        &[
            "step",
            "coordinator",
            "level",
            "why",
            "result",
            "expected",
            "as expected",
        ],
        rows,
    );
    report.check(
        "every write and read behaved as N=3, W, R predict (W+R > N reads the latest; W+R <= N can miss it)",
        holds.iter().all(|h| *h),
    );
    heal_nodes(lab, report).await?;
    Ok(())
}
