//! What a store operation can fail with: a refusal the caller can explain
//! (unknown sku, not enough stock, a stale version, a finished reservation),
//! contention that outlasted the retries, or the database itself. No HTTP here:
//! the API decides what each becomes.

use std::sync::Arc;

use crate::domain::{ReservationStatus, ShortItem};

/// Why a store operation did not happen. Cheap to clone: a batch of
/// coalesced reservations that fails as a whole gives each request the error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no product with sku '{0}'")]
    ProductNotFound(String),
    #[error("unknown skus: {0:?}")]
    UnknownSkus(Vec<String>),
    #[error("a product with sku '{0}' already exists")]
    DuplicateSku(String),
    #[error("If-Match does not match the current version {current_version}")]
    VersionMismatch { current_version: i64 },
    #[error("insufficient stock")]
    InsufficientStock(Vec<ShortItem>),
    #[error("no reservation with id '{0}'")]
    ReservationNotFound(String),
    #[error("reservation is {status:?}; it cannot be {action}")]
    ReservationState {
        status: ReservationStatus,
        action: &'static str,
    },
    #[error("Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("contention outlasted the retry budget of {attempts} attempts")]
    Contention { attempts: u32 },
    /// The database cannot serve now (unreachable, saturated, shutting down).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// A lock wait or a statement outlasted its timeout (`lock_timeout`,
    /// `statement_timeout`): a row is held elsewhere or the database is slow.
    #[error("database busy: {0}")]
    Busy(#[source] Arc<sqlx::Error>),
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            // Protocol: the peer is not speaking PostgreSQL, e.g. a proxy
            // (HAProxy in front of a cluster) with no primary to route to
            // during a failover closes the connection in the middle of its
            // start-up.
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::Protocol(_) => {
                Self::Unavailable(Arc::new(error))
            }
            // Class 08 (connection exception), 53300 (too many connections),
            // 57P01-03 (admin or crash shutdown, cannot connect now), 25006
            // (read-only transaction: the server became a standby under the
            // pool, as a deposed primary does during a failover): the
            // database cannot serve right now, which a retry may cure.
            E::Database(db)
                if db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(
                            code.as_ref(),
                            "53300" | "57P01" | "57P02" | "57P03" | "25006"
                        )
                }) =>
            {
                Self::Unavailable(Arc::new(error))
            }
            // 55P03 lock_not_available (lock_timeout), 57014 query_canceled
            // (statement_timeout): refused now so the connection is free again.
            E::Database(db) if matches!(db.code().as_deref(), Some("55P03" | "57014")) => {
                Self::Busy(Arc::new(error))
            }
            _ => Self::Database(Arc::new(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_stops_speaking_postgresql_is_unavailable() {
        let error = StoreError::from(sqlx::Error::Protocol(
            "unexpected response from SSLRequest: 0x00".into(),
        ));
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    }
}
