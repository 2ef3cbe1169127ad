//! `capctl fanout`, the real binary, against a real timeline API and worker:
//! the invariant it reports (missing = 0, duplicates = 0) is checked again
//! independently, from the graph and the authors' own posts.

use std::collections::HashSet;

use e2e::timeline_app::TimelineApp;
use e2e::workspace_binary;
use serde_json::Value;

/// Every page of `path`, read as `reader` (a home timeline is its owner's only).
async fn all_pages(app: &TimelineApp, reader: &str, path: &str, key: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => app.url(&format!("{path}?limit=100&cursor={c}")),
            None => app.url(&format!("{path}?limit=100")),
        };
        let page: Value = app
            .client
            .get(url)
            .header(
                reqwest::header::AUTHORIZATION,
                e2e::auth::bearer(reader, &[]),
            )
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        values.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i[key].as_str().expect("field").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return values,
        }
    }
}

#[tokio::test]
async fn fanout_reports_convergence_and_every_timeline_agrees() {
    let app = TimelineApp::spawn(&[]).await;
    // A worker process of its own: its /metrics count this run's rows only.
    let (mut worker, worker_addr) = app.start_worker_process(&[]).await;

    let output = tokio::process::Command::new(workspace_binary("capctl"))
        .env("CAPCTL_SIGNING_KEY", &e2e::auth::dev_keys().signing_key)
        .args([
            "--timeline-url",
            &format!("http://{}", app.addr),
            "--json",
            "fanout",
        ])
        .args([
            "--users",
            "40",
            "--follows",
            "6",
            "--posts",
            "30",
            "--rate",
            "0",
            "--timeout-secs",
            "60",
        ])
        .args(["--worker-url", &format!("http://{worker_addr}")])
        .output()
        .await
        .expect("run capctl");
    assert!(
        output.status.success(),
        "capctl failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON report");
    assert_eq!(report["converged"], true);
    assert_eq!(
        (report["missing"].as_u64(), report["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["invariant_holds"], true);
    assert_eq!(report["follow_edges"], 240);
    assert!(report["deliveries_per_sec"].as_f64().expect("rate") > 0.0);
    assert!(
        report["lag_p99_secs"].as_f64().is_some(),
        "the worker's lag histogram was read: {report}"
    );

    // Independently: each timeline is exactly the user's own posts and their
    // followees' posts.
    let prefix = report["user_prefix"].as_str().expect("prefix");
    let mut entries = 0;
    let mut expected_rows = 0;
    for i in 0..40 {
        let user = format!("{prefix}{i}");
        let timeline = all_pages(&app, &user, &format!("/v1/users/{user}/timeline"), "id").await;
        let shown: HashSet<&String> = timeline.iter().collect();
        let own = all_pages(&app, &user, &format!("/v1/users/{user}/posts"), "id").await;
        let followers = all_pages(
            &app,
            &user,
            &format!("/v1/users/{user}/followers"),
            "user_id",
        )
        .await;
        expected_rows += own.len() * followers.len();
        let mut expected: HashSet<String> = own.into_iter().collect();
        for followee in all_pages(
            &app,
            &user,
            &format!("/v1/users/{user}/following"),
            "user_id",
        )
        .await
        {
            expected
                .extend(all_pages(&app, &user, &format!("/v1/users/{followee}/posts"), "id").await);
        }
        assert_eq!(
            shown,
            expected.iter().collect(),
            "{user}: exactly the expected posts"
        );
        entries += timeline.len();
    }
    assert!(
        entries >= 30,
        "every post reached at least its author's timeline"
    );
    // Reads merge and dedup, so they cannot show a duplicate row; the rows the
    // worker wrote can: one per post and follower of its author, no more.
    let metrics = e2e::metrics_page(&app.client, &format!("http://{worker_addr}")).await;
    let written = e2e::counter(&metrics, "timeline_fanout_rows_written_total", "");
    #[allow(clippy::cast_precision_loss)] // a few hundred rows
    let expected_rows = expected_rows as f64;
    assert_eq!(written, expected_rows, "each fan-out row written once");
    worker.start_kill().expect("stop the worker");
    app.deployment.delete_stream().await;
}
