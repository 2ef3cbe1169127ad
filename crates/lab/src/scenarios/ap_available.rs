//! Scenario 2: AP stays available. Timeline reads and posts with one node, then all
//! three nodes cut apart; then every acknowledged post must reach every
//! follower.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use super::{followers_of, heal_nodes, partition_nodes, poll_until, unique};
use crate::http::Call;
use crate::lab::Lab;
use crate::report::{Report, latency_summary, status_counts};
use crate::services::Service;

const READS: usize = 6;
const POSTS: usize = 3;

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let author = unique("ap-author");
    let followers = followers_of(lab, &author, "ap-follower", 3).await?;
    report.step(format!("{} followers follow {author}", followers.len()));

    let mut acknowledged: Vec<String> = Vec::new();
    let mut rows = Vec::new();

    partition_nodes(lab, report, &[1]).await?;
    let stage = "node 1 cut off ({1} | {2, 3})";
    let seen = Stage::observe(lab, &followers[0], &author, &mut acknowledged).await;
    rows.extend(seen.rows(stage));
    report.check(
        format!("{stage}: reads at ONE answer 200"),
        seen.one.iter().all(|c| c.is(200)),
    );
    report.check(
        format!("{stage}: reads at ALL answer 503 problems (one replica is unreachable)"),
        seen.all.iter().all(Call::is_refusal),
    );
    report.check(
        format!("{stage}: reads at QUORUM answer 200 (the majority side has a quorum; the driver moves on from node 1)"),
        seen.quorum.iter().all(|c| c.is(200)),
    );
    report.check(
        format!("{stage}: posts are taken at QUORUM and at ONE (202)"),
        seen.posts_quorum
            .iter()
            .chain(&seen.posts_one)
            .all(|c| c.is(202)),
    );

    partition_nodes(lab, report, &[2, 3]).await?;
    let stage = "every node cut off ({1} | {2} | {3})";
    let seen = Stage::observe(lab, &followers[0], &author, &mut acknowledged).await;
    rows.extend(seen.rows(stage));
    report.check(
        format!("{stage}: reads at ONE answer 200"),
        seen.one.iter().all(|c| c.is(200)),
    );
    report.check(
        format!("{stage}: reads at QUORUM and ALL answer 503 problems"),
        seen.quorum.iter().chain(&seen.all).all(Call::is_refusal),
    );
    report.check(
        format!("{stage}: posts at QUORUM are refused (503 + Retry-After)"),
        seen.posts_quorum.iter().all(Call::is_refusal),
    );
    report.check(
        format!("{stage}: posts at ONE are taken (202)"),
        seen.posts_one.iter().all(|c| c.is(202)),
    );
    report.table(&["stage", "operation", "statuses", "latency"], rows);

    heal_nodes(lab, report).await?;
    let wanted: HashSet<String> = acknowledged.iter().cloned().collect();
    report.step(format!(
        "{} posts were acknowledged (202); waiting until every follower's timeline (read at QUORUM) has all of them",
        wanted.len()
    ));
    let converged = poll_until(Duration::from_secs(180), || async {
        for follower in &followers {
            let ids = timeline_ids(lab, follower).await;
            if !wanted.is_subset(&ids) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    let mut missing = 0;
    for follower in &followers {
        missing += wanted
            .difference(&timeline_ids(lab, follower).await)
            .count();
    }
    report.check(
        format!(
            "after the heal every acknowledged post reached every follower ({} of {} timeline entries missing; converged in {})",
            missing,
            wanted.len() * followers.len(),
            converged.map_or("—".into(), |d| format!("{:.1} s", d.as_secs_f64()))
        ),
        converged.is_some() && missing == 0,
    );
    Ok(())
}

async fn stage_reads(lab: &Lab, user: &str, level: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    for _ in 0..READS {
        calls.push(
            lab.http
                .as_user(user)
                .get(&lab.timeline.url(&format!(
                    "/v1/users/{user}/timeline?consistency={level}&limit=50"
                )))
                .await,
        );
    }
    calls
}

async fn stage_posts(
    lab: &Lab,
    api: &Service,
    author: &str,
    level: &str,
    acknowledged: &mut Vec<String>,
) -> Vec<Call> {
    let mut calls = Vec::new();
    for n in 0..POSTS {
        let call = lab
            .http
            .as_user(author)
            .post(
                &api.url("/v1/posts"),
                &json!({ "author_id": author, "content": format!("posted at {level}, #{n}") }),
                &[],
            )
            .await;
        if call.is(202)
            && let Some(id) = call.body["id"].as_str()
        {
            acknowledged.push(id.to_owned());
        }
        calls.push(call);
    }
    calls
}

/// Post ids in `user`'s timeline (first 100, at QUORUM; empty on a refusal).
pub async fn timeline_ids(lab: &Lab, user: &str) -> HashSet<String> {
    let call = lab
        .http
        .as_user(user)
        .get(&lab.timeline.url(&format!(
            "/v1/users/{user}/timeline?consistency=quorum&limit=100"
        )))
        .await;
    call.body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What clients saw during one stage of the partition.
struct Stage {
    one: Vec<Call>,
    quorum: Vec<Call>,
    all: Vec<Call>,
    posts_quorum: Vec<Call>,
    posts_one: Vec<Call>,
}

impl Stage {
    /// Reads `reader`'s timeline at each level and posts through both APIs;
    /// the ids of the posts taken go to `acknowledged`.
    async fn observe(
        lab: &Lab,
        reader: &str,
        author: &str,
        acknowledged: &mut Vec<String>,
    ) -> Self {
        Self {
            one: stage_reads(lab, reader, "one").await,
            quorum: stage_reads(lab, reader, "quorum").await,
            all: stage_reads(lab, reader, "all").await,
            posts_quorum: stage_posts(lab, &lab.timeline, author, "quorum", acknowledged).await,
            posts_one: stage_posts(lab, &lab.timeline_one, author, "one", acknowledged).await,
        }
    }

    fn rows(&self, stage: &str) -> Vec<Vec<String>> {
        [
            ("timeline read, consistency=one", &self.one),
            ("timeline read, consistency=quorum", &self.quorum),
            ("timeline read, consistency=all", &self.all),
            ("post, POST_WRITE_CONSISTENCY=quorum", &self.posts_quorum),
            ("post, POST_WRITE_CONSISTENCY=one", &self.posts_one),
        ]
        .into_iter()
        .map(|(operation, calls)| {
            vec![
                stage.to_owned(),
                operation.to_owned(),
                status_counts(calls.iter().map(|c| &c.status)),
                latency_summary(&calls.iter().map(Call::latency).collect::<Vec<_>>()),
            ]
        })
        .collect()
    }
}
