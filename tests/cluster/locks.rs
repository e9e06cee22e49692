//! The mutex, fair lock, semaphore and read/write lock on a cluster: each resource's keys sit
//! in one slot (its `{R}` hash tag), resources spread over all three masters.

use std::time::Duration;

use lockstock_lock::{
    FairLock, LockClient, LockConfig, LockOptions, LockOwner, ReleaseOutcome, RwLock, Semaphore,
};

use crate::redis_cluster::RedisCluster;

async fn client(cluster: &RedisCluster, prefix: &str, owner: &str) -> LockClient {
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let config = LockConfig::default()
        .with_prefix(prefix)
        .unwrap()
        .with_owner(LockOwner::this_process(owner));
    LockClient::connect_cluster(&nodes, config).await.unwrap()
}

/// Keys per cluster node.
fn keys_per_node(cluster: &RedisCluster) -> Vec<usize> {
    cluster
        .urls()
        .iter()
        .map(|url| {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            redis::cmd("DBSIZE").query(&mut conn).unwrap()
        })
        .collect()
}

/// Twelve resources (spread over all three masters) are each locked with the mutex and the fair
/// lock, and handed over to a queued waiter on release (the hand-off message crosses nodes):
/// every script runs whole on the resource's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mutex_and_the_fair_lock_hand_off_across_a_cluster() {
    let cluster = RedisCluster::start();
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let (a, b) = (
        client(&cluster, &prefix, "a").await,
        client(&cluster, &prefix, "b").await,
    );
    let options = LockOptions::default();
    for i in 0..12 {
        let resource = format!("r{i}");

        let held = a.try_acquire(&resource, &options).await.unwrap().unwrap();
        let waiter = {
            let (b, resource) = (b.clone(), resource.clone());
            tokio::spawn(async move {
                b.acquire(&resource, &LockOptions::default(), Duration::from_secs(5))
                    .await
            })
        };
        let queue = format!("{prefix}:{{{resource}}}:queue");
        wait_for_list(&a, &queue, 1).await;
        assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
        let handed = waiter.await.unwrap().unwrap();
        let info = a.inspect(&resource).await.unwrap().unwrap();
        assert_eq!(
            (info.owner.unwrap().id, info.fence),
            ("b".to_owned(), handed.fence().get())
        );
        handed.release().await.unwrap();

        let fair_a = FairLock::new(&a, &resource).unwrap();
        let fair_b = FairLock::new(&b, &resource).unwrap();
        let held = fair_a.try_acquire(&options).await.unwrap().unwrap();
        let waiter = tokio::spawn(async move {
            fair_b
                .acquire(&LockOptions::default(), Duration::from_secs(5))
                .await
        });
        wait_for_list(&a, &format!("{prefix}:{{{resource}}}:fair:queue"), 1).await;
        assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
        waiter.await.unwrap().unwrap().release().await.unwrap();
    }
    let spread = keys_per_node(&cluster);
    assert!(
        spread.iter().all(|keys| *keys > 0),
        "resources all on some nodes: {spread:?}"
    );
}

/// A 2-permit semaphore and a read/write lock on a cluster: the limit holds, a released permit
/// reaches the waiter, readers share and a writer waits for them; the inspection pipelines run
/// on the resource's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semaphore_and_the_rwlock_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let (a, b) = (
        client(&cluster, &prefix, "a").await,
        client(&cluster, &prefix, "b").await,
    );
    let options = LockOptions::default();
    for i in 0..6 {
        let resource = format!("s{i}");
        let semaphore = Semaphore::new(&a, &resource, 2).unwrap();
        let first = semaphore.try_acquire(&options).await.unwrap().unwrap();
        let second = semaphore.try_acquire(&options).await.unwrap().unwrap();
        assert!(semaphore.try_acquire(&options).await.unwrap().is_none());
        assert_eq!(semaphore.holders().await.unwrap().len(), 2);
        let other = Semaphore::new(&b, &resource, 2).unwrap();
        let waiter = tokio::spawn(async move {
            other
                .acquire(&LockOptions::default(), Duration::from_secs(5))
                .await
        });
        wait_for_list(&a, &format!("{prefix}:{{{resource}}}:sem:queue"), 1).await;
        assert_eq!(first.release().await.unwrap(), ReleaseOutcome::HandedOff);
        waiter.await.unwrap().unwrap().release().await.unwrap();
        second.release().await.unwrap();

        let rw = RwLock::new(&a, &resource).unwrap();
        let r1 = rw.try_read(&options).await.unwrap().unwrap();
        let r2 = rw.try_read(&options).await.unwrap().unwrap();
        assert!(rw.try_write(&options).await.unwrap().is_none());
        let writer = RwLock::new(&b, &resource).unwrap();
        let waiter = tokio::spawn(async move {
            writer
                .write(&LockOptions::default(), Duration::from_secs(5))
                .await
        });
        wait_for_list(&a, &format!("{prefix}:{{{resource}}}:rw:queue"), 1).await;
        assert_eq!(rw.holders().await.unwrap().readers.len(), 2);
        r1.release().await.unwrap();
        assert_eq!(r2.release().await.unwrap(), ReleaseOutcome::HandedOff);
        let w = waiter.await.unwrap().unwrap();
        assert!(rw.holders().await.unwrap().writer.is_some());
        w.release().await.unwrap();
    }
}

/// Waits (5 s deadline) until the list `key` has at least `len` entries.
async fn wait_for_list(client: &LockClient, key: &str, len: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut conn = client.connection();
    loop {
        let now: usize = redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if now >= len {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key} never reached {len}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
