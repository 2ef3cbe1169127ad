//! The timeline API through HTTP against the real Cassandra and NATS, with no
//! worker running: what the API does on its own.

use e2e::expect_problem;
use e2e::timeline_app::{CONVERGENCE, TimelineApp, eventually, unique_user};
use serde_json::{Value, json};
use timeline::api::{PostPage, PostView};

#[tokio::test]
async fn the_author_sees_their_post_in_their_timeline_when_the_202_returns() {
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");

    let posted = app.post(&ann, "hello, world").await;
    assert_eq!(posted.author_id, ann);
    assert_eq!(posted.content, "hello, world");

    // No worker runs: this row was written by the request itself, at QUORUM.
    let page = app.timeline_page(&ann, "").await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, posted.id);
    assert_eq!(page.items[0].content, "hello, world");
    assert!(page.next_cursor.is_none());

    let read: PostView = app.get_json(&format!("/v1/posts/{}", posted.id), 200).await;
    assert_eq!(read.id, posted.id);
    assert_eq!(read.created_at, posted.created_at);
    assert_eq!(app.user_post_ids(&ann, 10).await, vec![posted.id]);

    let unknown = uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 6]);
    expect_problem(app.get(&format!("/v1/posts/{unknown}")).await, 404).await;
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn bad_input_is_a_problem_and_writes_nothing() {
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");
    // Each as its author (a malformed author too): these are refused for
    // their content, not for acting as someone else.
    let post = |body: Value| {
        let author = body["author_id"].as_str().unwrap_or(&ann).to_owned();
        app.post_as(&author, &body).send()
    };

    // Content: empty, blank, one character too long; a bad author id; unknown fields.
    for body in [
        json!({ "author_id": ann, "content": "" }),
        json!({ "author_id": ann, "content": "   " }),
        json!({ "author_id": ann, "content": "x".repeat(501) }),
        json!({ "author_id": "not a valid id!", "content": "hi" }),
        json!({ "author_id": "a".repeat(65), "content": "hi" }),
        json!({ "author_id": ann, "content": "hi", "extra": 1 }),
        json!({ "author_id": ann }),
        json!({ "author_id": ann, "content": 5 }),
    ] {
        expect_problem(post(body.clone()).await.expect("post"), 422).await;
    }
    // Malformed JSON.
    let malformed = app
        .as_user(&ann, reqwest::Method::POST, "/v1/posts")
        .header("content-type", "application/json")
        .body("{\"author_id\": ")
        .send()
        .await
        .expect("post");
    expect_problem(malformed, 400).await;

    // Path, cursor, limit and consistency of a home timeline, read by its owner.
    for (reader, path) in [
        ("bad id", "/v1/users/bad%20id/timeline".to_owned()),
        (
            &ann,
            format!("/v1/users/{ann}/timeline?cursor=not-a-cursor"),
        ),
        (
            &ann,
            format!("/v1/users/{ann}/timeline?cursor=eyJrIjoidGltZWxpbmUifQ"),
        ),
        (&ann, format!("/v1/users/{ann}/timeline?consistency=two")),
        (&ann, format!("/v1/users/{ann}/timeline?limit=0")),
        (&ann, format!("/v1/users/{ann}/timeline?limit=101")),
        (&ann, format!("/v1/users/{ann}/timeline?limit=abc")),
    ] {
        expect_problem(app.get_as(reader, &path).await, 400).await;
    }
    // And of the public reads.
    for path in [
        format!("/v1/users/{ann}/posts?cursor=%%%"),
        format!("/v1/users/{ann}/following?cursor=AAAA"),
        "/v1/users/bad%20id/followers".to_owned(),
        "/v1/posts/not-a-uuid".to_owned(),
        format!("/v1/posts/{}", uuid::Uuid::new_v4()),
    ] {
        expect_problem(app.get(&path).await, 400).await;
    }
    // A cursor from another user's list is refused too.
    let bob = unique_user("bob");
    app.post(&bob, "one").await;
    app.post(&bob, "two").await;
    let page = app.timeline_page(&bob, "limit=1").await;
    let cursor = page.next_cursor.expect("a second page");
    let stolen = app
        .get_as(&ann, &format!("/v1/users/{ann}/timeline?cursor={cursor}"))
        .await;
    expect_problem(stolen, 400).await;

    // Graph: self-follow is 422, a bad target is 400.
    let self_follow = app
        .put_as(&ann, &format!("/v1/users/{ann}/following/{ann}"))
        .await;
    expect_problem(self_follow, 422).await;
    let bad_target = app
        .put_as(&ann, &format!("/v1/users/{ann}/following/bad%20id"))
        .await;
    expect_problem(bad_target, 400).await;

    // Nothing was written for ann.
    assert!(app.user_post_ids(&ann, 100).await.is_empty());
    assert!(app.timeline_ids(&ann, 100).await.is_empty());
    assert!(app.graph(&ann, "following", 100).await.is_empty());
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn the_read_consistency_is_echoed() {
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");
    app.post(&ann, "hi").await;
    for (query, expected) in [
        ("", "one"),
        ("consistency=one", "one"),
        ("consistency=quorum", "quorum"),
        ("consistency=all", "all"),
    ] {
        let response = app
            .get_as(&ann, &format!("/v1/users/{ann}/timeline?{query}"))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["read-consistency"], expected);
        let page: PostPage = response.json().await.expect("page");
        assert_eq!(page.items.len(), 1);
    }
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn graph_lists_page_with_cursors_both_ways() {
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");
    let mut targets: Vec<String> = (0..23).map(|i| unique_user(&format!("t{i}"))).collect();
    for target in &targets {
        app.follow(&ann, target).await;
    }
    // Idempotent.
    app.follow(&ann, &targets[0]).await;

    let mut following = app.graph(&ann, "following", 5).await;
    following.sort();
    targets.sort();
    assert_eq!(following, targets);
    assert_eq!(
        app.graph(&targets[3], "followers", 5).await,
        vec![ann.clone()]
    );

    app.unfollow(&ann, &targets[3]).await;
    app.unfollow(&ann, &targets[3]).await;
    assert_eq!(app.graph(&ann, "following", 100).await.len(), 22);
    assert!(app.graph(&targets[3], "followers", 5).await.is_empty());
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn openapi_documents_every_endpoint_and_readyz_covers_both_stores() {
    let app = TimelineApp::spawn(&[]).await;
    let doc: Value = app.get_json("/openapi.json", 200).await;
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    let paths = &doc["paths"];
    for (path, method) in [
        ("/v1/users/{id}/following/{target}", "put"),
        ("/v1/users/{id}/following/{target}", "delete"),
        ("/v1/users/{id}/following", "get"),
        ("/v1/users/{id}/followers", "get"),
        ("/v1/posts", "post"),
        ("/v1/posts/{id}", "get"),
        ("/v1/users/{id}/posts", "get"),
        ("/v1/users/{id}/timeline", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert!(
            operation["responses"]["400"].is_object() || operation["responses"]["404"].is_object(),
            "{method} {path} documents its problems"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let ready: Value = app.get_json("/readyz", 200).await;
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["cassandra", "nats", "outbox-relay"]);
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn a_cursor_with_a_forged_paging_state_is_a_bad_request() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");
    app.post(&ann, "one").await;
    app.post(&ann, "two").await;
    app.follow(&ann, &unique_user("t")).await;
    let bucket = app.store().await.bucketing().now();
    // Well-formed cursors of the right lists, whose paging state is garbage.
    let garbage = URL_SAFE_NO_PAD.encode([0xff_u8; 24]);
    let encode = |cursor: Value| URL_SAFE_NO_PAD.encode(cursor.to_string());
    for path in [
        format!(
            "/v1/users/{ann}/following?cursor={}",
            encode(json!({ "k": "following", "u": ann, "p": garbage }))
        ),
        format!(
            "/v1/users/{ann}/posts?cursor={}",
            encode(json!({ "k": "posts", "u": ann, "b": bucket, "p": garbage }))
        ),
    ] {
        let response = app.client.get(app.url(&path)).send().await.expect("get");
        let body = expect_problem(response, 400).await;
        assert_eq!(body["detail"], "cursor is not one this service issued");
    }
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn the_author_sees_their_post_at_consistency_one_without_their_own_timeline_row() {
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");
    let posted = app.post(&ann, "mine").await;
    // Take the author's own timeline row away: on a cluster, a replica read
    // at ONE may not have it yet. The post must still be in the timeline,
    // merged from the author's own posts (read at QUORUM).
    let store = app.store().await;
    let keyspace = &app.deployment.keyspace;
    let bucket = store.bucketing().bucket_of(posted.created_at);
    store
        .session()
        .query_unpaged(
            format!("DELETE FROM {keyspace}.home_timeline WHERE user_id = ? AND bucket = ?"),
            (&ann, bucket),
        )
        .await
        .expect("delete the author's timeline row");
    let page = app.timeline_page(&ann, "consistency=one").await;
    let ids: Vec<_> = page.items.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![posted.id]);
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn celebrities_past_the_first_chunk_are_merged_too() {
    // Two celebrities per query: the reader follows one that sorts after the
    // ones inserted here, so it is found only by paging past the first chunk.
    let app = TimelineApp::spawn(&["--celebrity-chunk", "2"]).await;
    let store = app.store().await;
    let tag = unique_user("zzzz");
    let celebrities: Vec<String> = (0..5).map(|i| format!("{tag}-{i}")).collect();
    for celebrity in &celebrities {
        let id = timeline::domain::UserId::parse(celebrity).expect("valid");
        store.mark_celebrity(&id).await.expect("mark a celebrity");
    }
    let last = celebrities.last().expect("five");
    let reader = unique_user("reader");
    app.follow(&reader, last).await;
    let post = app.post(last, "from the last celebrity").await;
    // No worker runs: only the read-time merge can bring it.
    let page = app.timeline_page(&reader, "").await;
    let ids: Vec<_> = page.items.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![post.id]);
    app.deployment.delete_stream().await;
}

/// Each API process keeps a copy of the celebrity set; an author marked after
/// the copy was read is merged once the copy is refreshed.
#[tokio::test]
async fn a_celebrity_marked_after_a_read_is_merged_once_the_copy_is_refreshed() {
    let app = TimelineApp::spawn(&["--celebrity-refresh-ms", "300"]).await;
    let reader = unique_user("reader");
    let star = unique_user("star");
    app.follow(&reader, &star).await;
    assert!(
        app.timeline_ids(&reader, 100).await.is_empty(),
        "the copy is read"
    );
    let store = app.store().await;
    store
        .mark_celebrity(&timeline::domain::UserId::parse(&star).expect("valid"))
        .await
        .expect("mark a celebrity");
    // No worker runs: only the read-time merge can bring it.
    let post = app.post(&star, "from a new celebrity").await;
    eventually("the refreshed celebrity set", CONVERGENCE, || async {
        (app.timeline_ids(&reader, 100).await == vec![post.id]).then_some(())
    })
    .await;
    app.deployment.delete_stream().await;
}

/// Settings that cannot work stop both binaries at start-up with a message,
/// before they touch a store.
#[tokio::test]
async fn invalid_configuration_stops_the_binaries_with_a_message() {
    for binary in ["timeline", "timeline-worker"] {
        for (variable, value, mentions) in [
            (
                "CASSANDRA_REQUEST_TIMEOUT_MS",
                "10000",
                "CASSANDRA_REQUEST_TIMEOUT_MS",
            ),
            ("TIMELINE_TTL_DAYS", "7301", "TIMELINE_TTL_DAYS"),
            ("POST_WRITE_CONSISTENCY", "all", "--post-write-consistency"),
        ] {
            let output = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                tokio::process::Command::new(e2e::workspace_binary(binary))
                    .env("CASSANDRA_NODES", e2e::closed_port().await.to_string())
                    .env("TIMELINE_ADDR", "127.0.0.1:0")
                    .env("TIMELINE_WORKER_ADDR", "127.0.0.1:0")
                    .env(variable, value)
                    .output(),
            )
            .await
            .expect("the binary exits by itself")
            .expect("run the binary");
            assert!(
                !output.status.success(),
                "{binary}: {variable}={value} is refused"
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains(mentions),
                "{binary}: {variable}={value}: the message names {mentions}: {stderr}"
            );
        }
    }
}
