//! `capctl dlq`, the real binary, against a real timeline deployment: a post
//! whose fan-out ended in the dead-letter stream is listed without being
//! consumed, then replayed into its follower's timeline, once.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use e2e::timeline_app::{
    CONVERGENCE, Deployment, TimelineApp, eventually, unique_user, wait_drained,
};
use e2e::{closed_port, workspace_binary};
use serde_json::Value;
use timeline::domain::{PostId, UserId};
use timeline::messages::{Envelope, FanoutMessage, PostPayload, Subjects};
use uuid::Uuid;

/// Runs `capctl <args>` against the deployment's stream and returns its output.
async fn capctl(deployment: &Deployment, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(workspace_binary("capctl"))
        .args(args)
        .args(["--nats-url", &deployment.nats_url])
        .args(["--nats-stream", &deployment.stream])
        .args(["--nats-subject-prefix", &deployment.prefix])
        .output()
        .await
        .expect("run capctl")
}

/// Runs `capctl --json <args>`, expects success and returns its one JSON report.
async fn capctl_json(deployment: &Deployment, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = capctl(deployment, &all).await;
    assert!(
        output.status.success(),
        "capctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

/// Publishes `message` to its dead-letter subject the way the worker does.
async fn dead_letter(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    message: FanoutMessage,
    sequence: u64,
) {
    let kind = message.kind();
    let mut headers = HeaderMap::new();
    headers.insert(
        "Timeline-Dead-Reason",
        "the store was unavailable five times",
    );
    headers.insert("Timeline-Original-Subject", subjects.work(kind).as_str());
    let publish = PublishMessage::build()
        .payload(Envelope::new(message).to_bytes())
        .headers(headers)
        .message_id(format!("dead.{sequence}"));
    jetstream
        .send_publish(subjects.dead(kind), publish)
        .await
        .expect("publish a dead letter")
        .await
        .expect("the dead-letter stream's ack");
}

async fn dead_letters_stored(jetstream: &jetstream::Context, deployment: &Deployment) -> u64 {
    let mut dead = jetstream
        .get_stream(format!("{}_DEAD", deployment.stream))
        .await
        .expect("the dead-letter stream");
    dead.info().await.expect("stream info").state.messages
}

#[tokio::test]
async fn a_dead_lettered_post_is_listed_then_replayed_into_its_followers_timeline_once() {
    let app = TimelineApp::spawn(&[]).await;
    let deployment = &app.deployment;
    let subjects = Subjects::new(deployment.prefix.clone());
    let jetstream = jetstream::new(
        async_nats::connect(&deployment.nats_url)
            .await
            .expect("connect to NATS"),
    );
    // The API creates both streams in the background.
    let work = eventually("the work and dead-letter streams", CONVERGENCE, || async {
        let work = jetstream.get_stream(&deployment.stream).await.ok()?;
        jetstream
            .get_stream(format!("{}_DEAD", deployment.stream))
            .await
            .ok()?;
        Some(work)
    })
    .await;

    // The follower follows the author, the author posts; no worker runs yet,
    // and the fan-out work is then lost: only a replay brings the post over.
    let (author, follower) = (unique_user("dlq-author"), unique_user("dlq-follower"));
    app.follow(&follower, &author).await;
    let post = app.post(&author, "lost, then replayed").await;
    let purged = work.purge().await.expect("purge the work stream");
    assert_eq!(purged.purged, 2, "the follow's and the post's work");
    let worker = app.spawn_worker(&[]).await;

    let author_id = UserId::parse(&author).expect("valid user id");
    let payload = PostPayload {
        id: PostId::from_uuid(post.id).expect("a timeuuid"),
        author_id: author_id.clone(),
        content: post.content.clone(),
        created_at: post.created_at,
    };
    dead_letter(
        &jetstream,
        &subjects,
        FanoutMessage::Post { post: payload },
        1,
    )
    .await;
    // A follow that was undone: replaying it backfills nothing.
    let stranger = UserId::parse(&unique_user("dlq-stranger")).expect("valid user id");
    dead_letter(
        &jetstream,
        &subjects,
        FanoutMessage::Follow {
            follower: stranger,
            followee: author_id,
            event_id: Uuid::now_v7(),
        },
        2,
    )
    .await;

    // Listed, oldest first, and left in place.
    let listed = capctl_json(deployment, &["dlq", "list"]).await;
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["in_stream"], 2, "{listed}");
    let letters = listed["letters"].as_array().expect("letters");
    let (first, second) = (&letters[0], &letters[1]);
    assert!(
        first["sequence"].as_u64() < second["sequence"].as_u64(),
        "{listed}"
    );
    assert_eq!(first["kind"], "post");
    assert_eq!(first["original_subject"], subjects.work("post"));
    assert_eq!(first["reason"], "the store was unavailable five times");
    assert_eq!(first["message_id"], format!("post.{}", post.id));
    assert_eq!(first["post_id"], post.id.to_string());
    assert!(first["dead_at"].is_string(), "{first}");
    assert_eq!(second["kind"], "follow");
    assert_eq!(second["post_id"], Value::Null);

    let follows = capctl_json(deployment, &["dlq", "list", "--kind", "follow"]).await;
    assert_eq!(follows["total"], 1, "{follows}");
    assert_eq!(follows["letters"][0]["kind"], "follow");
    let limited = capctl_json(deployment, &["dlq", "list", "--limit", "1"]).await;
    assert_eq!(limited["letters"][0]["kind"], "post", "{limited}");
    assert_eq!(limited["total"], 1, "{limited}");

    let text = capctl(deployment, &["dlq", "list"]).await;
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("post.{}", post.id)), "{text}");
    assert!(
        text.contains(&format!(
            "total: 2 dead letters listed (2 in {}_DEAD)",
            deployment.stream
        )),
        "{text}"
    );
    assert_eq!(dead_letters_stored(&jetstream, deployment).await, 2);
    wait_drained(deployment, CONVERGENCE).await;
    assert!(
        !app.timeline_ids(&follower, 50).await.contains(&post.id),
        "the post's fan-out was lost"
    );

    // Replaying the post's dead letter fans the post out.
    let replayed = capctl_json(deployment, &["dlq", "replay", "--kind", "post"]).await;
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    assert_eq!(replayed["letters"][0]["subject"], subjects.work("post"));
    assert_eq!(replayed["letters"][0]["sequence"], first["sequence"]);
    eventually("the replayed post in the timeline", CONVERGENCE, || async {
        app.timeline_ids(&follower, 50)
            .await
            .contains(&post.id)
            .then_some(())
    })
    .await;
    assert_eq!(dead_letters_stored(&jetstream, deployment).await, 1);

    // The rest, then nothing: a second replay does no work twice.
    let rest = capctl_json(deployment, &["dlq", "replay", "--limit", "5"]).await;
    assert_eq!(rest["replayed"], 1, "{rest}");
    assert_eq!(rest["letters"][0]["kind"], "follow");
    wait_drained(deployment, CONVERGENCE).await;
    eventually("an empty dead-letter stream", CONVERGENCE, || async {
        (dead_letters_stored(&jetstream, deployment).await == 0).then_some(())
    })
    .await;
    let again = capctl_json(deployment, &["dlq", "replay"]).await;
    assert_eq!(again["replayed"], 0, "{again}");
    assert_eq!(capctl_json(deployment, &["dlq", "list"]).await["total"], 0);
    assert_eq!(app.timeline_ids(&follower, 50).await, vec![post.id]);

    worker.stop().await;
    deployment.delete_stream().await;
}

#[tokio::test]
async fn an_unreachable_nats_is_an_error() {
    let nats_url = format!("nats://{}", closed_port().await);
    for command in ["list", "replay"] {
        let output = tokio::process::Command::new(workspace_binary("capctl"))
            .args(["dlq", command, "--nats-url", &nats_url])
            .output()
            .await
            .expect("run capctl");
        assert!(!output.status.success(), "dlq {command} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("NATS is not reachable at {nats_url}")),
            "dlq {command}: {stderr}"
        );
    }
}
