//! Scenario 5: Read-your-writes on a real cluster: node 3 stopped (SIGTERM), a post at
//! QUORUM, and what its author reads at each level.

use std::time::Duration;

use anyhow::ensure;
use serde_json::json;

use super::unique;
use crate::http::Call;
use crate::lab::Lab;
use crate::report::{Report, ms};

pub async fn run(lab: &Lab, report: &mut Report) -> anyhow::Result<()> {
    let author = unique("ryw");
    lab.cluster.stop(3).await?;
    report.step("stopped node 3 (`scripts/stop.sh cassandra`: SIGTERM, waited for the exit)");
    let took = lab
        .cluster
        .wait_alive(&[2, 2, 0], Duration::from_secs(90))
        .await?;
    report.step(format!(
        "nodes 1 and 2 see 2 replicas alive after {:.1} s",
        took.as_secs_f64()
    ));

    let post = lab
        .http
        .as_user(&author)
        .post(
            &lab.timeline.url("/v1/posts"),
            &json!({ "author_id": author, "content": "written with a node down" }),
            &[],
        )
        .await;
    ensure!(
        post.is(202),
        "the post was refused: {:?} {}",
        post.status,
        post.body
    );
    let id = post.body["id"].as_str().unwrap_or_default().to_owned();
    let by_id = lab
        .http
        .get(&lab.timeline.url(&format!("/v1/posts/{id}")))
        .await;
    let own_posts = lab
        .http
        .get(&lab.timeline.url(&format!("/v1/users/{author}/posts")))
        .await;
    let timeline = |level: &'static str| {
        let url = lab
            .timeline
            .url(&format!("/v1/users/{author}/timeline?consistency={level}"));
        let http = lab.http.as_user(&author);
        async move { http.get(&url).await }
    };
    let quorum = timeline("quorum").await;
    let all = timeline("all").await;
    let contains = |call: &Call| {
        call.is(200)
            && call.body["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|item| item["id"] == id.as_str()))
    };
    let mut rows = vec![
        row("POST /v1/posts (QUORUM)", &post, post.is(202)),
        row("GET /v1/posts/{id}", &by_id, by_id.is(200)),
        row(
            "GET /v1/users/{author}/posts",
            &own_posts,
            contains(&own_posts),
        ),
        row(
            "own timeline, consistency=quorum",
            &quorum,
            contains(&quorum),
        ),
        row("own timeline, consistency=all", &all, false),
    ];
    let visible = by_id.is(200) && contains(&own_posts) && contains(&quorum);
    report.check("with node 3 down, the post is visible to its author at once (by id, in their posts, in their timeline at QUORUM)", visible);
    report.check(
        "with node 3 down, a read at ALL answers a 503 problem",
        all.is_refusal(),
    );

    lab.cluster.start_again(3).await?;
    let back = lab
        .cluster
        .wait_alive(&[3, 3, 3], Duration::from_secs(120))
        .await?;
    report.step(format!("node 3 started again (`scripts/start.sh`, `wait.sh`); every node sees 3 alive {:.1} s after it answered CQL", back.as_secs_f64()));
    let started = std::time::Instant::now();
    let mut answered = None;
    let mut all_after = timeline("all").await;
    while started.elapsed() < Duration::from_secs(60) {
        if contains(&all_after) {
            answered = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        all_after = timeline("all").await;
    }
    rows.push(row(
        "own timeline, consistency=all, node 3 back",
        &all_after,
        contains(&all_after),
    ));
    report.table(
        &["with node 3 down", "status", "latency", "post visible"],
        rows,
    );
    report.check(
        format!(
            "once node 3 is back, ALL answers 200 with the post ({})",
            answered.map_or("not within 60 s".into(), |d| format!(
                "after {:.1} s",
                d.as_secs_f64()
            ))
        ),
        answered.is_some(),
    );
    Ok(())
}

fn row(what: &str, call: &Call, visible: bool) -> Vec<String> {
    vec![
        what.to_owned(),
        call.status.map_or("no answer".into(), |s| s.to_string()),
        ms(call.latency()),
        if visible { "yes".into() } else { "no".into() },
    ]
}
