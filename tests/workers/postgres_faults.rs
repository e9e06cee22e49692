//! Postgres faults while Redis keeps answering: a worker cut off from Postgres releases its
//! product lock and gives its orders back within the outage limit, and resumes when Postgres
//! answers again.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::{
    helpers::{Env, order, wait_for},
    postgres_server::PostgresServer,
    tcp_proxy::TcpProxy,
};

/// The test database's URL, through `proxy`.
fn via(env: &Env, proxy: &TcpProxy) -> String {
    let mut url = url::Url::parse(&env.database_url).expect("database URL");
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(proxy.addr.port())).expect("port");
    url.to_string()
}

/// The Postgres server's address from the test database's URL.
async fn postgres_addr(env: &Env) -> std::net::SocketAddr {
    let url = url::Url::parse(&env.database_url).expect("database URL");
    let host = url.host_str().expect("host").to_owned();
    let port = url.port().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve Postgres")
        .next()
        .expect("an address")
}

/// Hole 4: a worker whose Postgres connections are black-holed (half-open: no error, no answer)
/// while Redis answers holds the product lock no longer than the outage limit (5 s by default),
/// gives its reserved orders back, takes no lock while cut off, and resumes once Postgres
/// answers. A healthy worker decides the given-back orders meanwhile; every order is decided
/// exactly once.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_worker_cut_off_from_postgres_releases_its_lock_within_the_bound(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 1_000).await;
    let proxy = TcpProxy::start(postgres_addr(&env).await).await;
    let cut_off_url = via(&env, &proxy);
    let cut_off = env.worker(
        "cut-off",
        &[
            "--database-url",
            &cut_off_url,
            "--work-ms",
            "50",
            "--batch-limit",
            "4",
        ],
    );
    let orders: Vec<_> = (0..60).map(|_| order(1, 1)).collect();
    env.push(&orders).await;
    env.wait_decided(3, Duration::from_secs(15)).await;
    wait_for(
        "the cut-off worker to hold the lock",
        Duration::from_secs(5),
        || async { env.lock_value(1).await.is_some() },
    )
    .await;

    proxy.black_hole();
    let cut = Instant::now();
    wait_for(
        "the lock to be released and the orders given back",
        Duration::from_secs(10),
        || async { env.lock_value(1).await.is_none() && env.reserved_by(&cut_off).await == 0 },
    )
    .await;
    let released = cut.elapsed();
    eprintln!("lock released and orders given back {released:?} after Postgres went silent");
    assert!(
        released <= Duration::from_millis(6_500),
        "held the lock {released:?} without Postgres (bound: 5 s outage limit + one 50 ms step)"
    );
    // While still cut off it takes no lock and reserves nothing.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(2) {
        assert!(
            env.lock_value(1).await.is_none(),
            "re-took the lock while cut off"
        );
        assert_eq!(
            env.reserved_by(&cut_off).await,
            0,
            "reserved orders while cut off"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cut_off.log().contains("Postgres unreachable"),
        "{}",
        cut_off.log()
    );

    let _healthy = env.worker("healthy", &["--work-ms", "50"]);
    wait_for(
        "the healthy worker to make progress",
        Duration::from_secs(15),
        || async { env.decided().await >= 40 },
    )
    .await;
    proxy.heal();
    env.wait_decided(60, Duration::from_secs(30)).await;
    wait_for(
        "the cut-off worker to resume",
        Duration::from_secs(15),
        || async { cut_off.log().contains("Postgres answers again") },
    )
    .await;
    assert_eq!(env.outcomes().await.len(), 60);
    assert_eq!(env.sold(1).await, 60);
    assert_eq!(env.stock(1).await, 940);
}

/// Postgres restarted mid-run (fast stop, 10 s down, start) on a throwaway cluster: the workers
/// keep running, hold no product lock once Postgres has been unreachable for the 5 s outage
/// limit, resume when it is back, and every order is decided exactly once.
#[tokio::test]
async fn workers_ride_out_a_postgres_restart_without_holding_locks() {
    let Some(postgres) = PostgresServer::plain() else {
        return;
    };
    let env = Env::on_server(&postgres).await;
    env.products(3, 1_000).await;
    let mut workers: Vec<_> = (0..2)
        .map(|i| env.worker(&format!("w{i}"), &["--work-ms", "20", "--batch-limit", "8"]))
        .collect();
    let orders: Vec<_> = (0..300).map(|i| order(1 + i % 3, 1)).collect();
    env.push(&orders).await;
    env.wait_decided(30, Duration::from_secs(30)).await;

    postgres.stop();
    let down = Instant::now();
    wait_for(
        "every product lock to be released",
        Duration::from_secs(10),
        || async { env.held_locks().await.is_empty() },
    )
    .await;
    let released = down.elapsed();
    eprintln!("no product lock held {released:?} after Postgres stopped");
    assert!(
        released <= Duration::from_millis(5_500),
        "locks held {released:?} without Postgres (bound: the 5 s outage limit)"
    );
    while down.elapsed() < Duration::from_secs(10) {
        assert!(
            env.held_locks().await.is_empty(),
            "a lock was taken while Postgres was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for worker in &mut workers {
        assert!(worker.is_running(), "a worker exited: {}", worker.log());
    }
    postgres.start();

    env.wait_decided(300, Duration::from_secs(60)).await;
    assert_eq!(env.outcomes().await.len(), 300);
    for product in 1..=3 {
        assert_eq!(env.sold(product).await, 100, "product {product}");
        assert_eq!(env.stock(product).await, 900, "product {product}");
    }
}

/// Too many clients: three workers whose default pools (concurrency 16 + 2 = 18 connections
/// each) together want far more than the server's `max_connections = 20`. The system slows down
/// but no product lock is held while a worker waits for a connection beyond the pool's 1 s
/// acquire timeout (a retry under the lock would hold it for the 5 s outage limit), and every
/// order is decided exactly once.
#[tokio::test]
async fn too_many_clients_slows_down_without_holding_locks() {
    let Some(postgres) = PostgresServer::plain_with("max_connections = 20\n") else {
        return;
    };
    let env = Env::on_server(&postgres).await;
    let products = 24;
    env.products(products, 1_000).await;
    let workers: Vec<_> = (0..3)
        .map(|i| {
            env.worker(
                &format!("w{i}"),
                &[
                    "--max-connections",
                    "18",
                    "--work-ms",
                    "5",
                    "--batch-limit",
                    "8",
                ],
            )
        })
        .collect();
    let total = 1_200;
    let orders: Vec<_> = (0..total).map(|i| order(1 + i % products, 1)).collect();
    env.push(&orders).await;

    let mut longest = 0_u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    while env.decided().await < i64::from(total) {
        assert!(
            Instant::now() < deadline,
            "only {} decided",
            env.decided().await
        );
        let mut conn = env.raw().await;
        for product in 1..=products {
            // The mutex value's third field is "ttl_ms+held_ms[+w]": the key was set with
            // ttl_ms after the hold had lasted held_ms; PTTL gives what has run down since. Both
            // are read in one transaction: read apart, a hand-off in between (a new value with a
            // short, lease-capped TTL) would pair one hold's ttl_ms with the next one's PTTL.
            let (value, pttl): (Option<String>, i64) = redis::pipe()
                .atomic()
                .get(env.lock_key(product))
                .pttl(env.lock_key(product))
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(value) = value {
                let mut set = value.split('\n').nth(2).unwrap().split('+');
                let ttl: u64 = set.next().unwrap().parse().unwrap();
                let held: u64 = set.next().unwrap().parse().unwrap();
                if let Ok(left) = u64::try_from(pttl) {
                    longest = longest.max(held + ttl.saturating_sub(left));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("longest lock hold seen: {longest} ms");
    let logs: String = workers.iter().map(|w| w.log()).collect();
    assert!(
        logs.contains("no Postgres connection"),
        "no worker ever went without a connection; the test proves nothing"
    );
    assert!(
        longest < 2_500,
        "a lock was held {longest} ms: held while waiting for a connection?"
    );
    assert_eq!(env.outcomes().await.len(), total as usize);
    for product in 1..=products {
        assert_eq!(env.sold(product).await, 50, "product {product}");
    }
}
