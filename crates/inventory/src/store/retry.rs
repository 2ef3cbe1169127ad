//! The one way a write transaction runs.
//!
//! Every write the service makes (a reservation, a confirm or cancel, a product
//! change, a sweeper batch, the release of due holds a request performs) goes
//! through [`in_transaction!`]: it begins a transaction at READ COMMITTED (pinned
//! here, whatever the server's default), runs the body, and commits. When the
//! database says that running the same transaction again can succeed — a
//! serialization failure (`40001`), a detected deadlock (`40P01`), or a version
//! conflict the body reports itself — the transaction is rolled back and run
//! again after a jittered exponential backoff, until the policy's attempts or
//! time budget are spent; then the caller gets [`StoreError::Contention`]
//! (`503` + `Retry-After`). Everything else (a refusal, a lock timeout, the
//! database gone) is returned at once.

use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::StoreError;

/// What one run of a transaction's body came to.
#[derive(Debug)]
pub(super) enum Step<T> {
    /// Commit, then return the value.
    Commit(T),
    /// A concurrent writer changed what the body read (a version compare-and-set
    /// lost): roll back and run the body again.
    Conflict,
}

/// How hard a write tries before it answers `503`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Runs of the whole transaction, the first included.
    pub max_attempts: u32,
    /// Backoff before the second run; doubles each time, with full jitter.
    pub base_backoff: Duration,
    /// Ceiling of one backoff.
    pub max_backoff: Duration,
    /// No new run starts once this much time has passed since the first began,
    /// so retries never outlast the request they serve.
    pub budget: Duration,
}

impl RetryPolicy {
    /// A random wait in `[0, min(max, base * 2^(attempt-1))]` ("full jitter"),
    /// so that the losers of one round do not collide again in the next.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .base_backoff
            .saturating_mul(1 << attempt.min(16).saturating_sub(1));
        let ceiling = exponential.min(self.max_backoff);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=micros))
    }
}

/// Why a run was retried, as the `cause` label of the retry metric.
fn retry_cause(error: &StoreError) -> Option<&'static str> {
    let StoreError::Database(error) = error else {
        return None;
    };
    let sqlx::Error::Database(db) = error.as_ref() else {
        return None;
    };
    match db.code().as_deref() {
        Some("40001") => Some("serialization_failure"),
        Some("40P01") => Some("deadlock"),
        _ => None,
    }
}

/// Runs a write transaction under [`Retry`]: `$body` is a future that uses
/// `$tx: &mut PgConnection` and resolves to `Result<Step<T>, StoreError>`;
/// the whole expression resolves to `T`, or returns the error from the
/// enclosing function.
///
/// ```ignore
/// let record = in_transaction!(&mut conn, &policy, "confirm", |tx| finish_once(tx, id));
/// ```
///
/// Every run uses the caller's connection: queueing for the pool again after
/// each conflict would put the request behind everyone else. (A macro over a
/// loop rather than a function taking an async closure: the futures of
/// borrowing async closures cannot yet be proven `Send`, which axum needs.)
macro_rules! in_transaction {
    ($conn:expr, $policy:expr, $operation:expr, |$tx:ident| $body:expr) => {{
        let mut retry = $crate::store::retry::Retry::new($policy, $operation);
        loop {
            let mut tx = retry.begin($conn).await?;
            let $tx: &mut sqlx::PgConnection = &mut tx;
            let run = $body.await;
            if let Some(value) = retry.settle(tx, run).await? {
                break value;
            }
        }
    }};
}
pub(super) use in_transaction;

/// The state of one write's retries; see [`in_transaction!`].
#[derive(Debug)]
pub(super) struct Retry<'p> {
    policy: &'p RetryPolicy,
    /// Labels the metrics.
    operation: &'static str,
    started: Instant,
    attempt: u32,
}

impl<'p> Retry<'p> {
    pub(super) fn new(policy: &'p RetryPolicy, operation: &'static str) -> Self {
        Self {
            policy,
            operation,
            started: Instant::now(),
            attempt: 1,
        }
    }

    /// Begins a run: a transaction at READ COMMITTED, whatever the server's default.
    pub(super) async fn begin<'c>(
        &self,
        conn: &'c mut PgConnection,
    ) -> Result<Transaction<'c, Postgres>, StoreError> {
        Ok(conn
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?)
    }

    /// Ends a run. A [`Step::Commit`] is committed and its value returned.
    /// Anything else is rolled back; when a retry can cure it and the budget
    /// allows, this waits out the backoff and returns `None`: run again.
    pub(super) async fn settle<T>(
        &mut self,
        tx: Transaction<'_, Postgres>,
        run: Result<Step<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let cause = match run {
            Ok(Step::Commit(value)) => match tx.commit().await {
                Ok(()) => return Ok(Some(self.finished(value))),
                Err(error) => {
                    let error = StoreError::from(error);
                    retry_cause(&error).ok_or(error)?
                }
            },
            // Roll back now, not when the connection is next used: an open
            // transaction sleeping through the backoff would hold its locks.
            Ok(Step::Conflict) => {
                tx.rollback().await?;
                "version_conflict"
            }
            Err(error) => {
                let cause = retry_cause(&error);
                // A failed rollback means a broken connection, which the pool
                // discards; the run's error is the one worth reporting.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed run");
                    return Err(error);
                }
                cause.ok_or(error)?
            }
        };
        metrics::counter!("inventory_transaction_conflicts_total", "operation" => self.operation, "cause" => cause)
            .increment(1);
        let backoff = self.policy.backoff(self.attempt);
        if self.attempt >= self.policy.max_attempts
            || self.started.elapsed() + backoff >= self.policy.budget
        {
            return Err(StoreError::Contention {
                attempts: self.attempt,
            });
        }
        tokio::time::sleep(backoff).await;
        self.attempt += 1;
        metrics::counter!("inventory_transaction_retries_total", "operation" => self.operation, "cause" => cause)
            .increment(1);
        Ok(None)
    }

    fn finished<T>(&self, value: T) -> T {
        metrics::histogram!("inventory_transaction_duration_seconds", "operation" => self.operation)
            .record(self.started.elapsed().as_secs_f64());
        value
    }
}
