//! Assembles a service's HTTP surface and serves it.
//!
//! [`service_router`] takes the service's own API router and adds, once, the
//! endpoints every service has (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`, `/docs`) and the layers every request goes through:
//!
//! request id (set, or kept when the client sent one) → trace span carrying it
//! → echo of the id → bare errors turned into problems → HTTP metrics →
//! timeout → body limit → the handler.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::HttpConfig;
use crate::health::{self, Readiness};
use crate::{Problem, metrics};

/// The parts every service contributes to its own HTTP surface.
#[derive(Clone)]
pub struct Essentials {
    pub readiness: Readiness,
    pub openapi: utoipa::openapi::OpenApi,
    pub http: HttpConfig,
}

impl std::fmt::Debug for Essentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Essentials")
            .field("readiness", &self.readiness)
            .field("openapi", &self.openapi.info.title)
            .field("http", &self.http)
            .finish()
    }
}

/// The service's API plus the shared endpoints and layers.
pub fn service_router(api: Router, essentials: Essentials) -> Router {
    let Essentials {
        readiness,
        mut openapi,
        http,
    } = essentials;
    // What the extractors, the body limit and the timeout answer on every route.
    crate::openapi::document_kit_answers(&mut openapi);

    let docs: Router = SwaggerUi::new("/docs").url("/openapi.json", openapi).into();

    api.merge(health::router(readiness))
        .merge(metrics::router(metrics::install()))
        .merge(docs)
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(problem_for_bare_errors))
                .layer(middleware::from_fn(metrics::track_http))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    http.request_timeout(),
                ))
                .layer(DefaultBodyLimit::max(http.body_limit_bytes)),
        )
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(request.uri().path(), MatchedPath::as_str);
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
    )
}

/// Errors produced by the framework or a layer (an unknown method, a timeout)
/// come with no body; give them the same problem shape as the handlers' errors.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if is_error && !response.headers().contains_key(header::CONTENT_TYPE) {
        let mut replaced = Problem::from_status(status).into_response();
        for (name, value) in response.headers() {
            if name != header::CONTENT_LENGTH {
                replaced.headers_mut().insert(name.clone(), value.clone());
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            replaced.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::problem::retry_after()),
            );
        }
        return replaced;
    }
    response
}

/// A service's HTTP surface, bound and assembled: its listener, and its API
/// with the shared endpoints and layers ([`service_router`]). Every binary
/// builds one of these, then serves it until shutdown.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: Router,
    grace: Duration,
}

impl Server {
    /// Binds `addr` and assembles `api` with `essentials`.
    pub async fn bind(addr: SocketAddr, api: Router, essentials: Essentials) -> io::Result<Self> {
        let grace = essentials.http.shutdown_grace();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| io::Error::new(error.kind(), format!("binding {addr}: {error}")))?;
        Ok(Self {
            listener,
            router: service_router(api, essentials),
            grace,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests
    /// for at most the configured grace.
    pub async fn serve(self, shutdown: CancellationToken) -> io::Result<()> {
        serve(self.listener, self.router, shutdown, self.grace).await
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains
/// in-flight requests for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    let drained = shutdown.clone();
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move { drained.cancelled().await });
    tokio::select! {
        result = server => result,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}
