//! Reservations: hold stock with optimistic locking, confirm, cancel, read.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use super::retry::{Step, in_transaction};
use super::strategy::{LockingStrategy, Taken, take_stock};
use super::{HeldItem, PgStore, ReservationRecord};
use crate::domain::{ReservationLines, ReservationStatus, ShortItem};

/// The idempotency scope of `POST /v1/reservations`.
const RESERVATIONS_SCOPE: &str = "POST /v1/reservations";

/// A validated reservation request.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub lines: ReservationLines,
    pub ttl_seconds: i64,
}

/// The outcome of [`PgStore::reserve`].
#[derive(Debug, Clone)]
pub enum Reserved {
    /// A new hold (recorded with its idempotency key, if it had one).
    Created(ReservationRecord),
    /// A retry of an earlier request with the same key: what that one came to.
    Replayed(Outcome),
}

/// What a reservation request came to, as recorded with its idempotency key:
/// a hold, or a refusal that the same request would meet again (with what
/// the store saw then). Transient failures are not recorded, so a retry of
/// those can succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Held { reservation: ReservationRecord },
    InsufficientStock { items: Vec<ShortItem> },
    UnknownSkus { skus: Vec<String> },
}

impl Outcome {
    /// The outcome to record for a refusal, if it is one to record.
    fn of_refusal(refusal: &StoreError) -> Option<Self> {
        match refusal {
            StoreError::InsufficientStock(items) => Some(Self::InsufficientStock {
                items: items.clone(),
            }),
            StoreError::UnknownSkus(skus) => Some(Self::UnknownSkus { skus: skus.clone() }),
            _ => None,
        }
    }
}

/// An idempotency key and the request it arrived with.
#[derive(Debug, Clone)]
pub struct IdempotentRequest<'a> {
    pub key: &'a str,
    /// The request as parsed, to tell a retry from a different request.
    pub fingerprint: serde_json::Value,
}

/// A final answer, committed either way: a hold (or a replay), or a refusal
/// recorded with the idempotency key.
type Answer = Result<Reserved, StoreError>;

impl PgStore {
    /// Holds stock for every line or for none.
    ///
    /// Due holds on the lines' products are released first, in a transaction
    /// of their own (the store's lock order). Then the store's
    /// [`LockingStrategy`] takes the stock (optimistic by default: read
    /// `(available, version)`, then compare-and-set on `version`); a lost
    /// compare-and-set retries the whole transaction (see `retry`).
    ///
    /// With `idempotency`, the key is claimed in the same transaction and the
    /// [`Outcome`] is recorded with it (the hold, or a refusal: unknown sku,
    /// insufficient stock), so a retry gets the original answer whatever the
    /// stock has done since.
    #[tracing::instrument(skip_all, fields(lines = request.lines.len()))]
    pub async fn reserve(
        &self,
        request: &NewReservation,
        idempotency: Option<IdempotentRequest<'_>>,
    ) -> Result<Reserved, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.release_due_holds(&mut conn, &request.lines.skus())
            .await?;
        let strategy = self.settings.strategy;
        let idempotency = idempotency.as_ref();
        in_transaction!(&mut conn, &self.settings.retry, "reserve", |tx| {
            reserve_once(tx, request, idempotency, strategy)
        })
    }
}

/// One run of the reservation transaction.
async fn reserve_once(
    tx: &mut PgConnection,
    request: &NewReservation,
    idempotency: Option<&IdempotentRequest<'_>>,
    strategy: LockingStrategy,
) -> Result<Step<Answer>, StoreError> {
    let Some(idem) = idempotency else {
        return Ok(match hold(tx, request, strategy).await? {
            Some(record) => Step::Commit(Ok(Reserved::Created(record))),
            None => Step::Conflict,
        });
    };
    // Claim the key. A concurrent request holding it makes this INSERT wait
    // for that transaction's outcome: committed → we replay its answer;
    // rolled back → the key is ours.
    let claimed = sqlx::query!(
        "INSERT INTO idempotency_keys (scope, key, request, outcome)
         VALUES ($1, $2, $3, 'null')
         ON CONFLICT (scope, key) DO NOTHING",
        RESERVATIONS_SCOPE,
        idem.key,
        &idem.fingerprint,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        let original = sqlx::query!(
            r#"SELECT request = $3 AS "same!", outcome
               FROM idempotency_keys WHERE scope = $1 AND key = $2"#,
            RESERVATIONS_SCOPE,
            idem.key,
            &idem.fingerprint,
        )
        .fetch_one(&mut *tx)
        .await?;
        if !original.same {
            return Err(StoreError::IdempotencyKeyReused);
        }
        let outcome = serde_json::from_value(original.outcome).map_err(|error| {
            StoreError::Database(sqlx::Error::Decode(
                format!("an idempotency record holds no outcome: {error}").into(),
            ))
        })?;
        return Ok(Step::Commit(Ok(Reserved::Replayed(outcome))));
    }
    // Undo the hold, not the claim, if the request is refused.
    sqlx::query("SAVEPOINT hold").execute(&mut *tx).await?;
    match hold(tx, request, strategy).await {
        Ok(Some(record)) => {
            let held = Outcome::Held {
                reservation: record.clone(),
            };
            record_outcome(tx, idem.key, &held).await?;
            Ok(Step::Commit(Ok(Reserved::Created(record))))
        }
        Ok(None) => Ok(Step::Conflict),
        Err(refusal) => match Outcome::of_refusal(&refusal) {
            Some(outcome) => {
                sqlx::query("ROLLBACK TO SAVEPOINT hold")
                    .execute(&mut *tx)
                    .await?;
                record_outcome(tx, idem.key, &outcome).await?;
                Ok(Step::Commit(Err(refusal)))
            }
            None => Err(refusal),
        },
    }
}

/// Records what an idempotent request came to, with its key.
async fn record_outcome(
    tx: &mut PgConnection,
    key: &str,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let outcome = serde_json::to_value(outcome)
        .map_err(|error| StoreError::Database(sqlx::Error::Encode(error.into())))?;
    sqlx::query!(
        "UPDATE idempotency_keys SET outcome = $3 WHERE scope = $1 AND key = $2",
        RESERVATIONS_SCOPE,
        key,
        outcome,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Takes the stock and writes the reservation, its lines and its ledger rows;
/// `None` when a concurrent writer won the compare-and-set.
async fn hold(
    tx: &mut PgConnection,
    request: &NewReservation,
    strategy: LockingStrategy,
) -> Result<Option<ReservationRecord>, StoreError> {
    if take_stock(tx, &request.lines, strategy).await? == Taken::Conflict {
        return Ok(None);
    }
    let id = Uuid::now_v7();
    let skus = request.lines.skus();
    let quantities = request.lines.quantities();
    // The hold, its lines and their ledger rows in one statement.
    let inserted = sqlx::query!(
        r#"WITH hold AS (
               INSERT INTO reservations (id, status, expires_at)
               VALUES ($1, 'held', now() + make_interval(secs => $2))
               RETURNING id, created_at, expires_at
           ), lines AS (
               INSERT INTO reservation_items (reservation_id, sku, quantity)
               SELECT hold.id, l.sku, l.quantity
               FROM hold, UNNEST($3::TEXT[], $4::BIGINT[]) AS l(sku, quantity)
           ), ledger AS (
               INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
               SELECT l.sku, 'reserved', l.quantity, hold.id
               FROM hold, UNNEST($3::TEXT[], $4::BIGINT[]) AS l(sku, quantity)
           )
           SELECT created_at, expires_at FROM hold"#,
        id,
        request.ttl_seconds as f64,
        &skus,
        &quantities,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(ReservationRecord {
        id,
        status: ReservationStatus::Held,
        items: skus
            .into_iter()
            .zip(quantities)
            .map(|(sku, quantity)| HeldItem { sku, quantity })
            .collect(),
        created_at: inserted.created_at,
        expires_at: inserted.expires_at,
    }))
}
