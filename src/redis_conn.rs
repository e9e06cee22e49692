//! The one place that builds Redis connections for the binaries.
//!
//! - [`connect`] returns the client (for dedicated connections: blocking pops, pub/sub) and one
//!   multiplexed, auto-reconnecting [`ConnectionManager`] that a process shares between its queue
//!   and its locks.
//! - When Redis does not answer, then the error comes back within a few seconds.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Opens the client and the shared connection for `url`.
pub async fn connect(url: &str) -> redis::RedisResult<(redis::Client, ConnectionManager)> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
    Ok((client, conn))
}
