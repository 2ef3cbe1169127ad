//! Building and running the timeline API.
//!
//! The service is AP: it starts, and serves `/healthz`, even when Cassandra or
//! NATS is down. The store (connect, migrate, prepare) is set up by a
//! background task that retries until it succeeds; until then `/readyz` and
//! the API answer `503`. NATS connects in the background too
//! (`retry_on_initial_connect`); while it is away, posts are accepted and
//! their fan-out waits in the outbox.
//!
//! This module only wires: it depends on the API, the store, the publisher
//! and the relay, and none of them depends on it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use service_kit::auth::Authenticator;
use service_kit::health::{NatsJetStreamCheck, Readiness, TaskCheck};
use service_kit::http::{Essentials, Server};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Config;
use crate::api::{self, AppState};
use crate::publisher::{FanoutPublisher, connect_nats};
use crate::relay::relay_outbox;
use crate::store::StoreSlot;

/// A built service: bound listener, assembled router, background tasks started.
#[derive(Debug)]
pub struct Application {
    server: Server,
    store: StoreSlot,
    background: CancellationToken,
    _stop_background: DropGuard,
}

impl Application {
    /// Binds the listener and assembles the router; starts the store set-up
    /// and the outbox relay in the background. Never waits for a store, but
    /// fails without a key to verify bearer tokens with.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config
            .cassandra
            .validate(&config.http)
            .map_err(anyhow::Error::msg)?;
        let auth = Arc::new(
            Authenticator::from_config(&config.auth, "timeline")
                .context("setting up bearer-token authentication")?,
        );
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
        // Watched: a relay that died would leave posts in the outbox for good.
        let relay = TaskCheck::new("outbox-relay");
        relay.spawn(
            relay_outbox(
                store.clone(),
                publisher.clone(),
                config.outbox.clone(),
                background.clone(),
            ),
            background.clone(),
        );

        let readiness = Readiness::new(config.http.readiness_timeout())
            .with(store.readiness_check())
            .with(NatsJetStreamCheck::new(nats))
            .with(relay);
        let state = AppState {
            store: store.clone(),
            publisher,
            auth,
            post_key_retention: Duration::from_secs(config.post_idempotency_retention_hours * 3600),
        };
        let (api, openapi) = api::router().with_state(state).split_for_parts();
        let essentials = Essentials {
            readiness,
            openapi,
            http: config.http.clone(),
        };
        let server = Server::bind(config.addr, api, essentials).await?;
        Ok(Self {
            server,
            store,
            _stop_background: background.clone().drop_guard(),
            background,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// The store, once set up (tests use it to look at tables directly).
    pub fn store(&self) -> StoreSlot {
        self.store.clone()
    }

    /// Serves until `shutdown` is cancelled, drains in-flight requests, then
    /// stops the background tasks.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> io::Result<()> {
        let result = self.server.serve(shutdown).await;
        self.background.cancel();
        result
    }
}
