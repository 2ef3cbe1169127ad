//! Scenario 7: Worker crash and store faults mid fan-out, each with a backlog: the
//! worker SIGKILLed and restarted; a Cassandra node SIGKILLed and restarted;
//! a node hung (SIGSTOP) and resumed. Every follower must converge.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::StreamExt;
use serde_json::json;

use super::ap_available::timeline_ids;
use super::queue_partition::metric;
use super::{followers_of, unique};
use crate::lab::Lab;
use crate::report::Report;

const FOLLOWERS: usize = 200;
const POSTS_PER_FAULT: usize = 20;
const HANG: Duration = Duration::from_secs(15);
const ROWS: &str = "timeline_fanout_rows_written_total";

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let author = unique("crash-author");
    let followers = followers_of(lab, &author, "crash-f", FOLLOWERS).await?;
    report.step(format!(
        "{FOLLOWERS} followers follow {author}; each fault below starts with {POSTS_PER_FAULT} new posts ({} timeline rows, chunks of 50) still to fan out",
        FOLLOWERS * POSTS_PER_FAULT
    ));
    let batch = (FOLLOWERS * POSTS_PER_FAULT) as f64;
    let mut ids = HashSet::new();
    let mut rows = Vec::new();

    // The worker, killed once it has written some of the backlog.
    let base = metric(lab, &lab.worker, ROWS).await;
    post_batch(lab, &author, "worker crash", &mut ids).await?;
    let at_kill = wait_for_rows(lab, base, batch * 0.1).await;
    lab.worker.kill().await?;
    let restarted = lab.worker.start(lab.probe()).await?;
    report.step(format!(
        "SIGKILLed the worker after {at_kill} of {batch} rows; started again, ready in {:.1} s",
        restarted.as_secs_f64()
    ));
    rows.push(vec![
        "worker SIGKILLed".into(),
        format!("{at_kill} of {batch}"),
    ]);
    let worker_mid_backlog = at_kill > 0.0 && at_kill < batch;

    // A node crashed and restarted while the (new) worker writes.
    let base = metric(lab, &lab.worker, ROWS).await;
    post_batch(lab, &author, "node crash", &mut ids).await?;
    let at_crash = metric(lab, &lab.worker, ROWS).await - base;
    lab.cluster.signal(2, "KILL").await?;
    lab.cluster.start_again(2).await?;
    let back = lab
        .cluster
        .wait_alive(&[3, 3, 3], Duration::from_secs(120))
        .await?;
    report.step(format!(
        "SIGKILLed node 2 after {at_crash} of {batch} rows; started it again on its data (every node sees 3 alive {:.1} s after it answered CQL)",
        back.as_secs_f64()
    ));
    rows.push(vec![
        "node 2 SIGKILLed, restarted".into(),
        format!("{at_crash} of {batch}"),
    ]);

    // A hung node: it keeps its connections but answers nothing.
    let base = metric(lab, &lab.worker, ROWS).await;
    post_batch(lab, &author, "node hang", &mut ids).await?;
    let at_hang = metric(lab, &lab.worker, ROWS).await - base;
    lab.cluster.signal(3, "STOP").await?;
    tokio::time::sleep(HANG).await;
    let during_hang = metric(lab, &lab.worker, ROWS).await - base;
    lab.cluster.signal(3, "CONT").await?;
    report.step(format!(
        "SIGSTOPped node 3 for {} s after {at_hang} of {batch} rows ({during_hang} written while it hung), then SIGCONT",
        HANG.as_secs()
    ));
    rows.push(vec![
        format!("node 3 hung (SIGSTOP) {} s", HANG.as_secs()),
        format!("{at_hang} of {batch}"),
    ]);

    let started = Instant::now();
    let mut missing = usize::MAX;
    while started.elapsed() < Duration::from_secs(240) {
        missing = missing_entries(lab, &followers, &ids).await;
        if missing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let dead = metric(lab, &lab.worker, "timeline_fanout_dead_letters_total").await;
    let total = FOLLOWERS * ids.len();
    rows.push(vec![
        "timeline entries missing at the end".into(),
        format!("{missing} of {total}"),
    ]);
    rows.push(vec![
        "converged after the last fault".into(),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ]);
    rows.push(vec![
        "dead letters (restarted worker)".into(),
        dead.to_string(),
    ]);
    report.table(
        &["fault", "rows of its backlog written when it struck"],
        rows,
    );
    report.check(
        "the worker was killed with a backlog (some rows of it written, not all)",
        worker_mid_backlog,
    );
    report.check(
        format!(
            "every follower converged: each has every one of the {} posts",
            ids.len()
        ),
        missing == 0,
    );
    report.check("nothing was dead-lettered", dead == 0.0);
    Ok(())
}

async fn post_batch(
    lab: &Lab,
    author: &str,
    fault: &str,
    ids: &mut HashSet<String>,
) -> anyhow::Result<()> {
    for n in 0..POSTS_PER_FAULT {
        let call = lab
            .http
            .as_user(author)
            .post(
                &lab.timeline.url("/v1/posts"),
                &json!({ "author_id": author, "content": format!("before the {fault} #{n}") }),
                &[],
            )
            .await;
        ensure!(call.is(202), "post {n}: {:?}", call.status);
        ids.insert(call.body["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(())
}

/// Rows written since `base` once they reach `at_least` (or after 60 s).
async fn wait_for_rows(lab: &Lab, base: f64, at_least: f64) -> f64 {
    let started = Instant::now();
    loop {
        let written = metric(lab, &lab.worker, ROWS).await - base;
        if written >= at_least || started.elapsed() > Duration::from_secs(60) {
            return written;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn missing_entries(lab: &Lab, followers: &[String], ids: &HashSet<String>) -> usize {
    let reads: Vec<_> = followers
        .iter()
        .map(|follower| async move { ids.difference(&timeline_ids(lab, follower).await).count() })
        .collect();
    futures::stream::iter(reads)
        .buffer_unordered(16)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum()
}
