//! Reservations: hold stock for every line or none, in batches of one or more
//! requests (see `coalesce`), each request with its own hold, ledger rows,
//! idempotency record and answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use super::retry::{Step, in_transaction};
use super::strategy::{LockingStrategy, take_stock};
use super::{HeldItem, PgStore, ReservationRecord};
use crate::domain::{ReservationLines, ReservationStatus, ShortItem};

/// The idempotency scope of `POST /v1/reservations` for one subject: keys
/// are per subject, so one client's key never replays another's reservation.
fn idempotency_scope(owner: &str) -> String {
    format!("POST /v1/reservations as {owner}")
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
    pub(super) fn of_refusal(refusal: &StoreError) -> Option<Self> {
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
pub struct IdempotentRequest {
    pub key: String,
    /// The request as parsed, to tell a retry from a different request.
    pub fingerprint: serde_json::Value,
}

/// One reservation request as the store takes it.
#[derive(Debug, Clone)]
pub struct ReservationRequest {
    /// The subject the hold belongs to: only it reads, confirms or cancels it.
    pub owner: String,
    pub reservation: NewReservation,
    pub idempotency: Option<IdempotentRequest>,
}

/// A final answer to one request of a batch: a hold (or a replay), or a
/// refusal (recorded with its idempotency key, when it is one to record).
pub(super) type Answer = Result<Reserved, StoreError>;

impl PgStore {
    /// Holds stock for every line or for none.
    ///
    /// With coalescing on, the request joins the queue of its first product
    /// and is applied in a batch with the requests queued behind the running
    /// one (see `coalesce`); otherwise, or when nobody else is waiting, it is
    /// a batch of one. Either way the batch's due holds are released first,
    /// in a transaction of their own (the store's lock order), then one
    /// transaction takes the stock with the store's [`LockingStrategy`]; a
    /// lost compare-and-set retries the whole batch (see `retry`).
    ///
    /// With `idempotency`, the key is claimed in the same transaction and the
    /// [`Outcome`] is recorded with it (the hold, or a refusal: unknown sku,
    /// insufficient stock), so a retry gets the original answer whatever the
    /// stock has done since.
    pub async fn reserve(&self, request: ReservationRequest) -> Result<Reserved, StoreError> {
        match &self.coalescer {
            Some(coalescer) => coalescer.submit(self, request).await,
            None => {
                let mut answers = self.reserve_batch(&[request]).await;
                answers.pop().unwrap_or_else(|| Err(no_answer()))
            }
        }
    }

    /// Applies `requests` in one transaction (retried as a whole); returns one
    /// answer per request, in order. A failure of the batch as a whole (the
    /// database gone, contention past the retry budget) is every request's
    /// answer, and nothing of the batch is committed.
    #[tracing::instrument(skip_all, fields(requests = requests.len()))]
    pub(super) async fn reserve_batch(&self, requests: &[ReservationRequest]) -> Vec<Answer> {
        metrics::histogram!("inventory_reservation_batch_size").record(requests.len() as f64);
        match self.try_reserve_batch(requests).await {
            Ok(answers) => answers,
            Err(error) => vec![Err(error); requests.len()],
        }
    }

    async fn try_reserve_batch(
        &self,
        requests: &[ReservationRequest],
    ) -> Result<Vec<Answer>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let skus: Vec<String> = requests
            .iter()
            .flat_map(|request| request.reservation.lines.skus())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.release_due_holds(&mut conn, &skus).await?;
        let strategy = self.settings.strategy;
        Ok(in_transaction!(
            &mut conn,
            &self.settings.retry,
            "reserve",
            |tx| reserve_once(tx, requests, strategy)
        ))
    }
}

/// The answer a channel or batch lost (a bug, answered `500`).
pub(super) fn no_answer() -> StoreError {
    StoreError::Database(Arc::new(sqlx::Error::WorkerCrashed))
}

/// Where one request of a batch stands while the batch runs.
#[derive(Debug)]
enum Slot {
    /// Takes stock in this run.
    Open,
    /// Carries the same key and body as an earlier request of the batch:
    /// answered as a replay of that one's outcome.
    SameAs(usize),
    Answered(Answer),
}

/// One run of a batch's transaction: claims the idempotency keys, takes the
/// stock, writes the holds and records the outcomes, a few statements
/// whatever the batch's size.
async fn reserve_once(
    tx: &mut PgConnection,
    requests: &[ReservationRequest],
    strategy: LockingStrategy,
) -> Result<Step<Vec<Answer>>, StoreError> {
    let mut slots = claim_keys(tx, requests).await?;
    let open: Vec<usize> = (0..requests.len())
        .filter(|&i| matches!(slots[i], Slot::Open))
        .collect();
    let lines: Vec<&ReservationLines> = open
        .iter()
        .map(|&i| &requests[i].reservation.lines)
        .collect();
    let Some(allocation) = take_stock(tx, &lines, strategy).await? else {
        return Ok(Step::Conflict);
    };
    let mut granted = Vec::new();
    for (i, taken) in open.into_iter().zip(allocation) {
        match taken {
            Ok(()) => granted.push(i),
            Err(refusal) => slots[i] = Slot::Answered(Err(refusal)),
        }
    }
    let records = insert_holds(tx, &granted, requests).await?;
    for (i, record) in granted.into_iter().zip(records) {
        slots[i] = Slot::Answered(Ok(Reserved::Created(record)));
    }
    record_outcomes(tx, requests, &slots).await?;
    let answers = (0..slots.len())
        .map(|i| match &slots[i] {
            Slot::Answered(answer) => answer.clone(),
            Slot::SameAs(first) => match &slots[*first] {
                Slot::Answered(answer) => replay_of(answer),
                _ => Err(no_answer()),
            },
            Slot::Open => Err(no_answer()),
        })
        .collect();
    Ok(Step::Commit(answers))
}

/// What a duplicate of a request in the same batch answers: the first one's
/// outcome, as a replay.
fn replay_of(first: &Answer) -> Answer {
    match first {
        Ok(Reserved::Created(record)) => Ok(Reserved::Replayed(Outcome::Held {
            reservation: record.clone(),
        })),
        Ok(Reserved::Replayed(outcome)) => Ok(Reserved::Replayed(outcome.clone())),
        Err(refusal) => match Outcome::of_refusal(refusal) {
            Some(outcome) => Ok(Reserved::Replayed(outcome)),
            None => Err(refusal.clone()),
        },
    }
}

/// Claims every distinct idempotency key of the batch in one statement, in
/// key order (so two batches claiming overlapping keys cannot deadlock), and
/// answers the requests whose key an earlier transaction already holds. A
/// concurrent transaction holding a key makes the claim wait for its
/// outcome: committed → its answer is replayed; rolled back → the key is ours.
async fn claim_keys(
    tx: &mut PgConnection,
    requests: &[ReservationRequest],
) -> Result<Vec<Slot>, StoreError> {
    let mut first_with_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut slots: Vec<Slot> = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let Some(idem) = &request.idempotency else {
            slots.push(Slot::Open);
            continue;
        };
        let scoped = (request.owner.as_str(), idem.key.as_str());
        slots.push(match first_with_key.get(&scoped) {
            None => {
                first_with_key.insert(scoped, i);
                Slot::Open
            }
            Some(&first)
                if requests[first].idempotency.as_ref().map(|f| &f.fingerprint)
                    == Some(&idem.fingerprint) =>
            {
                Slot::SameAs(first)
            }
            Some(_) => Slot::Answered(Err(StoreError::IdempotencyKeyReused)),
        });
    }
    if first_with_key.is_empty() {
        return Ok(slots);
    }
    let mut owners: Vec<((&str, &str), usize)> = first_with_key.into_iter().collect();
    owners.sort_unstable();
    let mut scopes = Vec::with_capacity(owners.len());
    let mut keys = Vec::with_capacity(owners.len());
    let mut fingerprints = Vec::with_capacity(owners.len());
    for &(_, i) in &owners {
        if let Some(idem) = &requests[i].idempotency {
            scopes.push(idempotency_scope(&requests[i].owner));
            keys.push(idem.key.clone());
            fingerprints.push(idem.fingerprint.clone());
        }
    }
    let claimed: BTreeSet<(String, String)> = sqlx::query!(
        "INSERT INTO idempotency_keys (scope, key, request, outcome)
         SELECT k.scope, k.key, k.request, 'null'
         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::JSONB[]) AS k(scope, key, request)
         ORDER BY k.scope, k.key
         ON CONFLICT (scope, key) DO NOTHING
         RETURNING scope, key",
        &scopes,
        &keys,
        &fingerprints,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.scope, row.key))
    .collect();
    if claimed.len() == keys.len() {
        return Ok(slots);
    }
    // Keys an earlier request holds: replay what it came to, if the body is the same.
    let (held_scopes, held_keys, held_fingerprints): (Vec<_>, Vec<_>, Vec<_>) = scopes
        .iter()
        .zip(&keys)
        .zip(&fingerprints)
        .filter(|((scope, key), _)| !claimed.contains(&((*scope).clone(), (*key).clone())))
        .map(|((scope, key), fingerprint)| (scope.clone(), key.clone(), fingerprint.clone()))
        .collect();
    let originals = sqlx::query!(
        r#"SELECT i.scope, i.key, i.request = k.request AS "same!", i.outcome
           FROM UNNEST($1::TEXT[], $2::TEXT[], $3::JSONB[]) AS k(scope, key, request)
           JOIN idempotency_keys i ON i.scope = k.scope AND i.key = k.key"#,
        &held_scopes,
        &held_keys,
        &held_fingerprints,
    )
    .fetch_all(&mut *tx)
    .await?;
    let first_of: HashMap<(String, String), usize> = owners
        .into_iter()
        .map(|((owner, key), i)| ((idempotency_scope(owner), key.to_owned()), i))
        .collect();
    for original in originals {
        let Some(&i) = first_of.get(&(original.scope, original.key)) else {
            continue;
        };
        slots[i] = Slot::Answered(if original.same {
            let outcome = serde_json::from_value(original.outcome).map_err(|error| {
                StoreError::Database(Arc::new(sqlx::Error::Decode(
                    format!("an idempotency record holds no outcome: {error}").into(),
                )))
            })?;
            Ok(Reserved::Replayed(outcome))
        } else {
            Err(StoreError::IdempotencyKeyReused)
        });
    }
    Ok(slots)
}

/// Records, with each claimed key, what its request came to, in one statement.
async fn record_outcomes(
    tx: &mut PgConnection,
    requests: &[ReservationRequest],
    slots: &[Slot],
) -> Result<(), StoreError> {
    let mut scopes = Vec::new();
    let mut keys = Vec::new();
    let mut outcomes = Vec::new();
    for (request, slot) in requests.iter().zip(slots) {
        let (Some(idem), Slot::Answered(answer)) = (&request.idempotency, slot) else {
            continue;
        };
        let outcome = match answer {
            Ok(Reserved::Created(record)) => Outcome::Held {
                reservation: record.clone(),
            },
            // A replay or a reused key: the record is someone else's.
            Ok(Reserved::Replayed(_)) => continue,
            Err(refusal) => match Outcome::of_refusal(refusal) {
                Some(outcome) => outcome,
                None => continue,
            },
        };
        scopes.push(idempotency_scope(&request.owner));
        keys.push(idem.key.clone());
        outcomes.push(
            serde_json::to_value(&outcome).map_err(|error| {
                StoreError::Database(Arc::new(sqlx::Error::Encode(error.into())))
            })?,
        );
    }
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE idempotency_keys i SET outcome = o.outcome
         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::JSONB[]) AS o(scope, key, outcome)
         WHERE i.scope = o.scope AND i.key = o.key",
        &scopes,
        &keys,
        &outcomes,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes the holds of the granted requests, their lines and their ledger
/// rows in one statement; returns their records in the same order.
async fn insert_holds(
    tx: &mut PgConnection,
    granted: &[usize],
    requests: &[ReservationRequest],
) -> Result<Vec<ReservationRecord>, StoreError> {
    if granted.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = granted.iter().map(|_| Uuid::now_v7()).collect();
    let ttls: Vec<f64> = granted
        .iter()
        .map(|&i| requests[i].reservation.ttl_seconds as f64)
        .collect();
    let owners: Vec<String> = granted.iter().map(|&i| requests[i].owner.clone()).collect();
    let (mut line_ids, mut skus, mut quantities) = (Vec::new(), Vec::new(), Vec::new());
    for (&i, id) in granted.iter().zip(&ids) {
        let lines = &requests[i].reservation.lines;
        line_ids.extend(std::iter::repeat_n(*id, lines.len()));
        skus.extend(lines.skus());
        quantities.extend(lines.quantities());
    }
    let inserted = sqlx::query!(
        r#"WITH holds AS (
               INSERT INTO reservations (id, status, expires_at, owner)
               SELECT h.id, 'held', now() + make_interval(secs => h.ttl), h.owner
               FROM UNNEST($1::UUID[], $2::FLOAT8[], $6::TEXT[]) AS h(id, ttl, owner)
               RETURNING id, created_at, expires_at
           ), lines AS (
               INSERT INTO reservation_items (reservation_id, sku, quantity)
               SELECT l.id, l.sku, l.quantity
               FROM UNNEST($3::UUID[], $4::TEXT[], $5::BIGINT[]) AS l(id, sku, quantity)
           ), ledger AS (
               INSERT INTO stock_ledger (sku, kind, quantity, reservation_id)
               SELECT l.sku, 'reserved', l.quantity, l.id
               FROM UNNEST($3::UUID[], $4::TEXT[], $5::BIGINT[]) AS l(id, sku, quantity)
           )
           SELECT id AS "id!", created_at AS "created_at!", expires_at AS "expires_at!" FROM holds"#,
        &ids,
        &ttls,
        &line_ids,
        &skus,
        &quantities,
        &owners,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut times: HashMap<Uuid, _> = inserted
        .into_iter()
        .map(|row| (row.id, (row.created_at, row.expires_at)))
        .collect();
    granted
        .iter()
        .zip(ids)
        .map(|(&i, id)| {
            let (created_at, expires_at) = times.remove(&id).ok_or_else(no_answer)?;
            let lines = &requests[i].reservation.lines;
            Ok(ReservationRecord {
                id,
                status: ReservationStatus::Held,
                items: lines
                    .skus()
                    .into_iter()
                    .zip(lines.quantities())
                    .map(|(sku, quantity)| HeldItem { sku, quantity })
                    .collect(),
                created_at,
                expires_at,
            })
        })
        .collect()
}
