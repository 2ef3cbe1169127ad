//! The `make bench` timeline subcommands of `capctl`, the real binary, at
//! small sizes against a real API, worker process, Cassandra and NATS:
//! `relay-catchup` around a NATS outage, and `follower-load` +
//! `celebrity-reads` for a celebrity. Figures are not asserted; what the
//! reports say happened is, and is checked again through the API.

use e2e::nats_instance::NatsInstance;
use e2e::timeline_app::{Deployment, TimelineApp, unique_user};
use e2e::{cassandra_nodes, workspace_binary};
use serde_json::Value;
use tokio::process::Command;

/// `capctl --json --timeline-url <app> ARGS…` as a command, minting its
/// users' tokens with the development signing key.
fn capctl_command(app: &TimelineApp, args: &[&str]) -> Command {
    let mut command = Command::new(workspace_binary("capctl"));
    command
        .env("CAPCTL_SIGNING_KEY", &e2e::auth::dev_keys().signing_key)
        .args(["--json", "--timeline-url", &format!("http://{}", app.addr)])
        .args(args)
        .kill_on_drop(true);
    command
}

/// The JSON report of a capctl run that must succeed.
fn report(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "capctl failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

async fn capctl(app: &TimelineApp, args: &[&str]) -> Value {
    report(
        &capctl_command(app, args)
            .output()
            .await
            .expect("run capctl"),
    )
}

#[tokio::test]
async fn relay_catchup_times_the_outbox_draining_once_nats_returns() {
    let mut nats = NatsInstance::start().await;
    let deployment = Deployment::on_nats(&nats.url(), &[]).await;
    let app = TimelineApp::spawn_in(
        deployment,
        &[
            "--outbox-relay-after-secs",
            "1",
            "--outbox-relay-interval-ms",
            "200",
        ],
    )
    .await;
    let (_worker, worker_addr) = app.start_worker_process(&[]).await;
    let worker_url = format!("http://{worker_addr}");

    let graph = capctl(
        &app,
        &[
            "relay-catchup",
            "graph",
            "--followers",
            "5",
            "--worker-url",
            &worker_url,
        ],
    )
    .await;
    assert_eq!(graph["settled"], true, "{graph}");
    let author = graph["author"].as_str().expect("author");

    nats.stop().await;
    let posted = capctl(
        &app,
        &[
            "relay-catchup",
            "post",
            "--author",
            author,
            "--posts",
            "40",
            "--concurrency",
            "8",
            "--worker-url",
            &worker_url,
        ],
    )
    .await;
    assert_eq!(posted["accepted"], 40, "{posted}");
    assert_eq!(
        posted["deferred"].as_f64(),
        Some(40.0),
        "every post waits in the outbox: {posted}"
    );

    let measure = capctl_command(
        &app,
        &[
            "relay-catchup",
            "measure",
            "--user-prefix",
            graph["user_prefix"].as_str().expect("prefix"),
            "--followers",
            "5",
            "--posts",
            "40",
            &format!("--relayed-before={}", posted["relayed_before"]),
            &format!("--rows-before={}", posted["rows_before"]),
            "--nats-url",
            &nats.url(),
            "--worker-url",
            &worker_url,
            "--timeout-secs",
            "120",
        ],
    )
    .output();
    let measured = tokio::spawn(measure);
    nats.restart().await;
    let measured = report(&measured.await.expect("measure task").expect("run capctl"));
    assert_eq!(measured["converged"], true, "{measured}");
    assert!(
        measured["relayed"].as_f64().expect("relayed") >= 40.0,
        "{measured}"
    );
    assert_eq!(measured["rows_written"].as_f64(), Some(200.0), "{measured}");
    assert_eq!(
        (
            measured["missing"].as_u64(),
            measured["unexpected"].as_u64()
        ),
        (Some(0), Some(0)),
        "{measured}"
    );
    assert!(
        measured["all_relayed_secs"].as_f64().is_some(),
        "{measured}"
    );

    // Independently: each follower's timeline is the author's 40 posts.
    let own = app.user_post_ids(author, 100).await;
    assert_eq!(own.len(), 40);
    let prefix = graph["user_prefix"].as_str().expect("prefix");
    for i in 0..5 {
        let mut seen = app.timeline_ids(&format!("{prefix}f{i}"), 100).await;
        seen.sort();
        let mut want = own.clone();
        want.sort();
        assert_eq!(seen, want, "follower {i}");
    }
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn a_celebritys_posts_reach_sampled_followers_without_fan_out_rows() {
    let app = TimelineApp::spawn(&[
        "--celebrity-threshold",
        "10",
        "--celebrity-refresh-ms",
        "200",
    ])
    .await;
    let (_worker, worker_addr) = app.start_worker_process(&[]).await;
    let worker_url = format!("http://{worker_addr}");
    let author = unique_user("star");
    let prefix = format!("{}-", unique_user("fan"));

    let loaded = capctl(
        &app,
        &[
            "follower-load",
            "--cassandra-nodes",
            &cassandra_nodes().join(","),
            "--cassandra-keyspace",
            &app.deployment.keyspace,
            "--author",
            &author,
            "--follower-prefix",
            &prefix,
            "--followers",
            "30",
            "--batch-size",
            "7",
            "--settle-timeout-secs",
            "30",
        ],
    )
    .await;
    assert_eq!(loaded["rows"], 60, "{loaded}");
    assert_eq!(loaded["already_celebrity"], false, "{loaded}");
    assert!(
        loaded["settle_secs"].is_f64(),
        "compactions listed: {loaded}"
    );
    // The graph is the API's, both ways.
    let mut followers = app.graph(&author, "followers", 100).await;
    followers.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("{prefix}{i}")).collect();
    want.sort();
    assert_eq!(followers, want);
    assert_eq!(
        app.graph(&format!("{prefix}29"), "following", 100).await,
        std::slice::from_ref(&author)
    );

    let seen = capctl(
        &app,
        &[
            "celebrity-reads",
            "--author",
            &author,
            "--follower-prefix",
            &prefix,
            "--followers",
            "30",
            "--sample",
            "10",
            "--earlier-posts",
            "2",
            "--posts",
            "3",
            "--concurrency",
            "4",
            "--worker-url",
            &worker_url,
        ],
    )
    .await;
    assert_eq!(seen["not_seen"], 0, "{seen}");
    assert_eq!(seen["visibility"]["count"], 30, "{seen}");
    assert_eq!(seen["worker_done"], true, "{seen}");
    assert_eq!(
        seen["rows_written"].as_f64(),
        Some(0.0),
        "no fan-out rows: {seen}"
    );
    assert_eq!(seen["celebrity_skips"].as_f64(), Some(5.0), "{seen}");

    // Every follower, sampled or not, reads the five posts.
    for i in [0, 13, 29] {
        let timeline = app.timeline_ids(&format!("{prefix}{i}"), 100).await;
        assert_eq!(timeline.len(), 5, "follower {i}");
    }
    app.deployment.delete_stream().await;
}
