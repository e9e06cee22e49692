//! Which schema this build needs, and migrating without breaking older or newer builds.
//!
//! - When [`check_schema`] finds every migration this build embeds applied, then `Ok`, whatever
//!   newer migrations (from a newer build) are applied too: during a rolling upgrade the old
//!   binaries keep running on the new schema (migrations only ever add).
//! - When a migration this build needs is missing (or failed half-way), then
//!   [`StoreError::SchemaBehind`] naming the missing versions: run `lockctl migrate` (or start one
//!   binary with `--migrate`).
//! - When [`super::migrate`] runs against a database that already has migrations this build does
//!   not know, then it applies its own missing ones and leaves the others alone (sqlx's
//!   `ignore_missing`), instead of refusing to start.

use std::collections::BTreeSet;

use sqlx::{PgPool, migrate::Migrator};

use super::{MIGRATOR, Result, StoreError};

/// The embedded migrations, tolerant of applied migrations it does not know.
pub(super) fn tolerant_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!();
    migrator.set_ignore_missing(true);
    migrator
}

/// Checks that every migration this build embeds is applied (see the module docs).
pub async fn check_schema(pool: &PgPool) -> Result<()> {
    // language=PostgreSQL
    let applied: Vec<(i64,)> =
        match sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            // 42P01 undefined_table: never migrated at all.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => {
                Vec::new()
            }
            Err(error) => return Err(error.into()),
        };
    let applied: BTreeSet<i64> = applied.into_iter().map(|(version,)| version).collect();
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|migration| !applied.contains(&migration.version))
        .map(|migration| format!("{} {}", migration.version, migration.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaBehind(missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Two migration files with one version would make every fresh database fail to migrate
    /// (the second insert into `_sqlx_migrations` collides): versions must be unique.
    #[test]
    fn migration_versions_are_unique() {
        let migrator = sqlx::migrate!();
        let mut seen = BTreeSet::new();
        for migration in migrator.iter() {
            assert!(
                seen.insert(migration.version),
                "two migrations share version {}",
                migration.version
            );
        }
    }
}
