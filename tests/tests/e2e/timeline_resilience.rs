//! Nothing is lost when things fail: a worker killed in the middle of a large
//! fan-out, and NATS stopped while posts keep coming.

use std::time::Duration;

use e2e::closed_port;
use e2e::nats_instance::NatsInstance;
use e2e::timeline_app::{
    CONVERGENCE, Deployment, TimelineApp, eventually, unique_user, wait_drained, wait_ready,
};
use futures::StreamExt;
use uuid::Uuid;

/// How many of `followers` have `post` in their timeline.
async fn followers_with(app: &TimelineApp, followers: &[String], post: Uuid) -> usize {
    futures::stream::iter(followers)
        .map(|f| async move { app.timeline_ids(f, 100).await.contains(&post) })
        .buffer_unordered(16)
        .filter(|has| std::future::ready(*has))
        .count()
        .await
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
    let mut first = app.spawn_worker_process(addr, &slow);
    wait_ready(
        &app.client,
        &format!("http://{addr}"),
        Duration::from_secs(60),
    )
    .await;
    wait_drained(&app.deployment, Duration::from_secs(120)).await; // the follows' backfills

    let post = app.post(&author, "a post for 1200 followers").await.id;
    eventually("the fan-out to start", CONVERGENCE, || async {
        let metrics = app
            .client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let written = e2e::counter(&metrics, "timeline_fanout_rows_written_total", "");
        (written > 0.0).then_some(())
    })
    .await;
    first.start_kill().expect("SIGKILL the worker");
    first.wait().await.expect("reap the worker");
    // With no worker left, the timelines show where the kill came: some
    // followers have the post, some do not yet.
    let reached = followers_with(&app, &followers, post).await;
    assert!(
        reached > 0 && reached < followers.len(),
        "killed in the middle: {reached} of {} followers had the post",
        followers.len()
    );

    let addr = closed_port().await;
    let _second = app.spawn_worker_process(addr, &slow);
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

#[tokio::test]
async fn posts_accepted_while_nats_is_down_reach_every_follower_when_it_returns() {
    let mut nats = NatsInstance::start().await;
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
    for i in 0..10 {
        posts.push(
            app.post(&author, &format!("while NATS is down {i}"))
                .await
                .id,
        );
    }
    // Read-your-writes holds without NATS.
    let own = app.timeline_ids(&author, 100).await;
    assert!(posts.iter().all(|p| own.contains(p)));
    // The outbox rows waiting for NATS are spread over several shards.
    let shards = outbox_shards_holding_rows(&app).await;
    assert!(shards.len() > 1, "outbox rows in shards {shards:?}");

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

/// The shards of the app's outbox holding rows in the last minute's buckets.
async fn outbox_shards_holding_rows(app: &TimelineApp) -> std::collections::BTreeSet<i32> {
    use timeline::store::{DEFAULT_OUTBOX_SHARDS, outbox_bucketing};
    let store = app.store().await;
    let now = outbox_bucketing().now();
    let mut shards = std::collections::BTreeSet::new();
    for shard in 0..DEFAULT_OUTBOX_SHARDS {
        for bucket in now - 6..=now {
            let rows = store
                .session()
                .query_unpaged(
                    format!(
                        "SELECT id FROM {}.fanout_outbox WHERE topic = ? AND shard = ? AND bucket = ?",
                        app.deployment.keyspace
                    ),
                    (&app.deployment.prefix, shard, bucket),
                )
                .await
                .expect("read the outbox")
                .into_rows_result()
                .expect("rows");
            if rows.rows_num() > 0 {
                shards.insert(shard);
            }
        }
    }
    shards
}

#[tokio::test]
async fn an_old_outbox_row_is_relayed_and_the_watermark_moves_past_it() {
    use timeline::messages::{Envelope, FanoutMessage, Subjects};
    use timeline::store::{DEFAULT_OUTBOX_SHARDS, OutboxEntry, outbox_bucketing};
    let app = TimelineApp::spawn_in(
        Deployment::new(&[]).await,
        &["--outbox-relay-after-secs", "1"],
    )
    .await;
    let store = app.store().await;
    let subjects = Subjects::new(app.deployment.prefix.clone());
    let (follower, followee) = (unique_user("f"), unique_user("g"));
    let message = FanoutMessage::Follow {
        follower: timeline::domain::UserId::parse(&follower).expect("valid"),
        followee: timeline::domain::UserId::parse(&followee).expect("valid"),
        event_id: Uuid::now_v7(),
    };
    // A row left behind an hour ago (its request's publish failed and no
    // relay ran since), written the way the API writes it: in the batch of
    // a follow, which also floors its shard's watermark at its bucket.
    let mut entry = OutboxEntry::new(
        app.deployment.prefix.clone(),
        subjects.work("follow"),
        message.message_id(),
        Envelope::new(message).to_bytes().to_vec(),
        DEFAULT_OUTBOX_SHARDS,
    );
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let since_1970 = an_hour_ago
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let old_id = Uuid::new_v1(
        uuid::Timestamp::from_unix(
            uuid::NoContext,
            since_1970.as_secs(),
            since_1970.subsec_nanos(),
        ),
        &[1, 2, 3, 4, 5, 6],
    );
    let old_bucket = (since_1970.as_secs() / timeline::store::OUTBOX_BUCKET_SECONDS) as i64;
    entry.id = old_id.into();
    entry.bucket = old_bucket;
    let (f, g) = (
        timeline::domain::UserId::parse(&follower).expect("valid"),
        timeline::domain::UserId::parse(&followee).expect("valid"),
    );
    store
        .follow(&f, &g, &entry)
        .await
        .expect("the follow batch");

    // The relay finds it (no worker runs: the stream keeps it) ...
    let client = async_nats::connect(&app.deployment.nats_url)
        .await
        .expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    let published = eventually("the relay to publish the old row", CONVERGENCE, || async {
        let stream = jetstream.get_stream(&app.deployment.stream).await.ok()?;
        stream
            .get_last_raw_message_by_subject(&subjects.work("follow"))
            .await
            .ok()
    })
    .await;
    assert_eq!(published.payload.as_ref(), entry.payload.as_slice());
    // ... and moves its shard's watermark past its bucket, up to about a
    // minute ago, so the buckets behind are never read again.
    eventually("the watermark to move on", CONVERGENCE, || async {
        let watermark = store
            .outbox_watermark(&app.deployment.prefix, entry.shard)
            .await
            .ok()??;
        (watermark > outbox_bucketing().now() - 12).then_some(())
    })
    .await;
    let left = store
        .session()
        .query_unpaged(
            format!(
                "SELECT id FROM {}.fanout_outbox WHERE topic = ? AND shard = ? AND bucket = ?",
                app.deployment.keyspace
            ),
            (&app.deployment.prefix, entry.shard, old_bucket),
        )
        .await
        .expect("read the old bucket")
        .into_rows_result()
        .expect("rows");
    assert_eq!(left.rows_num(), 0, "the relayed row is deleted");
    app.deployment.delete_stream().await;
}

/// Two API processes of one deployment share the outbox's shards (each relays
/// its own), and between them relay every post accepted while NATS was away.
#[tokio::test]
async fn two_api_processes_share_the_outbox_shards_and_relay_everything() {
    let mut nats = NatsInstance::start().await;
    let deployment = Deployment::on_nats(&nats.url(), &[]).await;
    let flags = [
        "--outbox-relay-after-secs",
        "1",
        "--outbox-relay-interval-ms",
        "200",
        "--outbox-shards",
        "16",
    ];
    let first = TimelineApp::spawn_in(deployment.clone(), &flags).await;
    let second = TimelineApp::spawn_in(deployment, &flags).await;
    let worker = first.spawn_worker(&[]).await;
    let author = unique_user("author");
    let followers: Vec<String> = (0..3).map(|i| unique_user(&format!("f{i}"))).collect();
    for follower in &followers {
        first.follow(follower, &author).await;
    }
    wait_drained(&first.deployment, CONVERGENCE).await;

    let store = first.store().await;
    let query = format!(
        "SELECT relay_id FROM {}.outbox_relays WHERE topic = ?",
        first.deployment.keyspace
    );
    eventually("both relays to register", CONVERGENCE, || async {
        let rows = store
            .session()
            .query_unpaged(query.as_str(), (&first.deployment.prefix,))
            .await
            .ok()?
            .into_rows_result()
            .ok()?;
        (rows.rows_num() == 2).then_some(())
    })
    .await;

    nats.stop().await;
    let mut posts = Vec::new();
    for i in 0..10 {
        posts.push(first.post(&author, &format!("via the first {i}")).await.id);
        posts.push(
            second
                .post(&author, &format!("via the second {i}"))
                .await
                .id,
        );
    }
    nats.restart().await;
    for follower in &followers {
        eventually(
            "every post to reach every follower",
            Duration::from_secs(60),
            || async {
                let ids = first.timeline_ids(follower, 100).await;
                posts.iter().all(|post| ids.contains(post)).then_some(())
            },
        )
        .await;
    }
    worker.stop().await;
    first.deployment.delete_stream().await;
}
