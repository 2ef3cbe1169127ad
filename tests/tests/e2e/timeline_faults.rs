//! The AP side's promise under faults: whatever is acknowledged with `202`
//! reaches every follower once the stores heal, and transient failures never
//! dead-letter anything. The faults are real: a Cassandra node of the test's
//! own stopped, a nats-server of its own killed, each for longer than the
//! whole redelivery budget the worker used to have (five deliveries with nak
//! delays of 1, 2, 4 and 8 s: about 15 s).

use std::time::Duration;

use e2e::cassandra_instance::CassandraInstance;
use e2e::nats_instance::NatsInstance;
use e2e::timeline_app::{
    CONVERGENCE, Deployment, TimelineApp, eventually, unique_user, wait_drained,
};
use futures::StreamExt;
use uuid::Uuid;

/// Longer than the old delivery budget of about 15 s.
const OUTAGE: Duration = Duration::from_secs(20);

/// Worker flags: chunks of 50 followers (so a post fans out as several chunk
/// messages), a short ack wait so messages held by a failed nak come back soon.
const WORKER_FLAGS: &[&str] = &["--fanout-chunk-size", "50", "--fanout-ack-wait-secs", "5"];

/// `count` followers of `author`, each following through the API; waits until
/// the follow messages are processed.
async fn followers_of(app: &TimelineApp, author: &str, count: usize) -> Vec<String> {
    let followers: Vec<String> = (0..count).map(|i| unique_user(&format!("f{i}"))).collect();
    futures::stream::iter(&followers)
        .for_each_concurrent(
            16,
            |follower| async move { app.follow(follower, author).await },
        )
        .await;
    wait_drained(&app.deployment, CONVERGENCE).await;
    followers
}

/// Waits until every follower's timeline holds every post, exactly once.
async fn every_follower_converges(app: &TimelineApp, followers: &[String], posts: &[Uuid]) {
    let missing = |ids: &[Uuid]| posts.iter().filter(|post| !ids.contains(post)).count();
    futures::stream::iter(followers)
        .for_each_concurrent(8, |follower| async move {
            eventually(
                "every post in every follower's timeline",
                Duration::from_secs(120),
                || async {
                    // Right after a store returns, a read may still find the
                    // driver reconnecting (503): that is a "not yet".
                    let response = app
                        .as_user(
                            follower,
                            reqwest::Method::GET,
                            &format!("/v1/users/{follower}/timeline?limit=100"),
                        )
                        .send()
                        .await
                        .ok()?;
                    if response.status() != 200 {
                        return None;
                    }
                    let page: timeline::api::PostPage = response.json().await.ok()?;
                    let ids: Vec<Uuid> = page.items.iter().map(|post| post.id).collect();
                    for post in posts {
                        let copies = ids.iter().filter(|id| *id == post).count();
                        assert!(copies <= 1, "{follower} has {post} {copies} times");
                    }
                    (missing(&ids) == 0).then_some(())
                },
            )
            .await;
        })
        .await;
}

/// How many messages the deployment's dead-letter stream holds (0 when it
/// was never created).
async fn dead_letters(deployment: &Deployment) -> u64 {
    let client = async_nats::connect(&deployment.nats_url)
        .await
        .expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    match jetstream
        .get_stream(format!("{}_DEAD", deployment.stream))
        .await
    {
        Ok(mut stream) => {
            stream
                .info()
                .await
                .expect("dead stream info")
                .state
                .messages
        }
        Err(_) => 0,
    }
}

#[tokio::test]
async fn a_cassandra_outage_longer_than_any_retry_budget_loses_no_fan_out() {
    let cassandra = CassandraInstance::start().await;
    let deployment = Deployment::on_stores(cassandra.nodes(), &e2e::nats_url(), &[]).await;
    let app = TimelineApp::spawn_in(deployment, &[]).await;
    let worker = app.spawn_worker(WORKER_FLAGS).await;
    let worker_url = format!("http://{}", worker.addr);
    let author = unique_user("author");
    let followers = followers_of(&app, &author, 300).await;

    // A backlog: 30 posts × 300 followers = 9,000 rows in chunks of 50, and
    // the store goes away while the worker is at it.
    let mut posts = Vec::new();
    for i in 0..30 {
        posts.push(
            app.post(&author, &format!("before the outage {i}"))
                .await
                .id,
        );
    }
    cassandra.stop().await;
    let outage = tokio::time::Instant::now();

    // The worker notices: it retries for the store, and says it is not ready.
    eventually(
        "the worker to report its store down",
        Duration::from_secs(30),
        || async {
            let ready = app
                .client
                .get(format!("{worker_url}/readyz"))
                .send()
                .await
                .ok()?;
            (ready.status() == 503).then_some(())
        },
    )
    .await;
    tokio::time::sleep_until(outage + OUTAGE).await;
    let metrics = e2e::metrics_page(&app.client, &worker_url).await;
    assert!(
        e2e::counter(
            &metrics,
            "timeline_fanout_retries_total",
            "store_unavailable"
        ) > 0.0,
        "the outage hit fan-out work in progress"
    );

    cassandra.start_again().await;
    e2e::wait_ready(&app.client, &app.url(""), Duration::from_secs(60)).await;
    every_follower_converges(&app, &followers, &posts).await;
    wait_drained(&app.deployment, CONVERGENCE).await;
    assert_eq!(
        dead_letters(&app.deployment).await,
        0,
        "nothing dead-lettered"
    );
    worker.stop().await;
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn a_nats_outage_while_chunks_are_published_loses_no_fan_out() {
    let mut nats = NatsInstance::start().await;
    let deployment = Deployment::on_nats(&nats.url(), &[]).await;
    let app = TimelineApp::spawn_in(deployment, &["--outbox-relay-after-secs", "2"]).await;
    let worker = app.spawn_worker(WORKER_FLAGS).await;
    let author = unique_user("author");
    let followers = followers_of(&app, &author, 300).await;

    // Each post's fan-out is published as six chunk messages; NATS dies while
    // the worker is publishing them.
    let mut posts = Vec::new();
    for i in 0..20 {
        posts.push(app.post(&author, &format!("before NATS dies {i}")).await.id);
    }
    nats.stop().await;
    // Posts keep being accepted: their fan-out waits in the outbox.
    for i in 0..5 {
        posts.push(
            app.post(&author, &format!("while NATS is down {i}"))
                .await
                .id,
        );
    }
    tokio::time::sleep(OUTAGE).await;
    nats.restart().await;

    every_follower_converges(&app, &followers, &posts).await;
    wait_drained(&app.deployment, CONVERGENCE).await;
    assert_eq!(
        dead_letters(&app.deployment).await,
        0,
        "nothing dead-lettered"
    );
    worker.stop().await;
    app.deployment.delete_stream().await;
}
