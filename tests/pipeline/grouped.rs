//! The grouped sale: claims and commits of several product holds in one statement (what a
//! worker's group commit sends), each product checked against its own fence.

use std::{collections::HashMap, time::Duration};

use lockstock::{
    order::{Outcome, PurchaseOrder},
    store::{BatchCommit, Claim, Decision, OrderStore, ProductBatch, StoreError},
    worker::{Worker, WorkerConfig},
};
use lockstock_lock::{LockClient, LockConfig, LockOwner};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{TestRedis, order, product_id, wait_for},
    test_env::{outcomes, sold},
};

const WORKER: &str = "test-worker";

/// `orders` decided as fulfilled, as a batch commit carries them.
fn fulfilled(orders: &[PurchaseOrder]) -> Vec<Decision> {
    orders
        .iter()
        .map(|order| Decision {
            order: *order,
            outcome: Outcome::Fulfilled,
            attempts: 1,
        })
        .collect()
}

async fn stock(store: &OrderStore, product: i32) -> i32 {
    sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Three products claimed and committed in one statement each; before the commit a newer
/// holder claims product 2: product 2's orders are not decided and its stock is untouched, the
/// other two products' orders are decided and sold.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_grouped_commit_decides_the_products_whose_fence_holds_and_not_the_stale_one(
    pool: PgPool,
) {
    // Arrange: seed stock 10, 5, 20; one holder claims all three products in one statement.
    let store = OrderStore::new(pool.clone());
    let mut conn = pool.acquire().await.unwrap();
    let claims: Vec<Claim> = [(1, 7), (2, 8), (3, 9)]
        .into_iter()
        .map(|(product, fence)| Claim {
            product_id: product_id(product),
            fence,
        })
        .collect();
    let claimed = store.claim_products_on(&mut conn, &claims).await.unwrap();
    assert_eq!(
        claimed.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![10, 5, 20]
    );
    // A newer holder of product 2 claims it.
    store.claim_product(product_id(2), 12).await.unwrap();
    let (first, second, third) = (
        vec![order(1, 2), order(1, 3)],
        vec![order(2, 1)],
        vec![order(3, 4)],
    );
    let decisions = [fulfilled(&first), fulfilled(&second), fulfilled(&third)];

    // Act
    let batches: Vec<ProductBatch<'_>> = claims
        .iter()
        .zip(&decisions)
        .map(|(claim, decisions)| ProductBatch {
            product_id: claim.product_id,
            fence: claim.fence,
            decisions,
            worker: WORKER,
        })
        .collect();
    let results = store
        .commit_fenced_batches_on(&mut conn, &batches)
        .await
        .unwrap();

    // Assert
    assert!(
        matches!(
            results[0],
            Ok(BatchCommit::Committed { remaining_stock: 5 })
        ),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Err(StoreError::StaleFence { current: 12 })),
        "{results:?}"
    );
    assert!(
        matches!(
            results[2],
            Ok(BatchCommit::Committed {
                remaining_stock: 16
            })
        ),
        "{results:?}"
    );
    let stored = outcomes(&pool).await;
    for order in first.iter().chain(&third) {
        assert_eq!(stored[&order.id.as_uuid()].0, "fulfilled");
    }
    assert!(
        !stored.contains_key(&second[0].id.as_uuid()),
        "the stale product's order is not decided"
    );
    assert_eq!(
        (
            stock(&store, 1).await,
            stock(&store, 2).await,
            stock(&store, 3).await
        ),
        (5, 5, 16)
    );
    let fences: Vec<(uuid::Uuid, i64)> = sqlx::query_as("SELECT id, fence FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    let fences: HashMap<_, _> = fences.into_iter().collect();
    assert_eq!(
        fences[&first[0].id.as_uuid()],
        7,
        "each row carries its own fence"
    );
    assert_eq!(fences[&third[0].id.as_uuid()], 9);
}

/// In a grouped claim, a token not above its row's fence is refused for that product only.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_grouped_claim_refuses_only_the_stale_product(pool: PgPool) {
    let store = OrderStore::new(pool.clone());
    store.claim_product(product_id(2), 4).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let claims = [
        Claim {
            product_id: product_id(1),
            fence: 5,
        },
        Claim {
            product_id: product_id(2),
            fence: 3,
        },
        Claim {
            product_id: product_id(999),
            fence: 5,
        },
    ];

    let results = store.claim_products_on(&mut conn, &claims).await.unwrap();

    assert!(matches!(results[0], Ok(10)), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::StaleFence { current: 4 })),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(StoreError::UnknownProduct(_))),
        "{results:?}"
    );
    assert_eq!(store.fence_high_water(product_id(1)).await.unwrap(), 5);
    assert_eq!(store.fence_high_water(product_id(2)).await.unwrap(), 4);
}

/// Three workers with the group commit (eight lanes each) sell 20 products with 5 units each to
/// 400 orders: every order gets one outcome, every product sells exactly its stock, and some
/// transaction decided orders of more than one product (the group commit at work: rows of one
/// transaction share `decided_at`).
///
/// Steps group only while the leaders are busy, so the test makes them busy rather than hoping
/// Postgres is slow: it holds every product row locked until ten product locks are held. A lane
/// holding a lock has submitted its claim, which either leads (at most two per worker, each
/// blocked on the rows) or is queued behind its worker's two blocked leaders: so at least four
/// claims are queued, at least two in one worker, and that worker's next leader takes them
/// together once the test lets go. Their lanes then submit their commits at the same moment
/// (no slow step), more of them than a worker has leaders, so those queue and group too; the
/// assertion is on commits (rows of one commit share `decided_at`). Each worker gets a
/// connection per lane and one more (a lane keeps its connection while it waits), and a Postgres
/// outage limit far above the wait, so the blocked claims are not cut as an outage.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn grouped_workers_never_oversell_and_share_transactions_across_products(pool: PgPool) {
    // Arrange
    let redis = TestRedis::start();
    let store = OrderStore::new(pool.clone());
    store.create_products(20, 5).await.unwrap();
    let orders: Vec<PurchaseOrder> = (0..400).map(|i| order(1 + i % 20, 1)).collect();
    let payloads: Vec<Vec<u8>> = orders.iter().map(PurchaseOrder::to_json).collect();
    redis
        .queue("producer")
        .await
        .push_batch(&payloads)
        .await
        .unwrap();

    // Own connections: the test's pool has five, fewer than the lanes. Each worker gets nine
    // (each of its eight lanes takes one before its lock); one more holds the rows, one looks.
    let options = pool.connect_options();
    let own_pool = |size: u32| {
        PgPoolOptions::new()
            .max_connections(size)
            .connect_with((*options).clone())
    };
    let mut blocker = PgConnection::connect_with(&options).await.unwrap();
    let probe = own_pool(1).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("SELECT id FROM products FOR UPDATE")
        .execute(&mut blocker)
        .await
        .unwrap();

    // Act
    let stop = CancellationToken::new();
    let mut running = Vec::new();
    for n in 0..3 {
        let name = format!("worker-{n}");
        let config = LockConfig::default()
            .with_prefix(format!("{}-locks", redis.prefix))
            .unwrap()
            .with_owner(LockOwner::this_process(&name));
        let locks = LockClient::connect(&redis.url(), config).await.unwrap();
        let worker = Worker::new(
            redis.queue(&name).await,
            locks,
            OrderStore::new(own_pool(9).await.unwrap()),
            WorkerConfig {
                concurrency: 8,
                work: Duration::ZERO,
                group_commit: true,
                poll_timeout: Duration::from_millis(100),
                drain_timeout: Duration::from_secs(5),
                postgres_outage_limit: Duration::from_secs(120),
                ..WorkerConfig::default()
            },
        )
        .unwrap();
        running.push(tokio::spawn(worker.run(stop.clone())));
    }
    wait_for(
        "leaders waiting on the product rows and ten product locks held",
        Duration::from_secs(30),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&probe)
            .await
            .unwrap();
            let held: Vec<String> = redis::cmd("KEYS")
                .arg("*:lock")
                .query_async(&mut redis.raw().await)
                .await
                .unwrap();
            waiting >= 2 && held.len() >= 10
        },
    )
    .await;
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    wait_for("every order decided", Duration::from_secs(60), || async {
        outcomes(&pool).await.len() >= orders.len()
    })
    .await;
    stop.cancel();
    for worker in running {
        worker.await.unwrap();
    }

    // Assert
    let stored = outcomes(&pool).await;
    assert_eq!(stored.len(), orders.len(), "one outcome per order");
    for product in 1..=20 {
        assert_eq!(sold(&pool, product).await, 5, "product {product}");
        let stock: i32 = sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
            .bind(product)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stock, 0, "product {product}");
    }
    let widest: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(DISTINCT product_id) AS n FROM orders GROUP BY decided_at) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        widest > 1,
        "no transaction decided orders of two products: the steps were not grouped"
    );
}
