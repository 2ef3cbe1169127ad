//! What the timeline service promises about consistency, end to end against
//! the real local Cassandra (a single node): the `consistency` of a timeline
//! read and the `POST_WRITE_CONSISTENCY` of a post reach the cluster, an
//! unknown post is a `404`, and the timeline table compacts by time window.

use std::collections::HashMap;
use std::sync::Arc;

use e2e::expect_problem;
use e2e::timeline_app::{Deployment, TimelineApp, unique_user};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use timeline::api::{PostPage, PostView};
use uuid::Uuid;

async fn admin_session() -> Session {
    SessionBuilder::new()
        .known_nodes(e2e::cassandra_nodes())
        .build()
        .await
        .expect("connect to Cassandra")
}

/// Sets `keyspace` to `replicas` replicas per row in the local node's data
/// centre, and checks the cluster took it (a bare `replication_factor` on an
/// existing keyspace is silently ignored).
async fn set_replication(session: &Session, keyspace: &str, replicas: u32) {
    let (data_center,) = session
        .query_unpaged("SELECT data_center FROM system.local", ())
        .await
        .expect("read the local data centre")
        .into_rows_result()
        .expect("rows")
        .single_row::<(String,)>()
        .expect("one local row");
    session
        .query_unpaged(
            format!(
                "ALTER KEYSPACE {keyspace} WITH replication = \
                 {{'class': 'NetworkTopologyStrategy', '{data_center}': {replicas}}}"
            ),
            (),
        )
        .await
        .expect("alter the keyspace's replication");
    session
        .await_schema_agreement()
        .await
        .expect("schema agreement");
    let (replication,) = session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .expect("read the keyspace")
        .into_rows_result()
        .expect("rows")
        .single_row::<(HashMap<String, String>,)>()
        .expect("the keyspace exists");
    assert_eq!(replication[&data_center], replicas.to_string());
}

/// A timeline read at `consistency` (`None`: the default).
async fn read_timeline(
    app: &TimelineApp,
    user: &str,
    consistency: Option<&str>,
) -> reqwest::Response {
    let query = consistency.map_or_else(String::new, |level| format!("?consistency={level}"));
    app.get_as(user, &format!("/v1/users/{user}/timeline{query}"))
        .await
}

/// A `200` page of exactly `expected`, read at `level`.
async fn expect_page(response: reqwest::Response, level: &str, expected: Uuid) {
    assert_eq!(response.status(), 200, "read at {level}");
    assert_eq!(response.headers()["read-consistency"], level);
    let page: PostPage = response.json().await.expect("page");
    let ids: Vec<Uuid> = page.items.iter().map(|post| post.id).collect();
    assert_eq!(ids, [expected], "read at {level}");
}

/// A `503` problem the client is told to retry.
async fn expect_unavailable(response: reqwest::Response, what: &str) {
    let retry_after = response.headers().get("retry-after").cloned();
    let body = expect_problem(response, 503).await;
    assert_eq!(body["type"], "/problems/unavailable", "{what}: {body}");
    let retry_after: Option<u64> = retry_after
        .as_ref()
        .and_then(|v| v.to_str().ok()?.parse().ok());
    assert!(
        retry_after.is_some_and(|secs| (1..=3).contains(&secs)),
        "{what}: Retry-After {retry_after:?}"
    );
    // No driver text reaches the client.
    let text = body.to_string().to_lowercase();
    assert!(
        !text.contains("quorum") && !text.contains("replica"),
        "{what}: {body}"
    );
}

/// With two replicas per row on a one-node cluster, ONE finds its replica
/// while QUORUM and ALL need two: a read answers `200` only at the level the
/// request names, so a service that ignored the parameter (or read every
/// level at ONE) fails here.
async fn reads_at_each_level(deployment: Deployment, admin: &Session) {
    // The keyspace starts with one replica per row: the service migrates it
    // (its migrator reads and writes its version table at QUORUM) and takes
    // a post (written at QUORUM), neither of which two replicas on one node allow.
    let app = TimelineApp::spawn_in(deployment, &["--cassandra-replication-factor", "1"]).await;
    let keyspace = app.deployment.keyspace.clone();
    let ann = unique_user("ann");
    let posted = app.post(&ann, "replicated twice").await;
    for level in ["one", "quorum", "all"] {
        expect_page(
            read_timeline(&app, &ann, Some(level)).await,
            level,
            posted.id,
        )
        .await;
    }

    set_replication(admin, &keyspace, 2).await;

    expect_page(read_timeline(&app, &ann, None).await, "one", posted.id).await;
    expect_page(
        read_timeline(&app, &ann, Some("one")).await,
        "one",
        posted.id,
    )
    .await;
    for level in ["quorum", "all"] {
        let response = read_timeline(&app, &ann, Some(level)).await;
        expect_unavailable(response, &format!("read at {level}")).await;
    }
    // Posts are written at QUORUM by default: one is refused the same way, not acknowledged.
    let refused = app
        .post_as(
            &ann,
            &serde_json::json!({ "author_id": ann, "content": "not durable" }),
        )
        .send()
        .await
        .expect("post");
    expect_unavailable(refused, "a post").await;
    expect_page(
        read_timeline(&app, &ann, Some("one")).await,
        "one",
        posted.id,
    )
    .await;
}

/// `POST /v1/posts` by `author`, with an `Idempotency-Key` if one is given,
/// whatever it answers.
async fn send_post(
    app: &TimelineApp,
    author: &str,
    content: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app.post_as(
        author,
        &serde_json::json!({ "author_id": author, "content": content }),
    );
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("post")
}

/// With two replicas per row on a one-node cluster, QUORUM cannot be met and
/// ONE can: at the default `POST_WRITE_CONSISTENCY` (`quorum`) a post is
/// refused and leaves nothing behind; at `one` it is taken and read back.
/// (A single node cannot show why `one` is an unlogged batch: alone in its
/// cluster, a node writes a logged batch's batchlog locally.)
async fn posts_at_each_write_level(deployment: Deployment, admin: &Session) {
    // Both services migrate and prepare while the keyspace has one replica
    // per row (the migrator works at QUORUM).
    let one_replica = ["--cassandra-replication-factor", "1"];
    let at_quorum = TimelineApp::spawn_in(deployment.clone(), &one_replica).await;
    let at_one = TimelineApp::spawn_in(
        deployment,
        &[&one_replica[..], &["--post-write-consistency", "one"]].concat(),
    )
    .await;
    set_replication(admin, &at_one.deployment.keyspace, 2).await;

    let ann = unique_user("ann");
    let refused = send_post(&at_quorum, &ann, "needs a quorum", None).await;
    expect_unavailable(refused, "a post at QUORUM").await;
    // The author's posts are read at ONE: not a row of the refused batch landed.
    assert_eq!(at_quorum.user_post_ids(&ann, 20).await, Vec::<Uuid>::new());

    let taken = send_post(&at_one, &ann, "one replica is enough", None).await;
    assert_eq!(taken.status(), 202, "a post at ONE");
    let posted: PostView = taken.json().await.expect("the 202's body");
    for app in [&at_one, &at_quorum] {
        let found: PostView = app.get_json(&format!("/v1/posts/{}", posted.id), 200).await;
        assert_eq!(
            (found.id, found.content.as_str()),
            (posted.id, "one replica is enough")
        );
        assert_eq!(app.user_post_ids(&ann, 20).await, [posted.id]);
        expect_page(
            read_timeline(app, &ann, Some("one")).await,
            "one",
            posted.id,
        )
        .await;
    }

    // The claim of an Idempotency-Key is a lightweight transaction: Paxos
    // needs a majority of the replicas whatever the write level.
    let keyed = send_post(&at_one, &ann, "with a key", Some("key-1")).await;
    expect_unavailable(keyed, "a post at ONE with an Idempotency-Key").await;
    assert_eq!(at_one.user_post_ids(&ann, 20).await, [posted.id]);
}

/// Runs `test` with a deployment whose keyspace is its own (its replication
/// changes under the service) and a session of the test's, then drops the
/// keyspace and the streams, whatever the outcome.
async fn in_own_keyspace<F, Fut>(test: F)
where
    F: FnOnce(Deployment, Arc<Session>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut deployment = Deployment::new(&[]).await;
    deployment.keyspace = format!("tl_consistency_{}", Uuid::new_v4().simple());
    let keyspace = deployment.keyspace.clone();
    let admin = Arc::new(admin_session().await);
    let outcome = tokio::spawn(test(deployment.clone(), admin.clone())).await;
    // Best effort, and whatever the outcome: the keyspace and the streams are
    // this test's alone.
    deployment.delete_stream().await;
    let _ = admin
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test]
async fn the_read_consistency_is_the_one_the_cluster_enforces() {
    in_own_keyspace(
        |deployment, admin| async move { reads_at_each_level(deployment, &admin).await },
    )
    .await;
}

#[tokio::test]
async fn the_post_write_consistency_is_the_one_the_cluster_enforces() {
    in_own_keyspace(|deployment, admin| async move {
        posts_at_each_write_level(deployment, &admin).await
    })
    .await;
}

#[tokio::test]
async fn a_post_id_that_names_no_post_is_not_found() {
    let app = TimelineApp::spawn(&[]).await;
    let ann = unique_user("ann");
    let posted = app.post(&ann, "the only one").await;
    let get = |id: String| {
        let url = app.url(&format!("/v1/posts/{id}"));
        let client = app.client.clone();
        async move { client.get(url).send().await.expect("get post") }
    };

    let found: PostView = get(posted.id.to_string())
        .await
        .json()
        .await
        .expect("the post");
    assert_eq!(found.id, posted.id);

    // Well-formed timeuuids: now, long ago, and the post's own time on another node.
    let mut neighbour = *posted.id.as_bytes();
    neighbour[15] ^= 0xff;
    let old = uuid::Timestamp::from_unix(uuid::NoContext, 1_000_000_000, 0);
    for unknown in [
        Uuid::now_v1(&[9, 8, 7, 6, 5, 4]),
        Uuid::new_v1(old, &[1, 2, 3, 4, 5, 6]),
        Uuid::from_bytes(neighbour),
    ] {
        let body = expect_problem(get(unknown.to_string()).await, 404).await;
        assert_eq!(body["type"], "/problems/not-found");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains(&unknown.to_string())),
            "{body}"
        );
    }
    // The upper-case spelling of the post's id is the same id.
    let upper = get(posted.id.to_string().to_uppercase()).await;
    assert_eq!(upper.status(), 200);
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn home_timelines_compact_by_day_windows() {
    let app = TimelineApp::spawn(&[]).await;
    let store = app.store().await;
    let (compaction,) = store
        .session()
        .query_unpaged(
            "SELECT compaction FROM system_schema.tables \
             WHERE keyspace_name = ? AND table_name = 'home_timeline'",
            (&app.deployment.keyspace,),
        )
        .await
        .expect("read the table's options")
        .into_rows_result()
        .expect("rows")
        .single_row::<(HashMap<String, String>,)>()
        .expect("the table exists");
    assert!(
        compaction["class"].ends_with("TimeWindowCompactionStrategy"),
        "{compaction:?}"
    );
    assert_eq!(compaction["compaction_window_unit"], "DAYS");
    assert_eq!(compaction["compaction_window_size"], "1");
    app.deployment.delete_stream().await;
}
