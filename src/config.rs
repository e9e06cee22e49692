//! Command-line and environment settings shared by the binaries (`clap` argument groups).
//!
//! Flags override environment variables, which override the defaults (the docker-compose
//! services). Library types never see `clap`: binaries turn these into library configs.

use clap::Args;

/// Default Redis: the docker-compose service.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default Postgres: the docker-compose service.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:secret@127.0.0.1:5432/inventory";

/// Where Redis is.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://` or `rediss://` for TLS; user and password may be in the URL).
    #[arg(long = "redis-url", env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
}

/// Where Postgres is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL.
    #[arg(long = "database-url", env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

impl DatabaseArgs {
    /// Opens a pool of up to `max_connections` and applies the migrations (safe when several
    /// processes start at once); errors name the database with its password masked.
    pub async fn open_store(
        &self,
        max_connections: u32,
    ) -> anyhow::Result<crate::store::OrderStore> {
        use anyhow::Context;
        let store = crate::store::OrderStore::connect_lazy(&self.database_url, max_connections)
            .with_context(|| format!("configuring Postgres at {}", mask_url(&self.database_url)))?;
        store
            .migrate()
            .await
            .with_context(|| format!("migrating Postgres at {}", mask_url(&self.database_url)))?;
        Ok(store)
    }
}

/// A URL with its password replaced by `***`, for logs and error messages.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(mask_url("::"), "<unparsable URL>");
    }
}
