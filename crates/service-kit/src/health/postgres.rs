use sqlx::PgPool;

use super::{CheckFuture, ReadinessCheck};

/// PostgreSQL answers a query through the service's own pool.
///
/// Going through the pool (rather than a fresh connection) also notices a pool
/// that cannot hand out connections, which is what requests would hit.
#[derive(Debug, Clone)]
pub struct PostgresCheck {
    pool: PgPool,
}

impl PostgresCheck {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl ReadinessCheck for PostgresCheck {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}
