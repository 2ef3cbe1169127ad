//! Reading a reservation, and ending a hold: confirm (held → sold) and cancel
//! (held → available). A hold found past its expiry is released as expired.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use super::expiry::release_holds;
use super::retry::{Step, in_transaction};
use super::{HeldItem, PgStore, ReservationRecord, lock_products_of};
use crate::domain::ReservationStatus;

impl PgStore {
    /// Reads `owner`'s reservation; a hold past its expiry reads as
    /// `expired`. Someone else's reads as not found. Takes no lock.
    #[tracing::instrument(skip(self))]
    pub async fn reservation(
        &self,
        id: Uuid,
        owner: &str,
    ) -> Result<ReservationRecord, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_reservation(&mut conn, id, owner, false)
            .await?
            .map(|(record, _)| record)
            .ok_or_else(|| StoreError::ReservationNotFound(id.to_string()))
    }

    /// Held → confirmed: the held stock becomes sold. Confirming a confirmed
    /// reservation answers it again; a cancelled or expired one is a conflict.
    #[tracing::instrument(skip(self))]
    pub async fn confirm(&self, id: Uuid, owner: &str) -> Result<ReservationRecord, StoreError> {
        self.finish(id, owner, Finish::Confirm).await
    }

    /// Held → cancelled: the held stock goes back to available. Cancelling a
    /// cancelled reservation answers it again; a confirmed or expired one is a conflict.
    #[tracing::instrument(skip(self))]
    pub async fn cancel(&self, id: Uuid, owner: &str) -> Result<ReservationRecord, StoreError> {
        self.finish(id, owner, Finish::Cancel).await
    }

    /// Ends `owner`'s reservation; someone else's is not found.
    async fn finish(
        &self,
        id: Uuid,
        owner: &str,
        finish: Finish,
    ) -> Result<ReservationRecord, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let operation = finish.action();
        in_transaction!(&mut conn, &self.settings.retry, operation, |tx| {
            finish_once(tx, id, owner, finish)
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Finish {
    Confirm,
    Cancel,
}

impl Finish {
    fn action(self) -> &'static str {
        match self {
            Self::Confirm => "confirmed",
            Self::Cancel => "cancelled",
        }
    }

    fn target(self) -> ReservationStatus {
        match self {
            Self::Confirm => ReservationStatus::Confirmed,
            Self::Cancel => ReservationStatus::Cancelled,
        }
    }
}

/// One run of a confirm or cancel: lock the reservation row, then (in sku
/// order) its products. A hold found past its expiry is released as expired
/// here and now, and the request is refused: the answer and the database agree.
async fn finish_once(
    tx: &mut PgConnection,
    id: Uuid,
    owner: &str,
    finish: Finish,
) -> Result<Step<Result<ReservationRecord, StoreError>>, StoreError> {
    let Some((record, due)) = load_reservation(tx, id, owner, true).await? else {
        return Err(StoreError::ReservationNotFound(id.to_string()));
    };
    if due {
        release_holds(tx, &[id], "expired").await?;
    }
    if record.status == finish.target() {
        return Ok(Step::Commit(Ok(record)));
    }
    if record.status != ReservationStatus::Held {
        return Ok(Step::Commit(Err(StoreError::ReservationState {
            status: record.status,
            action: finish.action(),
        })));
    }
    match finish {
        Finish::Confirm => sell_hold(tx, id).await?,
        Finish::Cancel => release_holds(tx, &[id], "cancelled").await?,
    }
    Ok(Step::Commit(Ok(ReservationRecord {
        status: finish.target(),
        ..record
    })))
}

/// Moves a locked hold's stock from reserved to sold: products locked in sku
/// order, then one statement per step.
async fn sell_hold(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    lock_products_of(tx, &[id]).await?;
    sqlx::query!(
        "UPDATE products p
         SET reserved = p.reserved - i.quantity, sold = p.sold + i.quantity,
             version = p.version + 1, updated_at = now()
         FROM reservation_items i
         WHERE i.reservation_id = $1 AND p.sku = i.sku",
        id,
    )
    .execute(&mut *tx)
    .await?;
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

/// Loads a reservation and its lines; `lock` takes the row lock first. The
/// flag says whether it is a hold past its expiry that nobody has released yet
/// (it reads as `expired`).
async fn load_reservation(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
    lock: bool,
) -> Result<Option<(ReservationRecord, bool)>, sqlx::Error> {
    let head = if lock {
        sqlx::query_as!(
            ReservationHead,
            r#"SELECT status, created_at, expires_at, expires_at <= now() AS "past_expiry!"
               FROM reservations WHERE id = $1 AND owner = $2 FOR UPDATE"#,
            id,
            owner,
        )
        .fetch_optional(&mut *conn)
        .await?
    } else {
        sqlx::query_as!(
            ReservationHead,
            r#"SELECT status, created_at, expires_at, expires_at <= now() AS "past_expiry!"
               FROM reservations WHERE id = $1 AND owner = $2"#,
            id,
            owner,
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
    let due = status == ReservationStatus::Held && head.past_expiry;
    if due {
        status = ReservationStatus::Expired;
    }
    let items = sqlx::query!(
        "SELECT sku, quantity FROM reservation_items WHERE reservation_id = $1 ORDER BY sku",
        id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let record = ReservationRecord {
        id,
        status,
        items: items
            .into_iter()
            .map(|line| HeldItem {
                sku: line.sku,
                quantity: line.quantity,
            })
            .collect(),
        created_at: head.created_at,
        expires_at: head.expires_at,
    };
    Ok(Some((record, due)))
}

/// The `reservations` row, and whether it is past its expiry by the database's clock.
struct ReservationHead {
    status: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    past_expiry: bool,
}
