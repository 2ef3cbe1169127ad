//! 7. Worker crash and store restart mid fan-out: the worker is SIGKILLed
//! with a backlog, then a Cassandra node is restarted with a backlog; every
//! follower must converge.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::StreamExt;
use serde_json::json;

use super::ap_available::timeline_ids;
use super::queue_partition::metric;
use super::unique;
use crate::lab::Lab;
use crate::report::Report;

const FOLLOWERS: usize = 400;
const POSTS: usize = 25;
const ROWS: &str = "timeline_fanout_rows_written_total";

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let author = unique("crash-author");
    let followers: Vec<String> = (0..FOLLOWERS).map(|i| unique(&format!("crash-f{i}"))).collect();
    let follows: Vec<_> = followers
        .iter()
        .map(|follower| {
            let url = lab.timeline.url(&format!("/v1/users/{follower}/following/{author}"));
            async move { lab.http.send(reqwest::Method::PUT, &url, None, &[]).await }
        })
        .collect();
    let answers: Vec<_> = futures::stream::iter(follows).buffer_unordered(16).collect().await;
    ensure!(answers.iter().all(|c| c.is(204)), "every follow is taken");
    report.step(format!("{FOLLOWERS} followers follow {author}"));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let total = (FOLLOWERS * POSTS) as f64;
    let base = metric(lab, &lab.worker, ROWS).await;
    let mut ids = HashSet::new();
    for n in 0..POSTS {
        let call = lab
            .http
            .post(&lab.timeline.url("/v1/posts"), &json!({ "author_id": author, "content": format!("backlog #{n}") }), &[])
            .await;
        ensure!(call.is(202), "post {n}: {:?}", call.status);
        ids.insert(call.body["id"].as_str().unwrap_or_default().to_owned());
    }
    report.step(format!("{POSTS} posts: {total} timeline rows to write, in chunks of 50"));

    // Kill the worker once some, not all, of the backlog is written.
    let mut at_kill = 0.0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        at_kill = metric(lab, &lab.worker, ROWS).await - base;
        if at_kill >= total * 0.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lab.worker.kill().await?;
    report.step(format!(
        "SIGKILLed the worker after it wrote {at_kill} of {total} rows ({:.0}%)",
        100.0 * at_kill / total
    ));
    let killed_mid_backlog = at_kill > 0.0 && at_kill < total;
    let restarted = lab.worker.start(lab.probe()).await?;
    report.step(format!("worker started again, ready in {:.1} s", restarted.as_secs_f64()));

    // Restart a node while the new worker is still writing.
    let before_stop = metric(lab, &lab.worker, ROWS).await;
    lab.cluster.stop(2).await?;
    let during_stop = metric(lab, &lab.worker, ROWS).await;
    report.step(format!(
        "stopped node 2 (SIGTERM) with the new worker at {before_stop} rows written"
    ));
    lab.cluster.start_again(2).await?;
    let back = lab.cluster.wait_alive(&[3, 3, 3], Duration::from_secs(120)).await?;
    report.step(format!(
        "node 2 started again; every node sees 3 alive {:.1} s after it answered CQL (worker at {during_stop} rows when it stopped)",
        back.as_secs_f64()
    ));

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
    report.table(
        &["crash and restart", "observed"],
        vec![
            vec!["rows written when the worker was killed".into(), format!("{at_kill} of {total}")],
            vec!["timeline entries missing at the end".into(), format!("{missing} of {total}")],
            vec!["converged after the node returned".into(), format!("{:.1} s", started.elapsed().as_secs_f64())],
            vec!["dead letters (restarted worker)".into(), dead.to_string()],
        ],
    );
    report.check("the worker was killed with a backlog (some rows written, not all)", killed_mid_backlog);
    report.check("every follower converged: each has every post", missing == 0);
    report.check("nothing was dead-lettered", dead == 0.0);
    Ok(())
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
