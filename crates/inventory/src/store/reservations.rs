//! Reservations: hold stock with optimistic locking, confirm, cancel, read.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::expiry::release_holds;
use super::strategy::{LockingStrategy, Taken, take_stock};
use super::{ExpiryScope, PgStore, ReservationRecord, is_retryable};
use crate::domain::{ReservationLines, ReservationStatus};
use crate::error::InventoryError;

/// The idempotency scope of `POST /v1/reservations`.
const RESERVATIONS_SCOPE: &str = "POST /v1/reservations";

/// How a reservation takes stock, and how hard it tries before giving up with `503`.
#[derive(Debug, Clone, Copy)]
pub struct ContentionPolicy {
    /// How concurrent reservations of one product are kept apart.
    pub strategy: LockingStrategy,
    /// Attempts of the whole transaction, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time, with full jitter.
    pub base_backoff: Duration,
    /// Ceiling of one backoff.
    pub max_backoff: Duration,
}

impl ContentionPolicy {
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

/// A validated reservation request.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub lines: ReservationLines,
    pub ttl_seconds: i64,
}

/// The outcome of [`PgStore::reserve`].
#[derive(Debug, Clone)]
pub enum Reserved {
    /// A new hold, with the response body recorded for its idempotency key.
    Created(ReservationRecord),
    /// A retry of an earlier request with the same key: its original answer.
    Replayed {
        status: u16,
        body: serde_json::Value,
    },
}

/// An idempotency key and the request it arrived with.
#[derive(Debug, Clone)]
pub struct IdempotentRequest<'a> {
    pub key: &'a str,
    /// The request as parsed, to tell a retry from a different request.
    pub fingerprint: serde_json::Value,
}

/// What one attempt of the reservation transaction came to.
enum Attempt {
    Done(Reserved),
    /// A final refusal, recorded with the idempotency key; commit, then answer it.
    Refused(InventoryError),
    /// A concurrent writer changed a product between our read and our write.
    Conflict,
}

impl PgStore {
    /// Holds stock for every line or for none.
    ///
    /// The policy's [`LockingStrategy`] takes the stock (optimistic by
    /// default: read `(available, version)`, then `UPDATE … WHERE sku = $1 AND
    /// version = $2`). When a concurrent writer wins, the whole transaction is
    /// rolled back and retried after a jittered backoff, up to the policy's
    /// budget.
    ///
    /// With `idempotency`, the key is claimed in the same transaction and the
    /// final answer is recorded with it: `render`'s body for a new hold, or the
    /// problem for a refusal (unknown sku, insufficient stock), so a retry gets
    /// the original answer whatever the stock has done since.
    #[tracing::instrument(skip_all, fields(lines = request.lines.skus().len()))]
    pub async fn reserve(
        &self,
        request: &NewReservation,
        idempotency: Option<IdempotentRequest<'_>>,
        policy: &ContentionPolicy,
        render: impl Fn(&ReservationRecord) -> serde_json::Value,
    ) -> Result<Reserved, InventoryError> {
        let started = Instant::now();
        // One connection for every attempt: queueing for the pool again after
        // each conflict would put the request behind everyone else.
        let mut conn = self.pool.acquire().await?;
        let mut attempt = 1;
        let outcome = loop {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            match reserve_once(&mut tx, request, idempotency.as_ref(), policy, &render).await {
                Ok(Attempt::Done(reserved)) => {
                    tx.commit().await?;
                    break Ok(reserved);
                }
                Ok(Attempt::Refused(error)) => {
                    tx.commit().await?;
                    break Err(error);
                }
                // Roll back now, not when the connection is next used: an open
                // transaction sleeping through the backoff would hold its locks.
                Ok(Attempt::Conflict) => tx.rollback().await?,
                Err(InventoryError::Database(error)) if is_retryable(&error) => {
                    tx.rollback().await?
                }
                Err(error) => {
                    tx.rollback().await?;
                    break Err(error);
                }
            }
            metrics::counter!("inventory_reservation_conflicts_total", "strategy" => policy.strategy.as_str()).increment(1);
            if attempt >= policy.max_attempts {
                break Err(InventoryError::Contention {
                    attempts: policy.max_attempts,
                });
            }
            tokio::time::sleep(policy.backoff(attempt)).await;
            attempt += 1;
            metrics::counter!("inventory_reservation_retries_total", "strategy" => policy.strategy.as_str()).increment(1);
        };
        metrics::histogram!("inventory_transaction_duration_seconds", "operation" => "reserve", "strategy" => policy.strategy.as_str())
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Reads a reservation; a hold past its expiry reads as `expired`.
    #[tracing::instrument(skip(self))]
    pub async fn reservation(&self, id: Uuid) -> Result<ReservationRecord, InventoryError> {
        let mut conn = self.pool.acquire().await?;
        load_reservation(&mut conn, id, false)
            .await?
            .ok_or_else(|| InventoryError::ReservationNotFound(id.to_string()))
    }

    /// Held → confirmed: the held stock becomes sold. Confirming a confirmed
    /// reservation answers it again; a cancelled or expired one is a conflict.
    #[tracing::instrument(skip(self))]
    pub async fn confirm(&self, id: Uuid) -> Result<ReservationRecord, InventoryError> {
        self.finish(id, Finish::Confirm).await
    }

    /// Held → cancelled: the held stock goes back to available. Cancelling a
    /// cancelled reservation answers it again; a confirmed or expired one is a conflict.
    #[tracing::instrument(skip(self))]
    pub async fn cancel(&self, id: Uuid) -> Result<ReservationRecord, InventoryError> {
        self.finish(id, Finish::Cancel).await
    }

    async fn finish(&self, id: Uuid, finish: Finish) -> Result<ReservationRecord, InventoryError> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        // A hold past its expiry is released now, so it answers as expired.
        let expired_now = ExpiryScope::Reservation(id).release(&mut tx).await? > 0;
        if expired_now {
            tx.commit().await?;
            tx = self.pool.begin().await?;
        }
        let Some(record) = load_reservation(&mut tx, id, true).await? else {
            return Err(InventoryError::ReservationNotFound(id.to_string()));
        };
        let (target, action) = match finish {
            Finish::Confirm => (ReservationStatus::Confirmed, "confirmed"),
            Finish::Cancel => (ReservationStatus::Cancelled, "cancelled"),
        };
        if record.status == target {
            return Ok(record);
        }
        if record.status != ReservationStatus::Held {
            return Err(InventoryError::ReservationState {
                status: record.status,
                action,
            });
        }
        match finish {
            Finish::Confirm => sell_hold(&mut tx, id).await?,
            Finish::Cancel => release_holds(&mut tx, &[id], "cancelled").await?,
        }
        tx.commit().await?;
        metrics::histogram!("inventory_transaction_duration_seconds", "operation" => action)
            .record(started.elapsed().as_secs_f64());
        Ok(ReservationRecord {
            status: target,
            ..record
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Finish {
    Confirm,
    Cancel,
}

/// One attempt of the reservation transaction; the caller commits or rolls back.
async fn reserve_once(
    tx: &mut Transaction<'_, Postgres>,
    request: &NewReservation,
    idempotency: Option<&IdempotentRequest<'_>>,
    policy: &ContentionPolicy,
    render: &impl Fn(&ReservationRecord) -> serde_json::Value,
) -> Result<Attempt, InventoryError> {
    if let Some(idem) = idempotency {
        // Claim the key. A concurrent request holding it makes this INSERT wait
        // for that transaction's outcome: committed → we replay its answer;
        // rolled back → the key is ours.
        let claimed = sqlx::query!(
            "INSERT INTO idempotency_keys (scope, key, request, status_code, response_body)
             VALUES ($1, $2, $3, 0, 'null')
             ON CONFLICT (scope, key) DO NOTHING",
            RESERVATIONS_SCOPE,
            idem.key,
            &idem.fingerprint,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            let original = sqlx::query!(
                r#"SELECT request = $3 AS "same!", status_code, response_body
                   FROM idempotency_keys WHERE scope = $1 AND key = $2"#,
                RESERVATIONS_SCOPE,
                idem.key,
                &idem.fingerprint,
            )
            .fetch_one(&mut **tx)
            .await?;
            if !original.same {
                return Err(InventoryError::IdempotencyKeyReused);
            }
            return Ok(Attempt::Done(Reserved::Replayed {
                status: u16::try_from(original.status_code).unwrap_or(201),
                body: original.response_body,
            }));
        }
        // Undo the hold, not the claim, if the request is refused.
        sqlx::query("SAVEPOINT hold").execute(&mut **tx).await?;
        return match hold(tx, request, policy).await {
            Ok(attempt) => {
                if let Attempt::Done(Reserved::Created(record)) = &attempt {
                    record_answer(tx, idem.key, 201, &render(record)).await?;
                }
                Ok(attempt)
            }
            Err(refusal) => match refusal.recordable_problem() {
                Some(problem) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT hold")
                        .execute(&mut **tx)
                        .await?;
                    let body = serde_json::to_value(&problem).unwrap_or_default();
                    record_answer(tx, idem.key, problem.status, &body).await?;
                    Ok(Attempt::Refused(refusal))
                }
                None => Err(refusal),
            },
        };
    }
    hold(tx, request, policy).await
}

/// Records the final answer to an idempotent request with its key.
async fn record_answer(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE idempotency_keys SET status_code = $3, response_body = $4
         WHERE scope = $1 AND key = $2",
        RESERVATIONS_SCOPE,
        key,
        i16::try_from(status).unwrap_or(500),
        body,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Releases due holds on the lines' products, takes the stock and writes the
/// reservation, its lines and its ledger rows.
async fn hold(
    tx: &mut Transaction<'_, Postgres>,
    request: &NewReservation,
    policy: &ContentionPolicy,
) -> Result<Attempt, InventoryError> {
    let skus = request.lines.skus();
    ExpiryScope::Skus(&skus).release(tx).await?;

    if take_stock(tx, &request.lines, policy.strategy).await? == Taken::Conflict {
        return Ok(Attempt::Conflict);
    }

    let id = Uuid::now_v7();
    let inserted = sqlx::query!(
        "INSERT INTO reservations (id, status, expires_at)
         VALUES ($1, 'held', now() + make_interval(secs => $2))
         RETURNING created_at, expires_at",
        id,
        request.ttl_seconds as f64,
    )
    .fetch_one(&mut **tx)
    .await?;
    let quantities = request.lines.quantities();
    sqlx::query!(
        "INSERT INTO reservation_items (reservation_id, sku, quantity)
         SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[])",
        id,
        &skus,
        &quantities,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
         SELECT sku, 'reserved', quantity, $1 FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS l(sku, quantity)",
        id,
        &skus,
        &quantities,
    )
    .execute(&mut **tx)
    .await?;

    let record = ReservationRecord {
        id,
        status: ReservationStatus::Held,
        items: skus.into_iter().zip(quantities).collect(),
        created_at: inserted.created_at,
        expires_at: inserted.expires_at,
    };
    Ok(Attempt::Done(Reserved::Created(record)))
}

/// Moves a locked hold's stock from reserved to sold.
async fn sell_hold(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    let lines = sqlx::query!(
        "SELECT sku, quantity FROM reservation_items WHERE reservation_id = $1 ORDER BY sku",
        id,
    )
    .fetch_all(&mut *tx)
    .await?;
    for line in &lines {
        sqlx::query!(
            "UPDATE products
             SET reserved = reserved - $2, sold = sold + $2,
                 version = version + 1, updated_at = now()
             WHERE sku = $1",
            line.sku,
            line.quantity,
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
         SELECT sku, 'sold', quantity, reservation_id FROM reservation_items
         WHERE reservation_id = $1 ORDER BY sku",
        id,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE reservations SET status = 'confirmed', updated_at = now() WHERE id = $1",
        id,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Loads a reservation and its lines; `lock` takes the row lock first.
async fn load_reservation(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<ReservationRecord>, sqlx::Error> {
    let head = if lock {
        sqlx::query_as!(
            ReservationHead,
            r#"SELECT status, created_at, expires_at, expires_at <= now() AS "past_expiry!"
               FROM reservations WHERE id = $1 FOR UPDATE"#,
            id,
        )
        .fetch_optional(&mut *conn)
        .await?
    } else {
        sqlx::query_as!(
            ReservationHead,
            r#"SELECT status, created_at, expires_at, expires_at <= now() AS "past_expiry!"
               FROM reservations WHERE id = $1"#,
            id,
        )
        .fetch_optional(&mut *conn)
        .await?
    };
    let Some(head) = head else {
        return Ok(None);
    };
    let mut status = ReservationStatus::from_db(&head.status).ok_or_else(|| {
        sqlx::Error::Decode(format!("unknown reservation status '{}'", head.status).into())
    })?;
    if status == ReservationStatus::Held && head.past_expiry {
        status = ReservationStatus::Expired;
    }
    let items = sqlx::query!(
        "SELECT sku, quantity FROM reservation_items WHERE reservation_id = $1 ORDER BY sku",
        id,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(ReservationRecord {
        id,
        status,
        items: items
            .into_iter()
            .map(|line| (line.sku, line.quantity))
            .collect(),
        created_at: head.created_at,
        expires_at: head.expires_at,
    }))
}

/// The `reservations` row, and whether it is past its expiry by the database's clock.
struct ReservationHead {
    status: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    past_expiry: bool,
}
