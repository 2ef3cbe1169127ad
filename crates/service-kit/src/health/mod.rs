//! Liveness (`/healthz`) and readiness (`/readyz`).
//!
//! `/healthz` answers `200` while the process runs. `/readyz` runs every
//! registered [`ReadinessCheck`] concurrently, each under a timeout, and answers
//! `200` only when all pass; otherwise a `503` problem listing which failed. The
//! failure's cause is logged, not sent: it is driver text.

#[cfg(feature = "cassandra")]
mod cassandra;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "postgres")]
mod postgres;
mod task;

#[cfg(feature = "cassandra")]
pub use cassandra::CassandraCheck;
#[cfg(feature = "nats")]
pub use nats::NatsJetStreamCheck;
#[cfg(feature = "postgres")]
pub use postgres::PostgresCheck;
pub use task::TaskCheck;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::Problem;

/// Why a check failed, for the log.
pub type CheckError = Box<dyn std::error::Error + Send + Sync>;

/// The future a check returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CheckError>> + Send + 'a>>;

/// One dependency the service needs in order to serve: a store, a broker.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short stable name shown in `/readyz`, such as `postgres`.
    fn name(&self) -> &'static str;
    /// Succeeds when the dependency answers a real request now.
    fn check(&self) -> CheckFuture<'_>;
}

/// The set of checks behind `/readyz`.
#[derive(Clone)]
pub struct Readiness {
    checks: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    timeout: Duration,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|c| c.name()).collect();
        f.debug_struct("Readiness")
            .field("checks", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The state of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Up,
    Down,
}

/// One line of the readiness report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckResult {
    pub name: &'static str,
    pub status: CheckStatus,
}

/// What `/readyz` answers when every check passes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    pub checks: Vec<CheckResult>,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.status == CheckStatus::Up)
    }
}

impl Readiness {
    pub fn new(timeout: Duration) -> Self {
        Self {
            checks: Arc::new(Vec::new()),
            timeout,
        }
    }

    /// Adds a check.
    pub fn with(mut self, check: impl ReadinessCheck) -> Self {
        Arc::make_mut(&mut self.checks).push(Arc::new(check));
        self
    }

    /// Runs every check concurrently, each bounded by the timeout.
    pub async fn report(&self) -> ReadinessReport {
        let runs = self.checks.iter().map(|check| async move {
            let outcome = tokio::time::timeout(self.timeout, check.check()).await;
            let status = match outcome {
                Ok(Ok(())) => CheckStatus::Up,
                Ok(Err(error)) => {
                    tracing::warn!(check = check.name(), %error, "readiness check failed");
                    CheckStatus::Down
                }
                Err(_) => {
                    tracing::warn!(check = check.name(), timeout = ?self.timeout, "readiness check timed out");
                    CheckStatus::Down
                }
            };
            CheckResult {
                name: check.name(),
                status,
            }
        });
        let checks = futures::future::join_all(runs).await;
        let ready = checks.iter().all(|c| c.status == CheckStatus::Up);
        ReadinessReport {
            status: if ready { "ready" } else { "unavailable" },
            checks,
        }
    }
}

/// `GET /healthz` and `GET /readyz`.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.report().await;
    if report.is_ready() {
        (StatusCode::OK, Json(report)).into_response()
    } else {
        Problem::unavailable("a dependency of this service is not answering")
            .with_extension("checks", &report.checks)
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, bool);

    impl ReadinessCheck for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn check(&self) -> CheckFuture<'_> {
            let ok = self.1;
            Box::pin(async move { if ok { Ok(()) } else { Err("down".into()) } })
        }
    }

    struct Hangs;

    impl ReadinessCheck for Hangs {
        fn name(&self) -> &'static str {
            "hangs"
        }
        fn check(&self) -> CheckFuture<'_> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn ready_only_when_every_check_passes() {
        let all_up = Readiness::new(Duration::from_secs(1))
            .with(Fixed("a", true))
            .with(Fixed("b", true));
        assert!(all_up.report().await.is_ready());

        let one_down = all_up.clone().with(Fixed("c", false));
        let report = one_down.report().await;
        assert!(!report.is_ready());
        assert_eq!(report.checks[2].status, CheckStatus::Down);
        assert_eq!(report.checks[0].status, CheckStatus::Up);
    }

    #[tokio::test]
    async fn a_hanging_check_counts_as_down() {
        let readiness = Readiness::new(Duration::from_millis(50)).with(Hangs);
        let report = readiness.report().await;
        assert_eq!(report.checks[0].status, CheckStatus::Down);
    }
}
