//! What a store operation can fail with, and which failures mean the cluster
//! cannot serve now (a `503`, a retry) rather than a mistake.

use super::*;

/// Why a store operation failed. Driver text stays in the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is still being set up (connect, migrate, prepare).
    #[error("the timeline store is not connected or migrated yet")]
    NotReady,
    #[error("connecting to Cassandra: {0}")]
    Connect(Box<scylla::errors::NewSessionError>),
    #[error("migrating: {0}")]
    Migrate(Box<migrate::MigrateError>),
    #[error("preparing `{statement}`: {source}")]
    Prepare {
        statement: &'static str,
        source: Box<scylla::errors::PrepareError>,
    },
    #[error("executing a statement: {0}")]
    Execute(Box<ExecutionError>),
    #[error("reading rows: {0}")]
    Rows(String),
    /// The cluster rejected, as a malformed or invalid request, a query that
    /// resumed from a client's cursor: the cursor's paging state was tampered
    /// with (or is from another schema). Any other failure of such a query is
    /// the cluster's, and stays an [`StoreError::Execute`].
    #[error("the cluster refused a paging state from a cursor: {0}")]
    BadPagingState(Box<ExecutionError>),
}

impl From<scylla::errors::NewSessionError> for StoreError {
    fn from(error: scylla::errors::NewSessionError) -> Self {
        Self::Connect(Box::new(error))
    }
}

impl From<migrate::MigrateError> for StoreError {
    fn from(error: migrate::MigrateError) -> Self {
        Self::Migrate(Box::new(error))
    }
}

impl From<ExecutionError> for StoreError {
    fn from(error: ExecutionError) -> Self {
        Self::Execute(Box::new(error))
    }
}

impl StoreError {
    /// Whether the cluster refused the request itself or its data could not be
    /// read (an invalid statement or value, rows of an unexpected shape): the
    /// same request will fail the same way, so retrying it cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Rows(_) => true,
            Self::Execute(error) => matches!(
                **error,
                ExecutionError::LastAttemptError(RequestAttemptError::DbError(
                    DbError::Invalid | DbError::SyntaxError | DbError::Unauthorized,
                    _
                ))
            ),
            _ => false,
        }
    }

    /// Whether the cluster is (temporarily) unable to serve: worth a `503` and a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::NotReady | Self::Connect(_) => true,
            Self::Execute(error) => error_is_unavailable(error),
            _ => false,
        }
    }
}

pub(super) fn error_is_unavailable(error: &ExecutionError) -> bool {
    match error {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
            ),
            _ => false,
        },
        _ => false,
    }
}

/// The error of a query that resumed from `client_state` (a paging state a
/// client sent back in a cursor).
///
/// Only a rejection of the request itself is the client's fault: the
/// coordinator answers a paging state it cannot decode with a protocol error
/// ("Invalid value for the paging state"), or with an invalid-request error.
/// Everything else — a replica timing out or unavailable, a read failure, a
/// server error — would have failed the first page just the same, and stays a
/// store error (`503` or `500`), never a bad cursor.
///
/// Cursors are not signed: the paging state only moves within the partition
/// the query names, which the path already picked and anyone may read, so a
/// forged one can reach nothing a genuine one could not. It only has to be
/// told apart from a server fault.
pub(super) fn resumed_query_error(error: ExecutionError, client_state: bool) -> StoreError {
    if client_state && rejects_the_request(&error) {
        StoreError::BadPagingState(Box::new(error))
    } else {
        StoreError::from(error)
    }
}

/// Whether the cluster refused the request as malformed or invalid (as
/// opposed to failing to serve it).
pub(super) fn rejects_the_request(error: &ExecutionError) -> bool {
    matches!(
        error,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::ProtocolError | DbError::Invalid,
            _
        ))
    )
}

pub(super) fn rows_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Rows(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(db: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            db,
            "from the cluster".into(),
        ))
    }

    fn read_timeout() -> DbError {
        DbError::ReadTimeout {
            consistency: Consistency::Quorum,
            received: 1,
            required: 2,
            data_present: false,
        }
    }

    fn unavailable() -> DbError {
        DbError::Unavailable {
            consistency: Consistency::Quorum,
            required: 2,
            alive: 1,
        }
    }

    #[test]
    fn only_a_rejected_request_is_a_bad_paging_state() {
        for db in [DbError::ProtocolError, DbError::Invalid] {
            let error = resumed_query_error(refused(db.clone()), true);
            assert!(matches!(error, StoreError::BadPagingState(_)), "{db:?}");
            // The same error on a first page is the service's own.
            let error = resumed_query_error(refused(db.clone()), false);
            assert!(matches!(error, StoreError::Execute(_)), "{db:?}");
        }
    }

    #[test]
    fn a_resumed_query_the_cluster_cannot_serve_stays_unavailable() {
        let failures = [
            refused(read_timeout()),
            refused(unavailable()),
            refused(DbError::Overloaded),
            refused(DbError::IsBootstrapping),
            ExecutionError::RequestTimeout(Duration::from_secs(5)),
            ExecutionError::EmptyPlan,
        ];
        for failure in failures {
            let error = resumed_query_error(failure, true);
            assert!(matches!(error, StoreError::Execute(_)), "{error}");
            assert!(error.is_unavailable(), "{error}");
        }
    }

    #[test]
    fn only_a_refused_request_or_unreadable_rows_are_permanent() {
        let invalid = StoreError::from(refused(DbError::Invalid));
        assert!(invalid.is_permanent() && !invalid.is_unavailable());
        assert!(StoreError::Rows("a column of another type".into()).is_permanent());
        for transient in [read_timeout(), unavailable()] {
            let error = StoreError::from(refused(transient));
            assert!(!error.is_permanent(), "{error}");
        }
    }

    #[test]
    fn other_failures_of_a_resumed_query_are_not_the_clients() {
        let failures = [
            DbError::ServerError,
            DbError::ReadFailure {
                consistency: Consistency::One,
                received: 0,
                required: 1,
                numfailures: 1,
                data_present: false,
            },
            DbError::Unauthorized,
            DbError::Other(0x1234),
        ];
        for db in failures {
            let error = resumed_query_error(refused(db), true);
            assert!(matches!(error, StoreError::Execute(_)), "{error}");
            assert!(!error.is_unavailable(), "{error}");
        }
    }
}
