//! Read/write lock: readers share, a writer is alone, waiting writers are not starved.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lockstock_lock::{Heartbeat, LockOptions, RwLock};

use crate::helpers::{TestRedis, llen, wait_for};

/// Invariant: never a writer beside a reader or another writer. 8 readers and 3 writers on 4
/// connections loop over one lock; a shared gauge counts readers inside (+1 each) and marks a
/// writer inside (-1000): a reader never sees a writer's mark, a writer never sees anyone else.
/// Readers are seen sharing the lock, and every writer gets its turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_a_writer_beside_a_reader_or_another_writer() {
    let redis = TestRedis::new();
    let mut locks = Vec::new();
    for i in 0..4 {
        let client = redis.client(&format!("c{i}")).await;
        locks.push(RwLock::new(&client, "doc").unwrap());
    }
    let gauge = Arc::new(AtomicI64::new(0));
    let most_readers = Arc::new(AtomicI64::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..11 {
        let lock = locks[task % locks.len()].clone();
        let (gauge, most_readers, writes) = (gauge.clone(), most_readers.clone(), writes.clone());
        let writer = task < 3;
        tasks.push(tokio::spawn(async move {
            for _ in 0..12 {
                if writer {
                    let guard = lock
                        .write(&LockOptions::default(), Duration::from_secs(30))
                        .await
                        .expect("write");
                    let before = gauge.fetch_sub(1000, Ordering::SeqCst);
                    assert_eq!(before, 0, "a writer found {before} in the gauge");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    gauge.fetch_add(1000, Ordering::SeqCst);
                    writes.fetch_add(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                } else {
                    let guard = lock
                        .read(&LockOptions::default(), Duration::from_secs(30))
                        .await
                        .expect("read");
                    let now = gauge.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now > 0, "a reader found a writer inside (gauge {now})");
                    most_readers.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    gauge.fetch_sub(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(writes.load(Ordering::SeqCst), 36);
    assert!(
        most_readers.load(Ordering::SeqCst) >= 2,
        "readers never shared the lock"
    );
}

/// A writer waiting behind a reader is not overtaken by readers that arrive after it: when the
/// first reader leaves, the writer goes next, and the later readers follow after it.
#[tokio::test]
async fn a_waiting_writer_is_not_starved_by_new_readers() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let lock = RwLock::new(&client, "r").unwrap();
    let first = lock
        .try_read(&LockOptions::default())
        .await
        .unwrap()
        .unwrap();

    let order = Arc::new(Mutex::new(Vec::new()));
    let raw = redis.raw().await;
    let queue = format!("{}:{{r}}:rw:queue", redis.prefix);
    let writer = {
        let lock = RwLock::new(&redis.client("w").await, "r").unwrap();
        let order = order.clone();
        tokio::spawn(async move {
            let guard = lock
                .write(&LockOptions::default(), Duration::from_secs(10))
                .await
                .unwrap();
            order.lock().unwrap().push("writer".to_owned());
            tokio::time::sleep(Duration::from_millis(20)).await;
            guard.release().await.unwrap();
        })
    };
    wait_for("the writer to queue", Duration::from_secs(2), || async {
        llen(&raw, &queue).await == 1
    })
    .await;
    // New readers keep arriving while the first reader holds: none may jump the writer.
    let mut readers = Vec::new();
    for i in 0..4 {
        let lock = RwLock::new(&redis.client(&format!("r{i}")).await, "r").unwrap();
        let order = order.clone();
        readers.push(tokio::spawn(async move {
            let guard = lock
                .read(&LockOptions::default(), Duration::from_secs(10))
                .await
                .unwrap();
            order.lock().unwrap().push(format!("reader{i}"));
            guard.release().await.unwrap();
        }));
        wait_for("the reader to queue", Duration::from_secs(2), || async {
            llen(&raw, &queue).await == i + 2
        })
        .await;
    }
    assert!(
        order.lock().unwrap().is_empty(),
        "someone got in beside the first reader"
    );
    first.release().await.unwrap();
    writer.await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.first().map(String::as_str),
        Some("writer"),
        "{order:?}"
    );
    assert_eq!(order.len(), 5);
}

/// A reader that crashes (no release, no heartbeat) blocks a writer only until its entry's TTL
/// runs out; the writer then gets in without anyone releasing.
#[tokio::test]
async fn a_crashed_readers_entry_expires_so_a_writer_gets_in() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let lock = RwLock::new(&client, "r").unwrap();
    let ttl = Duration::from_millis(300);
    let crashed = lock
        .try_read(&LockOptions::with_ttl(ttl).heartbeat(Heartbeat::Off))
        .await
        .unwrap()
        .unwrap();
    let crashed_at = Instant::now();
    std::mem::forget(crashed);
    let alive = lock
        .try_read(&LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lock.holders().await.unwrap().readers.len(), 2);
    alive.release().await.unwrap();

    let writer = RwLock::new(&redis.client("w").await, "r").unwrap();
    let guard = writer
        .write(&LockOptions::default(), Duration::from_secs(5))
        .await
        .unwrap();
    let waited = crashed_at.elapsed();
    assert!(waited >= ttl - Duration::from_millis(20), "{waited:?}");
    assert!(waited < ttl + Duration::from_millis(250), "{waited:?}");
    let holders = writer.holders().await.unwrap();
    assert!(holders.readers.is_empty());
    assert_eq!(holders.writer.unwrap().owner.unwrap().id, "w");
    guard.release().await.unwrap();
}
