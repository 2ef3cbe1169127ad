//! A running timeline service (and its fan-out workers) for the end-to-end tests.
//!
//! Schema changes are slow (about a second each), so every test shares one
//! keyspace, migrated once per test binary, and keeps to itself with unique
//! user ids ([`unique_user`]). Each app gets its own JetStream stream, subject
//! prefix and consumer, so tests never take each other's messages.
//!
//! The API verifies bearer tokens with the development key ([`crate::auth`]);
//! the helpers act as the user they name (`post` as the author, `follow` as
//! the follower, `timeline_page` as the reader). Test apps allow each subject
//! [`TEST_WRITES_PER_SECOND`] writes, so a test that writes a lot as one user
//! is not rate limited unless it passes `--rate-limit-…` flags of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use timeline::api::{PostPage, PostView, UserPage};
use timeline::store::StoreSlot;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::bearer;
use crate::{StopOnDrop, cassandra_nodes, http_client, nats_url};
pub use crate::{eventually, wait_ready};

/// The per-subject write rate (and burst) of a test app unless a test sets its own.
pub const TEST_WRITES_PER_SECOND: u32 = 100_000;

/// How long a test waits for fan-out to converge.
pub const CONVERGENCE: Duration = Duration::from_secs(30);

/// The keyspace every timeline test uses; migrated once per test binary.
pub async fn shared_keyspace() -> &'static str {
    static KEYSPACE: OnceCell<String> = OnceCell::const_new();
    KEYSPACE
        .get_or_init(|| async {
            let keyspace =
                std::env::var("TIMELINE_TEST_KEYSPACE").unwrap_or_else(|_| "timeline_e2e".into());
            let session = scylla::client::session_builder::SessionBuilder::new()
                .known_nodes(cassandra_nodes())
                .build()
                .await
                .expect("connect to Cassandra");
            timeline::migrate::run(&session, &keyspace, 1)
                .await
                .expect("migrate the test keyspace");
            keyspace
        })
        .await
}

/// A user id no other test uses.
pub fn unique_user(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// The stores and stream an app (and its workers) use.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Cassandra contact points (the shared node unless a test runs its own).
    pub cassandra_nodes: Vec<String>,
    pub keyspace: String,
    pub nats_url: String,
    pub stream: String,
    pub prefix: String,
    pub consumer: String,
    /// Flags both the API and the workers take (`--bucket-seconds`, `--celebrity-threshold`, …).
    pub feed: Vec<String>,
}

impl Deployment {
    /// A fresh stream on the shared NATS server, in the shared keyspace.
    pub async fn new(feed: &[&str]) -> Self {
        Self::on_nats(&nats_url(), feed).await
    }

    pub async fn on_nats(nats_url: &str, feed: &[&str]) -> Self {
        Self::on_stores(cassandra_nodes(), nats_url, feed).await
    }

    /// A fresh stream on the NATS server at `nats_url`, on the Cassandra at
    /// `cassandra` (a node of the test's own gets the keyspace from the service).
    pub async fn on_stores(cassandra: Vec<String>, nats_url: &str, feed: &[&str]) -> Self {
        let tag = Uuid::new_v4().simple().to_string()[..10].to_owned();
        Self {
            cassandra_nodes: cassandra,
            keyspace: shared_keyspace().await.to_owned(),
            nats_url: nats_url.to_owned(),
            stream: format!("TL_TEST_{tag}"),
            prefix: format!("tltest{tag}"),
            consumer: format!("fanout-{tag}"),
            feed: feed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The flags the API and the worker share.
    pub fn shared_args(&self) -> Vec<String> {
        let mut args = vec![
            "--cassandra-nodes".to_owned(),
            self.cassandra_nodes.join(","),
            "--cassandra-keyspace".to_owned(),
            self.keyspace.clone(),
            "--nats-url".to_owned(),
            self.nats_url.clone(),
            "--nats-stream".to_owned(),
            self.stream.clone(),
            "--nats-subject-prefix".to_owned(),
            self.prefix.clone(),
            "--nats-consumer".to_owned(),
            self.consumer.clone(),
        ];
        args.extend(self.feed.iter().cloned());
        args
    }

    /// The worker's flags: shared ones, its own port, `extra`.
    pub fn worker_args(&self, addr: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "timeline-worker".to_owned(),
            "--addr".to_owned(),
            addr.to_owned(),
        ];
        args.extend(self.shared_args());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Deletes the test's streams, work and dead letters (best effort).
    pub async fn delete_stream(&self) {
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let jetstream = async_nats::jetstream::new(client);
            let _ = jetstream.delete_stream(&self.stream).await;
            let _ = jetstream
                .delete_stream(format!("{}_DEAD", self.stream))
                .await;
        }
    }
}

/// A timeline API serving on an ephemeral port.
#[derive(Debug)]
pub struct TimelineApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub deployment: Deployment,
    pub store: StoreSlot,
    _stop: StopOnDrop,
}

impl TimelineApp {
    /// Spawns the API on a fresh stream and waits until it is ready.
    pub async fn spawn(feed: &[&str]) -> Self {
        Self::spawn_in(Deployment::new(feed).await, &[]).await
    }

    /// Spawns the API for `deployment` (with `extra` API-only flags) and waits until it is ready.
    pub async fn spawn_in(deployment: Deployment, extra: &[&str]) -> Self {
        service_kit::telemetry::init_for_tests();
        let mut args = vec!["timeline".to_owned(), "--addr".into(), "127.0.0.1:0".into()];
        args.extend(deployment.shared_args());
        args.extend(api_auth_args(extra));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let config = timeline::Config::parse_from(args);
        let app = timeline::Application::build(config)
            .await
            .expect("build the timeline service");
        let addr = app.local_addr().expect("bound address");
        let store = app.store();
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let client = http_client();
        wait_ready(&client, &format!("http://{addr}"), Duration::from_secs(60)).await;
        Self {
            addr,
            client,
            deployment,
            store,
            _stop: StopOnDrop(shutdown),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET path`, whatever it answers.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET reaches the service")
    }

    /// `PUT path` (no body) as `user`, whatever it answers.
    pub async fn put_as(&self, user: &str, path: &str) -> reqwest::Response {
        self.as_user(user, reqwest::Method::PUT, path)
            .send()
            .await
            .expect("PUT reaches the service")
    }

    /// `GET path` as `user`, whatever it answers.
    pub async fn get_as(&self, user: &str, path: &str) -> reqwest::Response {
        self.as_user(user, reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET reaches the service")
    }

    /// A request to `path` carrying a bearer token for `user`.
    pub fn as_user(
        &self,
        user: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header(reqwest::header::AUTHORIZATION, bearer(user, &[]))
    }

    /// `POST /v1/posts` of `body` as `user`, whatever it answers.
    pub fn post_as(&self, user: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.as_user(user, reqwest::Method::POST, "/v1/posts")
            .json(body)
    }

    /// `GET path`, checking the status, and its JSON body.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, status: u16) -> T {
        crate::json_with_status(self.client.get(self.url(path)), status).await
    }

    /// Starts an in-process worker for this app's deployment and waits until it is ready.
    pub async fn spawn_worker(&self, extra: &[&str]) -> WorkerHandle {
        let args = self.deployment.worker_args("127.0.0.1:0", extra);
        let worker = timeline::WorkerApp::build(timeline::WorkerConfig::parse_from(args))
            .await
            .expect("build the worker");
        let addr = worker.local_addr().expect("worker address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run_until_stopped(shutdown.clone()));
        wait_ready(
            &self.client,
            &format!("http://{addr}"),
            Duration::from_secs(60),
        )
        .await;
        WorkerHandle {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// Starts the `timeline-worker` binary for this app's deployment on
    /// `addr`, with `extra` flags: a process of its own (so its `/metrics`
    /// count only its own work), killed when the handle is dropped.
    pub fn spawn_worker_process(&self, addr: SocketAddr, extra: &[&str]) -> tokio::process::Child {
        let args = self.deployment.worker_args(&addr.to_string(), extra);
        let mut command = tokio::process::Command::new(worker_binary());
        command.args(&args[1..]);
        if std::env::var_os("TEST_LOG").is_none() {
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        command
            .kill_on_drop(true)
            .spawn()
            .expect("start timeline-worker")
    }

    /// Starts the `timeline-worker` binary on a port of its own and waits
    /// until it is ready; returns the process and its address.
    pub async fn start_worker_process(
        &self,
        extra: &[&str],
    ) -> (tokio::process::Child, SocketAddr) {
        let addr = crate::closed_port().await;
        let child = self.spawn_worker_process(addr, extra);
        wait_ready(
            &self.client,
            &format!("http://{addr}"),
            Duration::from_secs(60),
        )
        .await;
        (child, addr)
    }

    pub async fn follow(&self, user: &str, target: &str) {
        let response = self
            .as_user(
                user,
                reqwest::Method::PUT,
                &format!("/v1/users/{user}/following/{target}"),
            )
            .send()
            .await
            .expect("follow");
        assert_eq!(response.status(), 204, "follow {user} -> {target}");
    }

    pub async fn unfollow(&self, user: &str, target: &str) {
        let response = self
            .as_user(
                user,
                reqwest::Method::DELETE,
                &format!("/v1/users/{user}/following/{target}"),
            )
            .send()
            .await
            .expect("unfollow");
        assert_eq!(response.status(), 204, "unfollow {user} -> {target}");
    }

    /// Posts and returns the 202's body.
    pub async fn post(&self, author: &str, content: &str) -> PostView {
        let response = self
            .post_as(author, &json!({ "author_id": author, "content": content }))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 202, "post by {author}");
        response.json().await.expect("post body")
    }

    /// One timeline page.
    pub async fn timeline_page(&self, user: &str, query: &str) -> PostPage {
        let response = self
            .get_as(user, &format!("/v1/users/{user}/timeline?{query}"))
            .await;
        assert_eq!(response.status(), 200, "timeline of {user}");
        response.json().await.expect("timeline body")
    }

    /// Every post id of `user`'s timeline, walking all pages of `limit`.
    pub async fn timeline_ids(&self, user: &str, limit: u32) -> Vec<Uuid> {
        self.walk(user, &format!("/v1/users/{user}/timeline"), limit)
            .await
    }

    /// Every post id of `author`'s own posts, walking all pages of `limit`.
    pub async fn user_post_ids(&self, author: &str, limit: u32) -> Vec<Uuid> {
        self.walk(author, &format!("/v1/users/{author}/posts"), limit)
            .await
    }

    /// Walks the pages of `path` as `user`.
    async fn walk(&self, user: &str, path: &str, limit: u32) -> Vec<Uuid> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let response = self
                .get_as(user, &page_path(path, limit, cursor.as_deref()))
                .await;
            assert_eq!(response.status(), 200, "{path}");
            let page: PostPage = response.json().await.expect("page body");
            assert!(page.items.len() <= limit as usize, "page over its limit");
            ids.extend(page.items.iter().map(|p| p.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return ids,
            }
        }
        panic!("{path} did not end within 10000 pages");
    }

    /// Every user of a graph list.
    pub async fn graph(&self, user: &str, which: &str, limit: u32) -> Vec<String> {
        let mut users = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let path = page_path(
                &format!("/v1/users/{user}/{which}"),
                limit,
                cursor.as_deref(),
            );
            let response = self.client.get(self.url(&path)).send().await.expect("page");
            assert_eq!(response.status(), 200);
            let page: UserPage = response.json().await.expect("page body");
            users.extend(page.items.into_iter().map(|e| e.user_id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return users,
            }
        }
        panic!("graph list did not end");
    }

    /// The store, set up (the app is ready, so it is).
    pub async fn store(&self) -> &timeline::store::TimelineStore {
        self.store.wait().await
    }
}

/// The API's flags beyond the deployment's: the development verifying key
/// and, unless `extra` sets a rate limit of its own, a write rate no test
/// reaches by accident.
pub fn api_auth_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = crate::auth::service_args().into();
    if !extra.iter().any(|flag| flag.starts_with("--rate-limit-")) {
        args.extend([
            "--rate-limit-writes-per-second".to_owned(),
            TEST_WRITES_PER_SECOND.to_string(),
            "--rate-limit-burst".to_owned(),
            TEST_WRITES_PER_SECOND.to_string(),
        ]);
    }
    args
}

/// `path?limit=..&cursor=..` (cursors are base64url: nothing to escape).
fn page_path(path: &str, limit: u32, cursor: Option<&str>) -> String {
    match cursor {
        Some(cursor) => format!("{path}?limit={limit}&cursor={cursor}"),
        None => format!("{path}?limit={limit}"),
    }
}

/// An in-process worker; stopped (gracefully) when dropped or by [`WorkerHandle::stop`].
#[derive(Debug)]
pub struct WorkerHandle {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl WorkerHandle {
    /// Stops the worker and waits until it has finished the messages in hand.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("worker task").expect("worker run");
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `timeline-worker` binary, built next to the test executable.
pub fn worker_binary() -> PathBuf {
    crate::workspace_binary("timeline-worker")
}

/// Waits until the deployment's consumer has nothing pending and nothing unacked:
/// every message published so far has been processed.
pub async fn wait_drained(deployment: &Deployment, timeout: Duration) {
    let client = async_nats::connect(&deployment.nats_url)
        .await
        .expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    eventually("the fan-out consumer to drain", timeout, || async {
        let stream = jetstream.get_stream(&deployment.stream).await.ok()?;
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&deployment.consumer).await.ok()?;
        let info = consumer.get_info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
}

/// Sorts post ids newest first, the way Cassandra orders timeuuids.
pub fn newest_first(ids: &mut [Uuid]) {
    ids.sort_by_key(|id| std::cmp::Reverse(timeline::domain::PostId::from_uuid(*id)));
}
