//! `QUEUE_SHARDS=N` on a cluster: the pending list spread over N hash-tagged lists on different
//! slots (and masters); consumers pull from every shard in turn; dead letters and recovery per
//! shard; and the real binaries with `QUEUE_SHARDS=4` decide every order exactly once.

use std::{collections::HashSet, time::Duration};

use lockstock::queue::{QueueConfig, hash_tag};
use sqlx::PgPool;

use crate::fleet::{Fleet, order};

/// Four shards of `orders:pending` sit on four slots spread over the masters; 40 messages spread
/// over all four; a consumer's first four reserves come from four different shards; a poison
/// message is dead-lettered in its shard and requeued; a dead consumer's messages come back from
/// every shard.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_sharded_queue_spreads_over_slots_and_is_consumed_fairly(pool: PgPool) {
    let fleet = Fleet::new(pool).sharded(4);
    let redis = fleet.redis().await;
    let config = |worker: &str| QueueConfig {
        shards: 4,
        ..QueueConfig::namespaced(&fleet.prefix).with_worker_id(worker)
    };
    let consumer = redis.queue(config("c1")).unwrap();
    let shard_keys = consumer.shard_keys();
    assert_eq!(shard_keys.len(), 4);
    let tags: HashSet<&str> = shard_keys
        .iter()
        .map(|keys| hash_tag(keys.pending()).expect("a tag per shard"))
        .collect();
    assert_eq!(tags.len(), 4, "one slot per shard: {shard_keys:?}");
    for keys in &shard_keys {
        assert_eq!(hash_tag(keys.dead()), hash_tag(keys.pending()));
    }

    let messages: Vec<Vec<u8>> = (0..40).map(|i| format!("m{i}").into_bytes()).collect();
    consumer.push_batch(&messages).await.unwrap();
    assert_eq!(consumer.depth().await.unwrap(), 40);
    let mut per_shard = Vec::new();
    let mut conn = fleet.locks("inspector").await.connection();
    for keys in &shard_keys {
        let len: usize = redis::cmd("LLEN")
            .arg(keys.pending())
            .query_async(&mut conn)
            .await
            .unwrap();
        per_shard.push(len);
    }
    assert!(per_shard.iter().all(|n| *n > 0), "{per_shard:?}");
    let masters_used = fleet.nodes_holding_keys();
    assert!(masters_used >= 2, "the shards share one master");

    consumer
        .heartbeat_liveness(Duration::from_secs(10))
        .await
        .unwrap();
    let mut first_shards = HashSet::new();
    for _ in 0..4 {
        let message = consumer
            .reserve(Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        first_shards.insert(lockstock::queue::shard_of(&message, 4));
        assert!(consumer.ack(&message).await.unwrap());
    }
    assert_eq!(first_shards.len(), 4, "fair: one reserve from each shard");

    let poison = consumer
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert!(consumer.dead_letter(&poison, "bad").await.unwrap());
    assert_eq!(consumer.dead_depth().await.unwrap(), 1);
    assert_eq!(consumer.dead_letters(10).await.unwrap()[0].reason, "bad");
    assert_eq!(consumer.requeue_dead_letters().await.unwrap(), 1);

    let doomed = redis.queue(config("c2")).unwrap();
    doomed
        .heartbeat_liveness(Duration::from_millis(300))
        .await
        .unwrap();
    let taken = doomed
        .reserve_many(10, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!taken.is_empty());
    drop(doomed);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut recovered = 0;
    while recovered < taken.len() {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        recovered += consumer.recover_dead_workers().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recovered, taken.len());

    let mut rest = 0;
    while let Some(message) = consumer.reserve(Duration::from_millis(300)).await.unwrap() {
        assert!(consumer.ack(&message).await.unwrap());
        rest += 1;
    }
    assert_eq!(rest, 36);
    let stats = consumer.stats().await.unwrap();
    assert_eq!((stats.pending, stats.processing, stats.dead), (0, 0, 0));
}

/// `producer` and two `worker`s with `QUEUE_SHARDS=4` on a cluster: 300 orders each get exactly
/// one outcome and the stock ledger is exact.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn sharded_binaries_decide_every_order_once_on_a_cluster(pool: PgPool) {
    let fleet = Fleet::new(pool).sharded(4);
    let initial = 30;
    fleet.products(10, initial).await;
    let _workers = [fleet.worker("w0", &[]), fleet.worker("w1", &[])];
    let orders: Vec<_> = (0..300)
        .map(|i| order(1 + (i * 3 % 10), 1 + (i % 3)))
        .collect();
    fleet.produce(&orders);
    fleet.wait_decided(300, Duration::from_secs(60)).await;
    fleet.assert_exactly_once(&orders, 10, initial).await;
}
