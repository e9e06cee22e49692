//! The queue on a cluster: with a hash-tagged pending key every key (pending, processing,
//! liveness, registry, dead letters) shares one slot, so its scripts, pipelines and the
//! processing-list `SCAN` all run on one node.

use std::time::Duration;

use lockstock::queue::{JobQueue, QueueConfig, QueueError, hash_tag};

use crate::redis_cluster::RedisCluster;

async fn queue(cluster: &RedisCluster, config: QueueConfig) -> Result<JobQueue, QueueError> {
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    JobQueue::connect_cluster(&nodes, config).await
}

/// Push, blocking reserve, acknowledge, dead-letter, requeue the dead letters, and recover a dead
/// consumer's processing list — all on a cluster, with only the pending key configured
/// (`{tag}:pending`; the dead key follows the tag).
#[tokio::test]
async fn the_queue_runs_on_a_cluster_with_a_hash_tagged_pending_key() {
    let cluster = RedisCluster::start();
    let tag = format!("orders-{}", uuid::Uuid::new_v4().simple());
    let config = |worker: &str| {
        QueueConfig::default()
            .with_pending_key(format!("{{{tag}}}:pending"))
            .with_worker_id(worker)
    };
    let consumer = queue(&cluster, config("c1")).await.unwrap();
    assert_eq!(consumer.keys().dead(), format!("{{{tag}}}:dead"));
    assert_eq!(hash_tag(consumer.keys().dead()), Some(tag.as_str()));

    let messages: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
    consumer.push_batch(&messages).await.unwrap();
    consumer
        .heartbeat_liveness(Duration::from_secs(10))
        .await
        .unwrap();

    let first = consumer
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, b"m0");
    assert!(consumer.ack(&first).await.unwrap());
    let poison = consumer
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert!(consumer.dead_letter(&poison, "bad").await.unwrap());
    assert_eq!(consumer.dead_depth().await.unwrap(), 1);
    assert_eq!(consumer.requeue_dead_letters().await.unwrap(), 1);

    // A second consumer takes a message and dies without renewing its liveness.
    let doomed = queue(&cluster, config("c2")).await.unwrap();
    doomed
        .heartbeat_liveness(Duration::from_millis(300))
        .await
        .unwrap();
    let taken = doomed
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken, b"m2");
    drop(doomed);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut recovered = 0;
    while recovered == 0 {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        recovered = consumer.recover_dead_workers().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recovered, 1);

    let mut rest = Vec::new();
    while let Some(message) = consumer.reserve(Duration::from_millis(200)).await.unwrap() {
        assert!(consumer.ack(&message).await.unwrap());
        rest.push(String::from_utf8(message).unwrap());
    }
    rest.sort();
    assert_eq!(rest, ["m1", "m2", "m3", "m4"]);
    let stats = consumer.stats().await.unwrap();
    assert_eq!((stats.pending, stats.processing, stats.dead), (0, 0, 0));
}

/// The default keys (no hash tag) and a dead key with another tag are refused on a cluster with
/// a configuration error, before anything is sent.
#[tokio::test]
async fn a_cluster_queue_refuses_keys_outside_one_slot() {
    let cluster = RedisCluster::start();
    let error = queue(&cluster, QueueConfig::default()).await.unwrap_err();
    assert!(error.to_string().contains("needs a hash tag"), "{error}");
    let error = queue(
        &cluster,
        QueueConfig::default()
            .with_pending_key("{a}:pending")
            .with_dead_key("{b}:dead"),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("same") || error.to_string().contains("hash tag"),
        "{error}"
    );
}
