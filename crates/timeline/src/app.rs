//! Building and running the timeline API.
//!
//! The service is AP: it starts, and serves `/healthz`, even when Cassandra or
//! NATS is down. The store (connect, migrate, prepare) is set up by a
//! background task that retries until it succeeds; until then `/readyz` and
//! the API answer `503`. NATS connects in the background too
//! (`retry_on_initial_connect`); while it is away, posts are accepted and
//! their fan-out waits in the outbox.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use service_kit::health::{CheckFuture, NatsJetStreamCheck, Readiness, ReadinessCheck};
use service_kit::http::{Essentials, service_router};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::{CancellationToken, DropGuard};
use utoipa::OpenApi;

use crate::config::{CassandraConfig, FeedConfig};
use crate::error::Error;
use crate::publisher::{FanoutPublisher, connect_nats};
use crate::relay::relay_outbox;
use crate::store::TimelineStore;
use crate::{Config, api};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CAP timeline service",
        description = "Eventually consistent home timelines: posts stored at QUORUM on Cassandra, \
                       fanned out to followers over NATS JetStream, celebrities merged at read time."
    ),
    tags(
        (name = "posts", description = "Posting and reading posts"),
        (name = "graph", description = "Who follows whom"),
        (name = "timeline", description = "Home timelines"),
    )
)]
struct ApiDoc;

/// The store once it is connected, migrated and prepared; empty before.
#[derive(Debug, Clone, Default)]
pub struct StoreSlot {
    store: Arc<OnceCell<TimelineStore>>,
    /// Wakes the tasks in [`StoreSlot::wait`] when the store is set.
    filled: Arc<Notify>,
}

impl StoreSlot {
    pub fn get(&self) -> Result<&TimelineStore, Error> {
        self.store.get().ok_or(Error::Unavailable)
    }

    /// Waits until the store is set up (or forever, if it never is).
    pub async fn wait(&self) -> &TimelineStore {
        loop {
            // Register for the wake-up before looking, so a fill in between is not missed.
            let filled = self.filled.notified();
            if let Some(store) = self.store.get() {
                return store;
            }
            filled.await;
        }
    }

    /// Connects, migrates and prepares, retrying with back-off until it
    /// succeeds or `shutdown` is cancelled.
    pub async fn fill(
        &self,
        cassandra: CassandraConfig,
        feed: FeedConfig,
        shutdown: CancellationToken,
    ) {
        let mut delay = Duration::from_millis(250);
        loop {
            match TimelineStore::connect(&cassandra, &feed).await {
                Ok(store) => {
                    tracing::info!(keyspace = %cassandra.cassandra_keyspace, "timeline store ready");
                    let _ = self.store.set(store);
                    self.filled.notify_waiters();
                    return;
                }
                Err(error) => tracing::warn!(%error, ?delay, "timeline store not ready; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// Cassandra readiness: the store is set up and the cluster answers a query.
#[derive(Debug, Clone)]
pub struct StoreCheck(pub StoreSlot);

impl ReadinessCheck for StoreCheck {
    fn name(&self) -> &'static str {
        "cassandra"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            let store = self
                .0
                .get()
                .map_err(|_| "store not connected or migrated yet")?;
            store.ping().await?;
            Ok(())
        })
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: StoreSlot,
    pub publisher: FanoutPublisher,
    /// How long an `Idempotency-Key` of `POST /v1/posts` is remembered.
    pub post_key_retention: Duration,
}

/// A built service: bound listener, assembled router, background tasks started.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    store: StoreSlot,
    config: Config,
    background: CancellationToken,
    _stop_background: DropGuard,
}

impl Application {
    /// Binds the listener and assembles the router; starts the store set-up
    /// and the outbox relay in the background. Never waits for a store.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config
            .cassandra
            .validate(&config.http)
            .map_err(anyhow::Error::msg)?;
        let nats = connect_nats(&config.stream.nats_url).await?;
        let publisher = FanoutPublisher::new(nats.clone(), config.stream.clone())
            .with_outbox_shards(config.outbox.outbox_shards);
        let store = StoreSlot::default();

        let background = CancellationToken::new();
        tokio::spawn({
            let store = store.clone();
            let (cassandra, feed) = (config.cassandra.clone(), config.feed.clone());
            let shutdown = background.clone();
            async move { store.fill(cassandra, feed, shutdown).await }
        });
        tokio::spawn(relay_outbox(
            store.clone(),
            publisher.clone(),
            config.outbox.clone(),
            background.clone(),
        ));

        let readiness = Readiness::new(config.http.readiness_timeout())
            .with(StoreCheck(store.clone()))
            .with(NatsJetStreamCheck::new(nats));
        let state = AppState {
            store: store.clone(),
            publisher,
            post_key_retention: Duration::from_secs(config.post_idempotency_retention_hours * 3600),
        };
        let (api, openapi) = utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
            .merge(api::router())
            .with_state(state)
            .split_for_parts();
        let router = service_router(
            api,
            Essentials {
                readiness,
                openapi,
                http: config.http.clone(),
            },
        );
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        Ok(Self {
            listener,
            router,
            store,
            config,
            _stop_background: background.clone().drop_guard(),
            background,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store, once set up (tests use it to look at tables directly).
    pub fn store(&self) -> StoreSlot {
        self.store.clone()
    }

    /// Serves until `shutdown` is cancelled, drains in-flight requests, then
    /// stops the background tasks.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> io::Result<()> {
        let grace = self.config.http.shutdown_grace();
        let result = service_kit::http::serve(self.listener, self.router, shutdown, grace).await;
        self.background.cancel();
        result
    }
}
