//! The durable intake on a sharded cluster queue (`QUEUE_SHARDS=4`): orders the producer recorded
//! in Postgres and Redis then lost (`FLUSHALL` on every master) come back, each on the shard the
//! producer chose for it, and the workers' own sweep brings them back with no operator step.

use std::{collections::HashSet, time::Duration};

use lockstock::queue::shard_of;
use sqlx::PgPool;

use crate::{
    fleet::{Fleet, order},
    pipeline::to_json,
};

/// Shards of the test's queue.
const SHARDS: usize = 4;

/// 300 recorded orders, lost by Redis: the queue finds all of them missing (checking every
/// shard) and restores each onto its own shard, the one `shard_of` (the producer's choice) gives.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn lost_orders_are_restored_onto_the_shard_the_producer_chose(pool: PgPool) {
    let fleet = Fleet::new(pool).sharded(SHARDS);
    fleet.products(5, 100).await;
    let orders: Vec<_> = (0..300).map(|i| order(1 + i % 5, 1)).collect();
    fleet.produce(&orders);
    let queue = fleet.queue().await;
    let payloads = to_json(&orders);
    assert_eq!(queue.depth().await.unwrap(), 300);
    assert!(
        queue.missing(&payloads).await.unwrap().is_empty(),
        "nothing is missing while Redis has it"
    );
    assert_eq!(queue.restore_missing(&payloads).await.unwrap(), 0);

    fleet.cluster.flush_masters();
    assert_eq!(queue.depth().await.unwrap(), 0);
    assert_eq!(queue.missing(&payloads).await.unwrap().len(), 300);
    assert_eq!(queue.restore_missing(&payloads).await.unwrap(), 300);
    assert_eq!(queue.restored_count().await.unwrap(), 300);
    let mut conn = fleet.locks("inspector").await.connection();
    for (shard, keys) in queue.shard_keys().iter().enumerate() {
        let held: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(keys.pending())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let expected: HashSet<&Vec<u8>> = payloads
            .iter()
            .filter(|payload| shard_of(payload, SHARDS) == shard)
            .collect();
        assert!(!expected.is_empty(), "shard {shard} owns no order");
        assert_eq!(
            held.iter().collect::<HashSet<_>>(),
            expected,
            "shard {shard} holds exactly its own orders"
        );
    }
    assert!(queue.missing(&payloads).await.unwrap().is_empty());
    assert_eq!(queue.restore_missing(&payloads).await.unwrap(), 0);
}

/// 500 orders from the producer with `QUEUE_SHARDS=4`; Redis loses everything (queue, locks,
/// fences, liveness) once before the workers start and once mid-run: the workers' intake sweep
/// pushes every undecided order back, each is decided exactly once, the ledger is exact, and
/// `lockctl status` shows the restored count summed over the shards.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_workers_sweep_restores_every_sharded_order_after_redis_loses_them(pool: PgPool) {
    let fleet = Fleet::new(pool).sharded(SHARDS);
    let initial = 60;
    fleet.products(5, initial).await;
    let orders: Vec<_> = (0..500).map(|i| order(1 + i % 5, 1)).collect();
    fleet.produce(&orders);
    fleet.cluster.flush_masters();

    let sweep = ["--intake-sweep-ms", "300", "--intake-stale-ms", "500"];
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let mut args = vec!["--work-ms", "20", "--batch-limit", "16"];
            args.extend(sweep);
            fleet.worker(&format!("w{i}"), &args)
        })
        .collect();
    fleet.wait_decided(100, Duration::from_secs(60)).await;
    fleet.cluster.flush_masters();
    let decided_at_wipe = fleet.decided().await;
    assert!(
        decided_at_wipe < 500,
        "everything was decided before the second wipe; the test proves nothing"
    );
    fleet.wait_decided(500, Duration::from_secs(120)).await;
    fleet.wait_drained().await;
    fleet.assert_exactly_once(&orders, 5, initial).await;

    let restored = fleet.queue().await.restored_count().await.unwrap();
    assert!(
        restored > 0,
        "the sweep restored nothing after the second wipe; logs:\n{}",
        workers.iter().map(|w| w.log()).collect::<String>()
    );
    let status = fleet.lockctl(&["status"]);
    assert!(
        status.contains(&format!("restored      {restored}")),
        "lockctl status does not show the restored count:\n{status}"
    );
}
