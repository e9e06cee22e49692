//! Command-line and environment settings shared by the binaries: one `clap` argument group per
//! thing the binaries connect to, flattened into each binary's own arguments with
//! `#[command(flatten)]`.
//!
//! | group | flags (env) | flattened by |
//! |---|---|---|
//! | [`RedisArgs`] | `--redis-url` (`REDIS_URL`) | every binary |
//! | [`DatabaseArgs`] | `--database-url` (`DATABASE_URL`) | `worker`, `api`, `lockctl` (Postgres commands) |
//! | [`QueueArgs`] | `--queue-key` (`QUEUE_KEY`), `--dead-key` (`DEAD_KEY`), `--queue-shards` (`QUEUE_SHARDS`) | `producer`, `worker`, `api`, `lockctl status`/`dead-letters` |
//! | [`LockPrefixArgs`] | `--lock-prefix` (`LOCK_PREFIX`) | inside [`LockArgs`]; `lockctl status`/`dead-letters` |
//! | [`LockArgs`] | the prefix, `--lock-redis-urls` (`LOCK_REDIS_URLS`), `--lock-ttl-ms` | `worker`, `api` |
//! | [`LogArgs`] | `--log-format` (`LOG_FORMAT`) | every binary |
//! | [`WaitArgs`] | `--wait-for-services` (`WAIT_FOR_SERVICES`) | `worker`, `api` |
//!
//! - When a flag is given, then it wins over its environment variable, which wins over the
//!   default (the docker-compose services, and the key names every binary shares).
//! - When two binaries flatten the same group, then the flag and its variable mean the same in
//!   both: a producer and a worker started with the same `QUEUE_KEY` use the same list.
//! - Library types never see `clap`: the groups turn themselves into library configs
//!   ([`QueueArgs::queue_config`], [`LockArgs::lock_config`], [`LogArgs::format`]).

use std::{sync::Arc, time::Duration};

use clap::{Args, builder::PossibleValuesParser};
use lockstock_lock::{LockConfig, LockError, LockOwner};

use crate::{lock_history::HistoryObserver, queue::QueueConfig, telemetry::LogFormat};

/// Default Redis: the docker-compose service.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default Postgres: the docker-compose service.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:secret@127.0.0.1:5432/inventory";
/// Default pending list: where producers push and workers reserve.
pub const DEFAULT_QUEUE_KEY: &str = "orders:pending";
/// Default dead letter list.
pub const DEFAULT_DEAD_KEY: &str = "orders:dead";
/// Default prefix of the lock keys.
pub const DEFAULT_LOCK_PREFIX: &str = "lockstock";

/// Where Redis is (the queue's Redis, and the locks' unless `LOCK_REDIS_URLS` says otherwise).
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://` or `rediss://` for TLS; user and password may be in the URL).
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true, default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
}

/// Where Postgres is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// Which lists on Redis make up the order queue: the producer's, the workers', the API's and
/// `lockctl`'s must agree.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// The pending list (producers push, workers reserve).
    #[arg(long, env = "QUEUE_KEY", default_value = DEFAULT_QUEUE_KEY)]
    pub queue_key: String,
    /// The dead letter list (messages no worker can decode).
    #[arg(long, env = "DEAD_KEY", default_value = DEFAULT_DEAD_KEY)]
    pub dead_key: String,
    /// Spread the pending list over this many lists, on different Redis Cluster slots
    /// (producers, workers, the API and `lockctl` must agree). 1: one list, keys as named.
    #[arg(long, env = "QUEUE_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub queue_shards: u16,
}

impl QueueArgs {
    /// The queue's library config for consumer `worker_id` (producers and inspectors name
    /// themselves; they never consume).
    pub fn queue_config(&self, worker_id: impl Into<String>) -> QueueConfig {
        QueueConfig {
            shards: usize::from(self.queue_shards),
            ..QueueConfig::default()
        }
        .with_pending_key(self.queue_key.clone())
        .with_dead_key(self.dead_key.clone())
        .with_worker_id(worker_id)
    }
}

/// The lock key space: processes that lock the same products must agree on it.
#[derive(Debug, Clone, Args)]
pub struct LockPrefixArgs {
    /// Prefix of the lock keys (the workers' and the API's must match).
    #[arg(long, env = "LOCK_PREFIX", default_value = DEFAULT_LOCK_PREFIX)]
    pub lock_prefix: String,
}

/// Where and how product locks are taken.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// The lock key space.
    #[command(flatten)]
    pub prefix: LockPrefixArgs,
    /// Take product locks with Redlock over these independent Redis masters: comma-separated,
    /// an odd number of at least 3 (e.g. `redis://a:6379,redis://b:6379,redis://c:6379`). One
    /// URL: the single-instance lock on that server. Unset: the lock on `--redis-url`. The queue
    /// always stays on `--redis-url`.
    #[arg(
        long,
        env = "LOCK_REDIS_URLS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub lock_redis_urls: Vec<String>,
    /// Product lock TTL in milliseconds (extended by a heartbeat while held).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(3..))]
    pub lock_ttl_ms: u64,
    /// UNSAFE, test-only (`lockctl chaos` self-test): keep stale hand-offs (the lock crate's
    /// `LockConfig::unsafe_keep_stale_handoffs`).
    #[arg(long, hide = true)]
    pub chaos_unsafe_keep_stale_handoffs: bool,
    /// Test-only (`lockctl chaos`): log every mutex grant, extension, release, hand-off and loss
    /// as a `history` event (`crate::lock_history`).
    #[arg(long, hide = true)]
    pub chaos_history: bool,
}

impl LockArgs {
    /// The lock servers named by `--lock-redis-urls`, trimmed, blanks dropped (empty: the locks
    /// live on `--redis-url`).
    pub fn lock_servers(&self) -> Vec<&str> {
        self.lock_redis_urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The product lock TTL.
    pub fn lock_ttl(&self) -> Duration {
        Duration::from_millis(self.lock_ttl_ms)
    }

    /// The lock library's config under the prefix, recording `owner` beside every lock held.
    ///
    /// - When the prefix is not a valid key prefix, then the lock library's error.
    pub fn lock_config(&self, owner: LockOwner) -> Result<LockConfig, LockError> {
        let mut config = self.prefix.lock_config(owner)?;
        config.unsafe_keep_stale_handoffs = self.chaos_unsafe_keep_stale_handoffs;
        if self.chaos_history {
            config = config.with_observer(Arc::new(HistoryObserver::new()));
        }
        Ok(config)
    }
}

impl LockPrefixArgs {
    /// The lock library's config under the prefix, recording `owner` beside every lock held.
    ///
    /// - When the prefix is not a valid key prefix, then the lock library's error.
    pub fn lock_config(&self, owner: LockOwner) -> Result<LockConfig, LockError> {
        Ok(LockConfig::default()
            .with_prefix(self.lock_prefix.clone())?
            .with_owner(owner))
    }
}

/// How long a long-running binary waits for Redis and Postgres to answer at start.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Give up (exit 1) when the stores have not answered within this long at start, e.g.
    /// `30s`, `500ms`, `2m` (default: wait indefinitely, retrying with back-off and logging each
    /// attempt's cause).
    #[arg(long, env = "WAIT_FOR_SERVICES", value_parser = parse_duration)]
    pub wait_for_services: Option<Duration>,
}

/// Parses `250ms`, `30s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// How the process logs.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format on stderr: `text` for people, `json` for one JSON object per line (log
    /// shippers). Filter with `RUST_LOG`.
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "text",
        global = true,
        value_parser = PossibleValuesParser::new(["text", "json"])
    )]
    pub log_format: String,
}

impl LogArgs {
    /// The chosen format (clap has already refused anything but `text` and `json`).
    pub fn format(&self) -> LogFormat {
        if self.log_format == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// A URL with its password replaced by `***`, for logs and error messages; query parameters
/// whose name contains `password`, `token` or `secret` (`?password=`, `?sslpassword=`) too.
pub fn mask_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable URL>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |key: &str| {
        let key = key.to_ascii_lowercase();
        key.contains("password") || key.contains("token") || key.contains("secret")
    };
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(key, value)| {
            let value = if secret(&key) { "***".into() } else { value };
            (key.into_owned(), value.into_owned())
        })
        .collect();
    if pairs.iter().any(|(key, _)| secret(key)) {
        parsed.query_pairs_mut().clear().extend_pairs(&pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 days").is_err());
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(mask_url("::"), "<unparsable URL>");
        assert_eq!(
            mask_url("postgres://h/db?user=u&password=hunter2&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            mask_url("redis://h:6379/?PASSWORD=hunter2"),
            "redis://h:6379/?PASSWORD=***"
        );
    }

    #[derive(Debug, Parser)]
    struct Every {
        #[command(flatten)]
        queue: QueueArgs,
        #[command(flatten)]
        locks: LockArgs,
        #[command(flatten)]
        log: LogArgs,
    }

    /// The groups keep the flag names and defaults the binaries have always had, and the lock
    /// servers list drops blanks.
    #[test]
    fn groups_keep_their_flags_and_defaults() {
        let every = Every::try_parse_from([
            "x",
            "--lock-redis-urls",
            " redis://a:1 ,,redis://b:2",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(every.queue.queue_key, DEFAULT_QUEUE_KEY);
        assert_eq!(every.queue.dead_key, DEFAULT_DEAD_KEY);
        assert_eq!(every.locks.prefix.lock_prefix, DEFAULT_LOCK_PREFIX);
        assert_eq!(every.locks.lock_ttl(), Duration::from_secs(10));
        assert_eq!(
            every.locks.lock_servers(),
            vec!["redis://a:1", "redis://b:2"]
        );
        assert_eq!(every.log.format(), LogFormat::Json);
        let config = every.queue.queue_config("w1");
        assert_eq!(config.pending_key, DEFAULT_QUEUE_KEY);
        assert_eq!(config.worker_id, "w1");
        assert!(Every::try_parse_from(["x", "--log-format", "xml"]).is_err());
        assert!(Every::try_parse_from(["x", "--lock-ttl-ms", "2"]).is_err());
    }
}
