//! Scenario 6: Queue partition: both timeline APIs cut off from NATS while an author
//! posts; posts are still taken (the outbox), followers lag, and the relay
//! catches up after the heal: nothing lost, nothing duplicated, counted in
//! rows the worker wrote, not only in what reads show.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::ap_available::timeline_ids;
use super::{followers_of, poll_until, unique};
use crate::http::Call;
use crate::lab::{Lab, groups};
use crate::report::{Report, latency_summary, status_counts};
use crate::services::{NATS_PORT, Service};

const FOLLOWERS: usize = 5;
const POSTS: usize = 10;

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let author = unique("queue-author");
    let followers = followers_of(lab, &author, "queue-f", FOLLOWERS).await?;
    // The follows' own fan-out (backfill) settles before the count starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows_before = metric(lab, &lab.worker, "timeline_fanout_rows_written_total").await;
    let deferred_before = metric(lab, &lab.timeline, "timeline_outbox_deferred_total").await
        + metric(lab, &lab.timeline_one, "timeline_outbox_deferred_total").await;

    let mut rules = Vec::new();
    for group in [groups::TIMELINE, groups::TIMELINE_ONE] {
        rules.push(lab.firewall.cut(group, NATS_PORT).await?);
    }
    report.step(format!(
        "cut both timeline APIs off from NATS: `{}`",
        rules.join("`, `")
    ));
    let mut posts: Vec<Call> = Vec::new();
    for n in 0..POSTS {
        posts.push(
            lab.http
                .as_user(&author)
                .post(
                    &lab.timeline.url("/v1/posts"),
                    &json!({ "author_id": author, "content": format!("while NATS is unreachable #{n}") }),
                    &[],
                )
                .await,
        );
    }
    let ids: HashSet<String> = posts
        .iter()
        .filter(|c| c.is(202))
        .filter_map(|c| c.body["id"].as_str().map(str::to_owned))
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut lagging = 0;
    for follower in &followers {
        lagging += ids.difference(&timeline_ids(lab, follower).await).count();
    }
    let deferred = metric(lab, &lab.timeline, "timeline_outbox_deferred_total").await
        + metric(lab, &lab.timeline_one, "timeline_outbox_deferred_total").await
        - deferred_before;
    report.table(
        &["while cut off from NATS", "observed"],
        vec![
            vec![
                format!("{POSTS} posts"),
                status_counts(posts.iter().map(|c| &c.status)),
            ],
            vec![
                "post latency".into(),
                latency_summary(&posts.iter().map(Call::latency).collect::<Vec<_>>()),
            ],
            vec![
                "posts left to the outbox (publish not acknowledged)".into(),
                format!("{deferred}"),
            ],
            vec![
                "timeline entries missing 5 s later".into(),
                format!("{lagging} of {}", ids.len() * FOLLOWERS),
            ],
        ],
    );
    report.check(
        "every post was taken (202) while NATS was unreachable",
        ids.len() == POSTS,
    );
    report.check(
        "followers lagged: none of the posts reached them during the partition",
        lagging == ids.len() * FOLLOWERS,
    );

    lab.firewall.heal().await?;
    report.step("healed");
    let converged = poll_until(Duration::from_secs(120), || async {
        for follower in &followers {
            if !ids.is_subset(&timeline_ids(lab, follower).await) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    // Late duplicates would show up as extra rows written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written =
        metric(lab, &lab.worker, "timeline_fanout_rows_written_total").await - rows_before;
    let mut duplicates = 0;
    for follower in &followers {
        let call = lab
            .http
            .as_user(follower)
            .get(&lab.timeline.url(&format!(
                "/v1/users/{follower}/timeline?consistency=quorum&limit=100"
            )))
            .await;
        let items: Vec<&Value> = call.body["items"]
            .as_array()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let distinct: HashSet<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
        duplicates += items.len() - distinct.len();
    }
    report.table(
        &["after the heal", "observed"],
        vec![
            vec![
                "every follower has every post".into(),
                converged.map_or("not within 120 s".into(), |d| {
                    format!("after {:.1} s", d.as_secs_f64())
                }),
            ],
            vec![
                "timeline rows the worker wrote".into(),
                format!("{written} (expected {})", POSTS * FOLLOWERS),
            ],
            vec![
                "duplicate entries in timelines".into(),
                duplicates.to_string(),
            ],
        ],
    );
    report.check(
        "the relay caught up: every follower has every post",
        converged.is_some(),
    );
    report.check(
        "nothing duplicated: the worker wrote exactly one row per post and follower, and no timeline shows a post twice",
        written as usize == POSTS * FOLLOWERS && duplicates == 0,
    );
    Ok(())
}

/// The sum of a counter on a service's `/metrics`.
pub async fn metric(lab: &Lab, service: &Service, name: &str) -> f64 {
    let call = lab.http.get(&service.url("/metrics")).await;
    match &call.body {
        Value::String(text) => capctl::client::metric_sum(text, name),
        _ => 0.0,
    }
}
