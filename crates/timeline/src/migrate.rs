//! A small CQL migrator: versioned `.cql` files under `migrations/cassandra/`,
//! applied in order at start-up and recorded in a `schema_version` table.
//!
//! Each file's statements (separated by `;`, `--` comments ignored) run in
//! order, each followed by a wait for schema agreement, so the next statement
//! (and the statements prepared after migrating) see the new schema on every
//! node. A recorded version whose file changed since is an error: applied
//! migrations are immutable, changes go into a new file.
//!
//! Every statement is idempotent (`IF NOT EXISTS`, `IF EXISTS`, or an `ALTER`
//! setting options), so two processes migrating at once (an API and a worker
//! starting together) both succeed; the version row is an idempotent upsert.

use std::collections::HashMap;

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;

/// One migration file, embedded at compile time.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub cql: &'static str,
}

/// Every migration, in order. A new file gets a new line here (a unit test
/// checks the list matches the directory).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_timeline.cql",
        cql: include_str!("../../../migrations/cassandra/0001_timeline.cql"),
    },
    Migration {
        version: 2,
        name: "0002_outbox_buckets.cql",
        cql: include_str!("../../../migrations/cassandra/0002_outbox_buckets.cql"),
    },
    Migration {
        version: 3,
        name: "0003_timeline_time_windows.cql",
        cql: include_str!("../../../migrations/cassandra/0003_timeline_time_windows.cql"),
    },
    Migration {
        version: 4,
        name: "0004_post_idempotency.cql",
        cql: include_str!("../../../migrations/cassandra/0004_post_idempotency.cql"),
    },
    Migration {
        version: 5,
        name: "0005_outbox_relays.cql",
        cql: include_str!("../../../migrations/cassandra/0005_outbox_relays.cql"),
    },
];

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("keyspace name {0:?} must be 1-48 letters, digits or underscores")]
    BadKeyspace(String),
    #[error("running `{statement}`: {source}")]
    Statement {
        statement: String,
        source: Box<scylla::errors::ExecutionError>,
    },
    #[error("schema agreement: {0}")]
    Agreement(Box<scylla::errors::SchemaAgreementError>),
    #[error("using keyspace: {0}")]
    UseKeyspace(Box<scylla::errors::UseKeyspaceError>),
    #[error("reading applied versions: {0}")]
    Read(String),
    #[error("migration {version} ({name}) changed after it was applied")]
    Changed { version: i32, name: &'static str },
}

/// Creates `keyspace` if missing, switches `session` to it, and applies the
/// migrations it has not recorded yet. Returns the versions applied now.
pub async fn run(
    session: &Session,
    keyspace: &str,
    replication_factor: u16,
) -> Result<Vec<i32>, MigrateError> {
    let valid = !keyspace.is_empty()
        && keyspace.len() <= 48
        && keyspace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(MigrateError::BadKeyspace(keyspace.to_owned()));
    }
    ddl(
        session,
        &format!(
            "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
             {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"
        ),
    )
    .await?;
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(|e| MigrateError::UseKeyspace(Box::new(e)))?;
    ddl(
        session,
        "CREATE TABLE IF NOT EXISTS schema_version (\
         version int PRIMARY KEY, name text, checksum text, applied_at timestamp)",
    )
    .await?;

    let applied = applied_versions(session).await?;
    let mut now_applied = Vec::new();
    for migration in MIGRATIONS {
        let checksum = checksum(migration.cql);
        if let Some(recorded) = applied.get(&migration.version) {
            if *recorded != checksum {
                return Err(MigrateError::Changed {
                    version: migration.version,
                    name: migration.name,
                });
            }
            continue;
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying CQL migration"
        );
        for statement in statements(migration.cql) {
            ddl(session, &statement).await?;
        }
        let mut record = Statement::new(
            "INSERT INTO schema_version (version, name, checksum, applied_at) \
             VALUES (?, ?, ?, toTimestamp(now()))",
        );
        record.set_consistency(Consistency::Quorum);
        session
            .query_unpaged(record, (migration.version, migration.name, &checksum))
            .await
            .map_err(|source| MigrateError::Statement {
                statement: "INSERT INTO schema_version".into(),
                source: Box::new(source),
            })?;
        now_applied.push(migration.version);
    }
    Ok(now_applied)
}

async fn ddl(session: &Session, cql: &str) -> Result<(), MigrateError> {
    session
        .query_unpaged(cql, ())
        .await
        .map_err(|source| MigrateError::Statement {
            statement: first_line(cql),
            source: Box::new(source),
        })?;
    session
        .await_schema_agreement()
        .await
        .map_err(|e| MigrateError::Agreement(Box::new(e)))?;
    Ok(())
}

async fn applied_versions(session: &Session) -> Result<HashMap<i32, String>, MigrateError> {
    let mut read = Statement::new("SELECT version, checksum FROM schema_version");
    read.set_consistency(Consistency::Quorum);
    let rows = session
        .query_unpaged(read, ())
        .await
        .map_err(|e| MigrateError::Read(e.to_string()))?
        .into_rows_result()
        .map_err(|e| MigrateError::Read(e.to_string()))?;
    rows.rows::<(i32, Option<String>)>()
        .map_err(|e| MigrateError::Read(e.to_string()))?
        .map(|row| {
            row.map(|(v, c)| (v, c.unwrap_or_default()))
                .map_err(|e| MigrateError::Read(e.to_string()))
        })
        .collect()
}

/// The statements of a file: `--` comment lines dropped, split on `;`.
pub fn statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// FNV-1a of the file text, hex: detects an applied file that was edited.
fn checksum(text: &str) -> String {
    let mut hasher = fnv::FnvHasher::default();
    std::hash::Hasher::write(&mut hasher, text.as_bytes());
    format!("{:016x}", std::hash::Hasher::finish(&hasher))
}

fn first_line(cql: &str) -> String {
    cql.lines().next().unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_fnv1a_64_as_recorded_by_earlier_builds() {
        // Applied migrations are recorded with this checksum: it must never change.
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn splits_statements_and_drops_comments() {
        let parsed = statements(
            "-- a comment; with a semicolon\nCREATE TABLE a (x int);\n\n-- b\nCREATE TABLE b (y int);\n",
        );
        assert_eq!(parsed, ["CREATE TABLE a (x int)", "CREATE TABLE b (y int)"]);
    }

    #[test]
    fn every_file_in_the_directory_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/cassandra");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations directory")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".cql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i32::try_from(i + 1).expect("small"));
            assert!(!statements(migration.cql).is_empty());
        }
    }
}
