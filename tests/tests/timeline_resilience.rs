//! Nothing is lost when things fail: a worker killed in the middle of a large
//! fan-out, and NATS stopped while posts keep coming.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use e2e::closed_port;
use e2e::timeline_app::{
    CONVERGENCE, Deployment, TimelineApp, eventually, unique_user, wait_drained, wait_ready,
    worker_binary,
};
use futures::StreamExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

fn quiet(command: &mut Command) -> &mut Command {
    if std::env::var_os("TEST_LOG").is_none() {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    command.kill_on_drop(true)
}

/// The value of a counter in a Prometheus text page (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn spawn_worker_process(deployment: &Deployment, addr: SocketAddr, extra: &[&str]) -> Child {
    let args = deployment.worker_args(&addr.to_string(), extra);
    let mut command = Command::new(worker_binary());
    command.args(&args[1..]);
    quiet(&mut command).spawn().expect("start timeline-worker")
}

/// Asserts every follower's timeline holds `post` exactly once.
async fn every_follower_has_it_once(app: &TimelineApp, followers: &[String], post: Uuid) {
    let missing: Vec<&String> = futures::stream::iter(followers)
        .map(|f| async move {
            let ids = app.timeline_ids(f, 100).await;
            let copies = ids.iter().filter(|id| **id == post).count();
            assert!(copies <= 1, "{f} has the post {copies} times");
            (copies == 0).then_some(f)
        })
        .buffer_unordered(16)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    assert!(
        missing.is_empty(),
        "{} followers miss the post",
        missing.len()
    );
}

#[tokio::test]
async fn a_worker_killed_mid_fan_out_loses_nothing_and_duplicates_nothing() {
    let deployment = Deployment::new(&[]).await;
    let app = TimelineApp::spawn_in(deployment, &[]).await;
    let author = unique_user("author");
    let followers: Vec<String> = (0..1200).map(|i| unique_user(&format!("f{i}"))).collect();
    futures::stream::iter(&followers)
        .for_each_concurrent(32, |f| app.follow(f, &author))
        .await;

    // Slow on purpose: small chunks, one row at a time, short ack wait.
    let slow = [
        "--fanout-chunk-size",
        "20",
        "--fanout-write-concurrency",
        "1",
        "--fanout-concurrency",
        "2",
        "--fanout-ack-wait-secs",
        "3",
    ];
    let addr = closed_port().await;
    let mut first = spawn_worker_process(&app.deployment, addr, &slow);
    wait_ready(
        &app.client,
        &format!("http://{addr}"),
        Duration::from_secs(60),
    )
    .await;
    wait_drained(&app.deployment, Duration::from_secs(120)).await; // the follows' backfills

    let post = app.post(&author, "a post for 1200 followers").await.id;
    let written = eventually("the fan-out to start", CONVERGENCE, || async {
        let metrics = app
            .client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let written = counter(&metrics, "timeline_fanout_rows_written_total");
        (written > 0.0).then_some(written)
    })
    .await;
    first.start_kill().expect("SIGKILL the worker");
    first.wait().await.expect("reap the worker");
    assert!(
        written < followers.len() as f64,
        "killed in the middle: {written} of {} rows were written",
        followers.len()
    );

    let addr = closed_port().await;
    let _second = spawn_worker_process(&app.deployment, addr, &slow);
    wait_ready(
        &app.client,
        &format!("http://{addr}"),
        Duration::from_secs(60),
    )
    .await;
    wait_drained(&app.deployment, Duration::from_secs(60)).await;
    every_follower_has_it_once(&app, &followers, post).await;
    app.deployment.delete_stream().await;
}

/// A nats-server of the test's own, on a fixed port, with its own store.
struct OwnNats {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl OwnNats {
    async fn start() -> Self {
        let port = closed_port().await.port();
        let store = std::env::temp_dir().join(format!("timeline-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).expect("store dir");
        let mut nats = Self {
            port,
            store,
            child: None,
        };
        nats.restart().await;
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let mut command = Command::new("/usr/sbin/nats-server");
        command.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ]);
        command.arg(&self.store);
        self.child = Some(quiet(&mut command).spawn().expect("start nats-server"));
        let port = self.port;
        eventually(
            "nats-server to listen",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill nats-server");
            child.wait().await.expect("reap nats-server");
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

#[tokio::test]
async fn posts_accepted_while_nats_is_down_reach_every_follower_when_it_returns() {
    let mut nats = OwnNats::start().await;
    let deployment = Deployment::on_nats(&nats.url(), &[]).await;
    let app = TimelineApp::spawn_in(deployment, &["--outbox-relay-after-secs", "2"]).await;
    let worker = app.spawn_worker(&[]).await;
    let author = unique_user("author");
    let followers: Vec<String> = (0..5).map(|i| unique_user(&format!("f{i}"))).collect();
    for f in &followers {
        app.follow(f, &author).await;
    }
    wait_drained(&app.deployment, CONVERGENCE).await;

    nats.stop().await;
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(
            app.post(&author, &format!("while NATS is down {i}"))
                .await
                .id,
        );
    }
    // Read-your-writes holds without NATS.
    let own = app.timeline_ids(&author, 100).await;
    assert!(posts.iter().all(|p| own.contains(p)));

    nats.restart().await;
    for f in &followers {
        eventually(
            "the posts to reach every follower",
            Duration::from_secs(60),
            || async {
                let ids = app.timeline_ids(f, 100).await;
                posts.iter().all(|p| ids.contains(p)).then_some(())
            },
        )
        .await;
    }
    worker.stop().await;
    app.deployment.delete_stream().await;
}
