//! Reading `INFO commandstats`: what the server ran, per command, scripts' inner calls included.
#![allow(dead_code, unreachable_pub)]

/// One `cmdstat_<name>:calls=N,usec=U,...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandStat {
    /// The command (`evalsha`, `set`, `config|resetstat`, ...).
    pub name: String,
    /// How many times it ran.
    pub calls: u64,
    /// Server CPU time it took, µs (an `EVALSHA`'s includes what its script ran).
    pub usec: u64,
}

/// Asks the server behind `conn` for `INFO commandstats` (that call counts itself) and parses it.
pub async fn read(conn: &redis::aio::ConnectionManager) -> Vec<CommandStat> {
    let mut conn = conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO commandstats");
    parse(&info)
}

/// Every command line of an `INFO commandstats` reply.
pub fn parse(info: &str) -> Vec<CommandStat> {
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter_map(|line| {
            let (name, stats) = line.split_once(':')?;
            let field = |key: &str| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.parse::<f64>().ok())
                    .unwrap_or(0.0) as u64
            };
            Some(CommandStat {
                name: name.to_owned(),
                calls: field("calls="),
                usec: field("usec="),
            })
        })
        .collect()
}
