//! Building and running the timeline service.

use std::io;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use service_kit::health::{CassandraCheck, NatsJetStreamCheck, Readiness};
use service_kit::http::{Essentials, service_router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::Config;

#[derive(OpenApi)]
#[openapi(info(
    title = "CAP timeline service",
    description = "Eventually consistent home timelines."
))]
struct ApiDoc;

/// A built service: bound listener and assembled router.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    config: Config,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&config.nats_url)
            .await
            .context("connecting to NATS")?;
        let readiness = Readiness::new(config.http.readiness_timeout())
            .with(CassandraCheck::connect_lazily(
                config.cassandra_nodes.clone(),
            ))
            .with(NatsJetStreamCheck::new(nats));
        let router = service_router(
            Router::new(),
            Essentials {
                readiness,
                metrics: service_kit::metrics::install(),
                openapi: ApiDoc::openapi(),
                http: config.http.clone(),
            },
        );
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        Ok(Self {
            listener,
            router,
            config,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> io::Result<()> {
        let grace = self.config.http.shutdown_grace();
        service_kit::http::serve(self.listener, self.router, shutdown, grace).await
    }
}
