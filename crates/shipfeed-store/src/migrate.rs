//! Schema versions. Each driver lists its migrations in order and applies them in its own
//! way (SQLite: `PRAGMA user_version`; PostgreSQL: a version table under a lock); which ones a
//! database still needs is decided here, once.

use crate::StoreError;

/// One step of a schema: the SQL that brings a database from the previous version to this one.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sql: &'static str,
}

/// The migrations a database at schema version `current` still needs, in order.
///
/// # Errors
/// [`StoreError::Config`] when `current` is newer than every migration this build knows: an
/// older shipfeed must not write into a schema it does not understand.
pub(crate) fn pending(
    current: i64,
    migrations: &'static [Migration],
) -> Result<&'static [Migration], StoreError> {
    let latest = migrations.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::Config(format!(
            "database schema version {current} is newer than this shipfeed knows ({latest})"
        )));
    }
    Ok(&migrations[migrations.partition_point(|m| m.version <= current)..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Migration] = &[
        Migration {
            version: 1,
            sql: "one",
        },
        Migration {
            version: 2,
            sql: "two",
        },
    ];

    #[test]
    fn a_database_gets_the_migrations_above_its_version() {
        let sql = |current| -> Vec<&str> {
            pending(current, ALL)
                .map(|m| m.iter().map(|m| m.sql).collect())
                .unwrap_or_default()
        };
        assert_eq!(sql(0), ["one", "two"]);
        assert_eq!(sql(1), ["two"]);
        assert!(sql(2).is_empty());
        let newer = pending(3, ALL)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(newer.contains("schema version 3 is newer"), "{newer}");
    }
}
