//! Access control of the timeline API against the real Cassandra and NATS:
//! the acting user is the bearer token's subject. Each rule's allowed call
//! succeeds; the forbidden one gets its documented status and changes
//! nothing (no post, no follow edge, no fan-out message).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::auth::{bearer, issuer};
use e2e::expect_problem;
use e2e::timeline_app::{CONVERGENCE, TimelineApp, eventually, unique_user};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use service_kit::auth::Claims;
use timeline::api::{PostPage, PostView};

/// How many messages the app's work stream holds (`None` until NATS has it).
async fn stream_messages(app: &TimelineApp) -> Option<u64> {
    let client = async_nats::connect(&app.deployment.nats_url).await.ok()?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(&app.deployment.stream).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// Waits until the stream holds exactly `count` messages, and returns it.
async fn stream_settles_at(app: &TimelineApp, count: u64) -> u64 {
    eventually("the stream's messages", CONVERGENCE, || async {
        stream_messages(app).await.filter(|held| *held == count)
    })
    .await
}

fn post_body(author: &str, content: &str) -> Value {
    json!({ "author_id": author, "content": content })
}

#[tokio::test]
async fn a_post_is_made_only_by_its_author() {
    let app = TimelineApp::spawn(&[]).await;
    let (ann, bob) = (unique_user("ann"), unique_user("bob"));
    let posted = app.post(&ann, "mine").await;
    stream_settles_at(&app, 1).await;

    // Ann posting as bob, with a key bob may use later.
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let forged = app
        .post_as(&ann, &post_body(&bob, "not bob's words"))
        .header("Idempotency-Key", &key)
        .send()
        .await
        .expect("post");
    let problem = expect_problem(forged, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(&bob) && detail.contains(&ann)),
        "{problem}"
    );

    // Nothing was written: no post, no timeline row, no message, no key claimed.
    assert!(app.user_post_ids(&bob, 100).await.is_empty());
    assert!(app.timeline_ids(&bob, 100).await.is_empty());
    assert_eq!(app.user_post_ids(&ann, 100).await, vec![posted.id]);
    assert_eq!(stream_messages(&app).await, Some(1), "nothing was enqueued");
    let own = app
        .post_as(&bob, &post_body(&bob, "bob's own words"))
        .header("Idempotency-Key", &key)
        .send()
        .await
        .expect("post");
    assert_eq!(
        own.status(),
        202,
        "the key was not taken by the forbidden post"
    );
    assert!(!own.headers().contains_key("idempotent-replayed"));
    let own: PostView = own.json().await.expect("post");
    assert_eq!(own.content, "bob's own words");
    assert_eq!(app.user_post_ids(&bob, 100).await, vec![own.id]);
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn only_the_follower_follows_and_unfollows() {
    let app = TimelineApp::spawn(&[]).await;
    let (ann, carol, mallory) = (
        unique_user("ann"),
        unique_user("carol"),
        unique_user("mallory"),
    );
    app.follow(&ann, &carol).await;
    let before = stream_settles_at(&app, 1).await;

    // Mallory makes ann follow her, and makes ann unfollow carol.
    let follow = app
        .put_as(&mallory, &format!("/v1/users/{ann}/following/{mallory}"))
        .await;
    expect_problem(follow, 403).await;
    let unfollow = app
        .as_user(
            &mallory,
            Method::DELETE,
            &format!("/v1/users/{ann}/following/{carol}"),
        )
        .send()
        .await
        .expect("unfollow");
    expect_problem(unfollow, 403).await;

    // The graph is as ann left it, both ways; nothing was enqueued.
    assert_eq!(app.graph(&ann, "following", 100).await, vec![carol.clone()]);
    assert_eq!(app.graph(&carol, "followers", 100).await, vec![ann.clone()]);
    assert!(app.graph(&mallory, "followers", 100).await.is_empty());
    assert_eq!(stream_messages(&app).await, Some(before));

    // Ann herself may.
    app.unfollow(&ann, &carol).await;
    assert!(app.graph(&ann, "following", 100).await.is_empty());
    assert!(app.graph(&carol, "followers", 100).await.is_empty());
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn a_home_timeline_is_read_only_by_its_owner() {
    let app = TimelineApp::spawn(&[]).await;
    let (ann, bob) = (unique_user("ann"), unique_user("bob"));
    let posted = app.post(&ann, "for ann's eyes").await;
    let path = format!("/v1/users/{ann}/timeline");

    let page = app.timeline_page(&ann, "").await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, posted.id);

    let other = app.get_as(&bob, &path).await;
    let problem = expect_problem(other, 403).await;
    assert!(problem.get("items").is_none(), "{problem}");
    let anonymous = app.get(&path).await;
    assert!(anonymous.headers().contains_key(WWW_AUTHENTICATE));
    expect_problem(anonymous, 401).await;
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn posts_and_the_graph_are_public_reads() {
    let app = TimelineApp::spawn(&[]).await;
    let (ann, bob) = (unique_user("ann"), unique_user("bob"));
    let posted = app.post(&ann, "public").await;
    app.follow(&bob, &ann).await;

    // No token at all.
    let post: PostView = app.get_json(&format!("/v1/posts/{}", posted.id), 200).await;
    assert_eq!(post.id, posted.id);
    let posts: PostPage = app.get_json(&format!("/v1/users/{ann}/posts"), 200).await;
    assert_eq!(posts.items.len(), 1);
    for (user, which, expected) in [(&ann, "followers", &bob), (&bob, "following", &ann)] {
        let page: Value = app
            .get_json(&format!("/v1/users/{user}/{which}"), 200)
            .await;
        assert_eq!(page["items"][0]["user_id"], expected.as_str());
    }
    // A token, even a bad one, does not get in the way of a public read.
    let with_garbage = app
        .client
        .get(app.url(&format!("/v1/users/{ann}/posts")))
        .header(AUTHORIZATION, "Bearer not-a-jwt")
        .send()
        .await
        .expect("get");
    assert_eq!(with_garbage.status(), 200);
    // And the service's own endpoints stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    app.deployment.delete_stream().await;
}

/// A token for `subject` signed with the development key, with `edit`
/// applied to its otherwise valid claims.
fn token_with(subject: &str, edit: impl FnOnce(&mut Claims)) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    let mut claims = Claims {
        sub: subject.to_owned(),
        exp: now + 3600,
        iat: now,
        iss: service_kit::auth::TokenIssuer::DEFAULT_ISSUER.to_owned(),
        aud: service_kit::auth::TokenIssuer::DEFAULT_AUDIENCE.to_owned(),
        scope: String::new(),
    };
    edit(&mut claims);
    issuer().mint_claims(&claims)
}

#[tokio::test]
async fn every_protected_operation_wants_a_valid_token_and_writes_nothing_without_one() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = TimelineApp::spawn(&[]).await;
    let (ann, bob) = (unique_user("ann"), unique_user("bob"));
    app.post(&ann, "the one post").await;
    let before = stream_settles_at(&app, 1).await;

    let valid = bearer(&ann, &[]).replace("Bearer ", "");
    let unsigned = {
        let mut parts = valid.split('.');
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let _ = parts.next();
        format!("{header}.{}.", parts.next().expect("claims"))
    };
    let tampered = {
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let claims = token_with(&bob, |_| {});
        parts[1] = claims.split('.').nth(1).expect("claims").to_owned();
        parts.join(".")
    };
    let authorizations = [
        None,
        Some("Basic YW5uOmFubg==".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Bearer not-a-jwt".to_owned()),
        Some(format!("Bearer {unsigned}")),
        Some(format!("Bearer {tampered}")),
        Some(format!(
            "Bearer {}",
            token_with(&ann, |claims| claims.exp -= 7200)
        )),
        Some(format!(
            "Bearer {}",
            token_with(&ann, |claims| claims.aud = "another-service".into())
        )),
        Some(format!(
            "Bearer {}",
            token_with(&ann, |claims| claims.iss = "someone-else".into())
        )),
    ];
    let operations = [
        (Method::POST, "/v1/posts".to_owned()),
        (Method::PUT, format!("/v1/users/{ann}/following/{bob}")),
        (Method::DELETE, format!("/v1/users/{ann}/following/{bob}")),
        (Method::GET, format!("/v1/users/{ann}/timeline")),
    ];
    for (method, path) in &operations {
        for authorization in &authorizations {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .json(&post_body(&ann, "without a valid token"));
            if let Some(authorization) = authorization {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = request.send().await.expect("reaches the service");
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|value| value.to_str().expect("ascii").to_owned())
                .unwrap_or_default();
            let what = format!("{method} {path} with {authorization:?}");
            assert!(
                challenge.starts_with("Bearer realm=\"timeline\""),
                "{what}: {challenge}"
            );
            // RFC 6750: an error code only when a credential was sent.
            assert_eq!(
                challenge.contains("error=\"invalid_token\""),
                authorization.is_some(),
                "{what}: {challenge}"
            );
            expect_problem(response, 401).await;
        }
    }
    assert_eq!(app.user_post_ids(&ann, 100).await.len(), 1);
    assert!(app.graph(&ann, "following", 100).await.is_empty());
    assert_eq!(stream_messages(&app).await, Some(before));
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn writes_past_the_subjects_rate_are_429_then_recover() {
    let app = TimelineApp::spawn_in(
        e2e::timeline_app::Deployment::new(&[]).await,
        &[
            "--rate-limit-writes-per-second",
            "1",
            "--rate-limit-burst",
            "2",
        ],
    )
    .await;
    let (ann, bob) = (unique_user("ann"), unique_user("bob"));
    // Ann writes until she is refused: at least the burst is taken (more
    // only if the host is slow enough for her budget to refill meanwhile).
    let mut posted = 0;
    let refused = loop {
        let response = app
            .post_as(&ann, &post_body(&ann, &format!("post {posted}")))
            .send()
            .await
            .expect("post");
        match response.status().as_u16() {
            202 => posted += 1,
            429 => break response,
            status => panic!("a post answered {status}"),
        }
        assert!(posted <= 10, "the rate limit never applied");
    };
    assert!(posted >= 2, "the burst of 2 is taken, not {posted}");
    let retry_after = |response: &reqwest::Response| -> u64 {
        response.headers()[RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds")
    };
    let wait = retry_after(&refused);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    expect_problem(refused, 429).await;
    // Follows spend the same budget.
    let mut followed = Vec::new();
    let refused = loop {
        let target = unique_user("target");
        let response = app
            .put_as(&ann, &format!("/v1/users/{ann}/following/{target}"))
            .await;
        match response.status().as_u16() {
            204 => followed.push(target),
            429 => break response,
            status => panic!("a follow answered {status}"),
        }
        assert!(followed.len() <= 10, "the rate limit never applied");
    };
    let wait = retry_after(&refused);
    expect_problem(refused, 429).await;

    // The refused writes wrote nothing; reads and other subjects go on.
    assert_eq!(app.user_post_ids(&ann, 100).await.len(), posted);
    let mut following = app.graph(&ann, "following", 100).await;
    following.sort();
    followed.sort();
    assert_eq!(following, followed);
    assert_eq!(app.timeline_page(&ann, "").await.items.len(), posted);
    app.post(&bob, "bob has his own budget").await;

    // After Retry-After, ann may write again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    app.post(&ann, "after waiting").await;
    assert_eq!(app.user_post_ids(&ann, 100).await.len(), posted + 1);
    app.deployment.delete_stream().await;
}

#[tokio::test]
async fn the_document_says_which_operations_want_a_token_and_what_they_answer() {
    let app = TimelineApp::spawn(&[]).await;
    let doc: Value = app.get_json("/openapi.json", 200).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = &doc["paths"];
    for (path, method, write) in [
        ("/v1/posts", "post", true),
        ("/v1/users/{id}/following/{target}", "put", true),
        ("/v1/users/{id}/following/{target}", "delete", true),
        ("/v1/users/{id}/timeline", "get", false),
    ] {
        let operation = &paths[path][method];
        assert_eq!(
            operation["security"],
            json!([{ "bearer": [] }]),
            "{method} {path}"
        );
        let responses = &operation["responses"];
        assert!(
            responses["401"]["headers"]["WWW-Authenticate"].is_object(),
            "{method} {path}"
        );
        assert_eq!(
            responses["403"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem",
            "{method} {path}"
        );
        assert_eq!(
            responses["429"]["headers"]["Retry-After"].is_object(),
            write,
            "{method} {path}"
        );
    }
    for (path, method) in [
        ("/v1/posts/{id}", "get"),
        ("/v1/users/{id}/posts", "get"),
        ("/v1/users/{id}/following", "get"),
        ("/v1/users/{id}/followers", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path}");
        assert!(operation.get("security").is_none(), "{method} {path}");
        for status in ["401", "403", "429"] {
            assert!(
                operation["responses"].get(status).is_none(),
                "{method} {path} does not answer {status}"
            );
        }
    }
}

/// No key, no service: the API refuses to start rather than run open.
#[tokio::test]
async fn the_api_does_not_start_without_a_key_to_verify_tokens() {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(e2e::workspace_binary("timeline"))
            .env_remove("AUTH_VERIFYING_KEY_FILE")
            .env_remove("AUTH_JWKS_FILE")
            .env("CASSANDRA_NODES", e2e::closed_port().await.to_string())
            .env("NATS_URL", format!("nats://{}", e2e::closed_port().await))
            .env("TIMELINE_ADDR", "127.0.0.1:0")
            .output(),
    )
    .await
    .expect("the binary exits by itself")
    .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AUTH_VERIFYING_KEY_FILE"), "{stderr}");
}
