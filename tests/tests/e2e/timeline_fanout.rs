//! Fan-out through the real worker (in-process), Cassandra and NATS:
//! convergence, celebrities merged at read time, backfill and removal,
//! pagination across buckets, dead letters.

use std::collections::{BTreeSet, HashMap};

use e2e::timeline_app::{
    CONVERGENCE, Deployment, TimelineApp, eventually, newest_first, unique_user, wait_drained,
};
use futures::StreamExt;
use scylla::value::CqlTimeuuid;
use timeline::domain::PostId;
use uuid::Uuid;

/// A small deterministic generator, so a failing graph can be reproduced.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[tokio::test]
async fn every_timeline_converges_to_exactly_the_expected_posts() {
    let app = TimelineApp::spawn(&[]).await;
    // Two workers share the durable consumer: each message goes to one of
    // them, and the result is the same as with one.
    let worker = app.spawn_worker(&[]).await;
    let second_worker = app.spawn_worker(&[]).await;
    let users: Vec<String> = (0..200).map(|i| unique_user(&format!("u{i}"))).collect();
    let mut rng = Lcg(0x5eed);

    // A random graph: each user follows 0..15 others.
    let mut following: HashMap<usize, BTreeSet<usize>> = HashMap::new();
    for u in 0..users.len() {
        let count = rng.below(16);
        let set = following.entry(u).or_default();
        while set.len() < count {
            let target = rng.below(users.len());
            if target != u {
                set.insert(target);
            }
        }
    }
    let edges: Vec<(usize, usize)> = following
        .iter()
        .flat_map(|(u, targets)| targets.iter().map(move |t| (*u, *t)))
        .collect();
    futures::stream::iter(&edges)
        .for_each_concurrent(16, |(u, t)| app.follow(&users[*u], &users[*t]))
        .await;

    // 100 posts from 50 authors, 8 at a time.
    let authors: Vec<usize> = (0..100).map(|_| rng.below(50)).collect();
    let posts: Vec<(usize, Uuid)> = futures::stream::iter(authors.into_iter().enumerate())
        .map(|(i, a)| {
            let app = &app;
            let users = &users;
            async move { (a, app.post(&users[a], &format!("post {i}")).await.id) }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let mut expected: HashMap<usize, Vec<Uuid>> = HashMap::new();
    for u in 0..users.len() {
        let mut ids: Vec<Uuid> = posts
            .iter()
            .filter(|(author, _)| *author == u || following[&u].contains(author))
            .map(|(_, id)| *id)
            .collect();
        newest_first(&mut ids);
        expected.insert(u, ids);
    }

    // Poll the timelines not yet right until all are, or the deadline passes.
    let mut pending: BTreeSet<usize> = (0..users.len()).collect();
    let mut last_diff = String::new();
    let deadline = tokio::time::Instant::now() + CONVERGENCE;
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        for u in pending.clone() {
            let actual = app.timeline_ids(&users[u], 100).await;
            let unique: BTreeSet<&Uuid> = actual.iter().collect();
            assert_eq!(unique.len(), actual.len(), "duplicates in {}", users[u]);
            if actual == expected[&u] {
                pending.remove(&u);
            } else {
                last_diff = format!(
                    "{}: {} of {} posts",
                    users[u],
                    actual.len(),
                    expected[&u].len()
                );
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "{} timelines not converged, e.g. {last_diff}",
        pending.len()
    );

    // The worker's own endpoint (the API's would do too in one process: the
    // recorder is process-global).
    let metrics = app
        .client
        .get(format!("http://{}/metrics", worker.addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "timeline_fanout_lag_seconds",
        "timeline_fanout_deliveries_total",
        "timeline_fanout_rows_written_total",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }

    // Fan-out rows expire: each carries a TTL of at most the configured 30 days.
    let (follower, followee) = edges
        .iter()
        .find(|(_, t)| posts.iter().any(|(a, _)| a == t))
        .expect("some user follows an author");
    let (_, post) = posts.iter().find(|(a, _)| a == followee).expect("post");
    let store = app.store.get().expect("store ready");
    let posted = PostId::from_timeuuid(CqlTimeuuid::from(*post)).created_at();
    let (ttl,): (Option<i32>,) = store
        .session()
        .query_unpaged(
            format!(
                "SELECT TTL(content) FROM {}.home_timeline WHERE user_id = ? AND bucket = ? AND post_id = ?",
                app.deployment.keyspace
            ),
            (&users[*follower], store.bucketing().bucket_of(posted), CqlTimeuuid::from(*post)),
        )
        .await
        .expect("query")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("the fan-out row");
    let ttl = ttl.expect("the row has a TTL");
    assert!(ttl > 0 && ttl <= 30 * 86_400, "ttl {ttl}");

    worker.stop().await;
    second_worker.stop().await;
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn celebrities_are_merged_at_read_time_and_never_fanned_out() {
    let app = TimelineApp::spawn(&["--celebrity-threshold", "5"]).await;
    let worker = app.spawn_worker(&[]).await;
    let star = unique_user("star");
    let plain = unique_user("plain");
    let fans: Vec<String> = (0..8).map(|i| unique_user(&format!("fan{i}"))).collect();
    for fan in &fans {
        app.follow(fan, &star).await;
    }
    app.follow(&fans[0], &plain).await;
    // The follows' backfills first: a backfill that ran after the star's
    // posts would copy them (the star is not a celebrity until its first post
    // is processed), and this test is about the fan-out.
    wait_drained(&app.deployment, CONVERGENCE).await;
    let early = app.post(&fans[0], "a fan's own post").await;

    let mut star_posts = Vec::new();
    let mut star_buckets = BTreeSet::new();
    for i in 0..3 {
        let post = app.post(&star, &format!("star post {i}")).await;
        star_posts.push(post.id);
        star_buckets.insert(post.created_at);
    }
    let plain_post = app.post(&plain, "plain post").await.id;
    wait_drained(&app.deployment, CONVERGENCE).await;

    // The star is now known as a celebrity; no follower got a row for its posts.
    let store = app.store().await;
    let session = store.session();
    let keyspace = &app.deployment.keyspace;
    let rows = session
        .query_unpaged(
            format!(
                "SELECT author_id FROM {keyspace}.celebrities WHERE shard = 0 AND author_id = ?"
            ),
            (&star,),
        )
        .await
        .expect("query")
        .into_rows_result()
        .expect("rows");
    assert_eq!(rows.rows_num(), 1, "the star is marked a celebrity");
    // Every bucket a star post fell in (posting may straddle a bucket boundary).
    let star_buckets: BTreeSet<i64> = star_buckets
        .into_iter()
        .map(|at| store.bucketing().bucket_of(at))
        .collect();
    for fan in &fans {
        for bucket in &star_buckets {
            let rows = session
                .query_unpaged(
                    format!("SELECT post_id, author_id FROM {keyspace}.home_timeline WHERE user_id = ? AND bucket = ?"),
                    (fan, bucket),
                )
                .await
                .expect("query")
                .into_rows_result()
                .expect("rows");
            for row in rows
                .rows::<(scylla::value::CqlTimeuuid, String)>()
                .expect("typed")
            {
                let (_, author) = row.expect("row");
                assert_ne!(author, star, "no fan-out row for a celebrity's post");
            }
        }
    }

    // Yet every fan reads the star's posts, merged in order, without duplicates.
    let mut expected_for_fan0 = star_posts.clone();
    expected_for_fan0.extend([plain_post, early.id]);
    newest_first(&mut expected_for_fan0);
    assert_eq!(app.timeline_ids(&fans[0], 2).await, expected_for_fan0);
    let mut star_only = star_posts.clone();
    newest_first(&mut star_only);
    for fan in &fans[1..] {
        assert_eq!(app.timeline_ids(fan, 100).await, star_only);
    }
    // Unfollowing the star takes its posts out of the merged view at once.
    app.unfollow(&fans[1], &star).await;
    assert!(app.timeline_ids(&fans[1], 100).await.is_empty());
    worker.stop().await;
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn follow_backfills_recent_posts_and_unfollow_removes_them() {
    let app = TimelineApp::spawn(&["--backfill-posts", "3"]).await;
    let worker = app.spawn_worker(&[]).await;
    let writer = unique_user("writer");
    let reader = unique_user("reader");
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(
            app.post(&writer, &format!("before the follow {i}"))
                .await
                .id,
        );
    }
    let own = app.post(&reader, "the reader's own").await.id;

    app.follow(&reader, &writer).await;
    newest_first(&mut posts);
    let mut expected: Vec<Uuid> = posts[..3].to_vec();
    expected.push(own);
    newest_first(&mut expected);
    eventually("the backfill", CONVERGENCE, || async {
        (app.timeline_ids(&reader, 100).await == expected).then_some(())
    })
    .await;

    // New posts arrive by fan-out on top of the backfill.
    let after = app.post(&writer, "after the follow").await.id;
    expected.insert(0, after);
    eventually("the fan-out", CONVERGENCE, || async {
        (app.timeline_ids(&reader, 100).await == expected).then_some(())
    })
    .await;

    app.unfollow(&reader, &writer).await;
    eventually("the removal", CONVERGENCE, || async {
        (app.timeline_ids(&reader, 100).await == vec![own]).then_some(())
    })
    .await;
    worker.stop().await;
    app.deployment.delete_stream().await;
}

/// A post retried with its `Idempotency-Key` (after an attempt the client
/// gave up on, and again after one that succeeded, and by concurrent
/// duplicates) exists once: once among the author's posts, once in every
/// follower's timeline. Another post with the same key is refused.
#[tokio::test]
async fn a_post_retried_with_its_idempotency_key_exists_once_everywhere() {
    let app = TimelineApp::spawn(&[]).await;
    let worker = app.spawn_worker(&[]).await;
    let author = unique_user("author");
    let followers: Vec<String> = (0..3).map(|i| unique_user(&format!("f{i}"))).collect();
    for follower in &followers {
        app.follow(follower, &author).await;
    }
    wait_drained(&app.deployment, CONVERGENCE).await;
    let key = format!("post-{}", Uuid::new_v4().simple());
    let send = |content: &'static str, timeout: std::time::Duration| {
        app.post_as(
            &author,
            &serde_json::json!({"author_id": author, "content": content}),
        )
        .header("Idempotency-Key", key.as_str())
        .timeout(timeout)
        .send()
    };

    // The client gives up on the first attempt before any answer can come.
    let _ = send("only once", std::time::Duration::from_millis(1)).await;
    let retried = send("only once", CONVERGENCE).await.expect("retry");
    assert_eq!(retried.status(), 202);
    let post: timeline::api::PostView = retried.json().await.expect("post");
    let duplicates =
        futures::future::join_all((0..8).map(|_| send("only once", CONVERGENCE))).await;
    for duplicate in duplicates {
        let duplicate = duplicate.expect("duplicate");
        assert_eq!(duplicate.status(), 202);
        assert_eq!(duplicate.headers()["idempotent-replayed"], "true");
        let body: timeline::api::PostView = duplicate.json().await.expect("post");
        assert_eq!(body.id, post.id, "the original post is answered");
    }
    let other = send("something else", CONVERGENCE)
        .await
        .expect("other body");
    let problem = e2e::expect_problem(other, 422).await;
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");

    assert_eq!(
        app.user_post_ids(&author, 100).await,
        vec![post.id],
        "one post"
    );
    wait_drained(&app.deployment, CONVERGENCE).await;
    for follower in &followers {
        eventually(
            "the post in the follower's timeline",
            CONVERGENCE,
            || async {
                let ids = app.timeline_ids(follower, 100).await;
                (ids == vec![post.id]).then_some(())
            },
        )
        .await;
    }
    let bad_key = app
        .post_as(
            &author,
            &serde_json::json!({"author_id": author, "content": "x"}),
        )
        .header("Idempotency-Key", "")
        .send()
        .await
        .expect("bad key");
    assert_eq!(
        e2e::expect_problem(bad_key, 422).await["field"],
        "Idempotency-Key"
    );
    assert_eq!(
        app.user_post_ids(&author, 100).await,
        vec![post.id],
        "still one post"
    );
    worker.stop().await;
    app.deployment.delete_stream().await;
}

/// An unfollow is immediate for reads: the reader's pages leave the author out
/// at once, before the clean-up ran, and also after a late chunk writes one of
/// the author's posts into the timeline again.
#[tokio::test]
async fn after_an_unfollow_no_page_shows_the_author_not_even_a_late_chunk_row() {
    let app = TimelineApp::spawn(&["--backfill-posts", "2"]).await;
    let worker = app.spawn_worker(&[]).await;
    let writer = unique_user("writer");
    let reader = unique_user("reader");
    let other = unique_user("other");
    for i in 0..3 {
        app.post(&writer, &format!("before the follow {i}")).await;
    }
    app.follow(&reader, &writer).await;
    app.follow(&reader, &other).await;
    // The backfills first, so they copy exactly the posts made before.
    wait_drained(&app.deployment, CONVERGENCE).await;
    let kept = app.post(&other, "still followed").await.id;
    let late = app.post(&writer, "after the follow").await;
    eventually("the fan-out", CONVERGENCE, || async {
        let ids = app.timeline_ids(&reader, 100).await;
        (ids.len() == 4 && ids.contains(&late.id) && ids.contains(&kept)).then_some(())
    })
    .await;
    worker.stop().await; // no clean-up runs: only the read filter is at work

    app.unfollow(&reader, &writer).await;
    assert_eq!(
        app.timeline_ids(&reader, 100).await,
        vec![kept],
        "the unfollowed author is gone at once"
    );
    // A chunk message processed after the unfollow writes the row again.
    let store = app.store().await;
    let late_record = store
        .post(PostId::from_uuid(late.id).expect("a timeuuid"))
        .await
        .expect("read the post")
        .expect("the post exists");
    store
        .write_timeline_row(
            &timeline::domain::UserId::parse(&reader).expect("id"),
            &late_record,
        )
        .await
        .expect("a late row");
    for limit in [1, 2, 100] {
        assert_eq!(
            app.timeline_ids(&reader, limit).await,
            vec![kept],
            "pages of {limit} leave the unfollowed author out"
        );
    }
    app.deployment.delete_stream().await;
}

/// Unfollowing someone not followed (or oneself) costs nothing: no write, no
/// fan-out message.
#[tokio::test]
async fn unfollowing_someone_not_followed_enqueues_nothing() {
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");
    let bob = unique_user("bob");
    let client = async_nats::connect(&app.deployment.nats_url)
        .await
        .expect("NATS");
    let jetstream = async_nats::jetstream::new(client);
    let messages = || async {
        let mut stream = jetstream.get_stream(&app.deployment.stream).await.ok()?;
        Some(stream.info().await.ok()?.state.messages)
    };
    // The API creates its stream once NATS answers; follow once to see a message land.
    app.follow(&ann, &bob).await;
    let before = eventually("the follow message", CONVERGENCE, || async {
        messages().await.filter(|count| *count == 1)
    })
    .await;

    let carol = unique_user("carol");
    app.unfollow(&ann, &carol).await;
    app.unfollow(&carol, &ann).await;
    let own = app
        .as_user(
            &ann,
            reqwest::Method::DELETE,
            &format!("/v1/users/{ann}/following/{ann}"),
        )
        .send()
        .await
        .expect("self-unfollow");
    e2e::expect_problem(own, 422).await;
    assert_eq!(messages().await, Some(before), "nothing was enqueued");

    // A real unfollow is one message.
    app.unfollow(&ann, &bob).await;
    assert_eq!(messages().await, Some(before + 1));
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn cursors_walk_a_long_timeline_across_buckets_without_gaps_or_repeats() {
    let deployment = Deployment::new(&["--bucket-seconds", "1"]).await;
    let app = TimelineApp::spawn_in(deployment, &[]).await;
    let worker = app.spawn_worker(&[]).await;
    let author = unique_user("author");
    let reader = unique_user("reader");
    app.follow(&reader, &author).await;
    wait_drained(&app.deployment, CONVERGENCE).await;

    // 40 posts spread over about three seconds: several one-second buckets.
    let mut posts = Vec::new();
    let started = tokio::time::Instant::now();
    for i in 0..40 {
        posts.push(app.post(&author, &format!("post {i}")).await.id);
        tokio::time::sleep_until(started + std::time::Duration::from_millis(75 * (i + 1))).await;
    }
    newest_first(&mut posts);
    let buckets: BTreeSet<i64> = posts
        .iter()
        .map(|id| {
            timeline::domain::Bucketing::new(1).bucket_of(
                timeline::domain::PostId::from_uuid(*id)
                    .expect("timeuuid")
                    .created_at(),
            )
        })
        .collect();
    assert!(buckets.len() >= 3, "posts span {} buckets", buckets.len());

    eventually("the reader's timeline", CONVERGENCE, || async {
        (app.timeline_ids(&reader, 100).await.len() == posts.len()).then_some(())
    })
    .await;
    for limit in [1, 7, 40] {
        assert_eq!(
            app.timeline_ids(&reader, limit).await,
            posts,
            "reader, limit {limit}"
        );
        assert_eq!(
            app.timeline_ids(&author, limit).await,
            posts,
            "author, limit {limit}"
        );
        assert_eq!(
            app.user_post_ids(&author, limit).await,
            posts,
            "posts, limit {limit}"
        );
    }
    worker.stop().await;
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_to_its_own_bounded_stream_and_counted() {
    let app = TimelineApp::spawn(&[]).await;
    let worker = app.spawn_worker(&[]).await;
    let subjects = timeline::messages::Subjects::new(app.deployment.prefix.clone());
    let client = async_nats::connect(&app.deployment.nats_url)
        .await
        .expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .publish(subjects.work("post"), "not json".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    // The dead-letter stream keeps it, bounded by age and count.
    let dead_stream = format!("{}_DEAD", app.deployment.stream);
    let mut dead = jetstream
        .get_stream(&dead_stream)
        .await
        .expect("dead-letter stream");
    let config = dead.info().await.expect("info").config.clone();
    assert_eq!(config.subjects, vec![subjects.all_dead()]);
    assert_eq!(config.max_age, std::time::Duration::from_secs(7 * 86_400));
    assert_eq!(config.max_messages, 100_000);
    let letter = eventually("a dead letter", CONVERGENCE, || async {
        dead.get_last_raw_message_by_subject(&subjects.dead("post"))
            .await
            .ok()
    })
    .await;
    assert_eq!(&letter.payload[..], b"not json");
    let headers = letter.headers;
    assert!(headers.get("Timeline-Dead-Reason").is_some());
    assert_eq!(
        headers
            .get("Timeline-Original-Subject")
            .map(|v| v.as_str().to_owned()),
        Some(subjects.work("post"))
    );

    // The work stream holds work only.
    let mut work = jetstream
        .get_stream(&app.deployment.stream)
        .await
        .expect("work stream");
    let work_config = work.info().await.expect("info").config.clone();
    assert_eq!(work_config.subjects, vec![subjects.all_work()]);

    let metrics = app
        .client
        .get(format!("http://{}/metrics", worker.addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("timeline_fanout_dead_letters_total"));
    // Terminated, not redelivered.
    wait_drained(&app.deployment, CONVERGENCE).await;
    worker.stop().await;
    app.deployment.delete_stream().await;
}

/// A worker started with a new consumer configuration updates the existing
/// durable consumer in place, keeping what it holds.
#[tokio::test]
async fn an_existing_consumer_takes_a_changed_configuration() {
    let app = TimelineApp::spawn(&[]).await;
    // The consumer's ack_wait once the worker has set it (it does so after
    // it is ready, in the background).
    let deployment = &app.deployment;
    let ack_wait_becomes = |secs: u64| async move {
        eventually("the consumer's ack_wait", CONVERGENCE, || async move {
            let client = async_nats::connect(&deployment.nats_url).await.ok()?;
            let jetstream = async_nats::jetstream::new(client);
            let stream = jetstream.get_stream(&deployment.stream).await.ok()?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer(&deployment.consumer).await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.config.ack_wait == std::time::Duration::from_secs(secs)).then_some(())
        })
        .await;
    };
    let first = app.spawn_worker(&["--fanout-ack-wait-secs", "30"]).await;
    ack_wait_becomes(30).await;
    first.stop().await;
    let second = app.spawn_worker(&["--fanout-ack-wait-secs", "7"]).await;
    ack_wait_becomes(7).await;
    // And it still works: a follow is processed.
    app.follow(&unique_user("a"), &unique_user("b")).await;
    wait_drained(&app.deployment, CONVERGENCE).await;
    second.stop().await;
    app.deployment.delete_stream().await;
}
