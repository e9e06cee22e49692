//! Redlock over three real `redis-server` processes: exclusion, fencing across instance
//! failures, quorum errors, restart quarantine, heartbeat.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lockstock_lock::{
    Heartbeat, InstanceReply, LockError, LockOptions, LockOwner, Redlock, RedlockConfig,
    ReleaseOutcome,
};

use crate::{helpers::wait_for, redis_server::RedisServer};

/// Three throwaway servers and a unique key prefix.
struct Trio {
    servers: Vec<RedisServer>,
    prefix: String,
}

impl Trio {
    fn start() -> Self {
        Self {
            servers: (0..3).map(|_| RedisServer::start()).collect(),
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// A client with its own connections; `quarantine` is the restart quarantine.
    async fn client(&self, owner: &str, quarantine: Duration) -> Redlock {
        self.client_with(owner, quarantine, |config| config).await
    }

    async fn client_with(
        &self,
        owner: &str,
        quarantine: Duration,
        tweak: impl FnOnce(RedlockConfig) -> RedlockConfig,
    ) -> Redlock {
        let config = RedlockConfig::default()
            .with_prefix(self.prefix.clone())
            .unwrap()
            .with_owner(LockOwner::this_process(owner))
            .with_restart_quarantine(quarantine);
        Redlock::connect(&self.urls(), tweak(config)).await.unwrap()
    }

    /// How many instances have at least `at_least` subscribers on `channel`.
    fn subscribed(&self, channel: &str, at_least: usize) -> usize {
        self.servers
            .iter()
            .filter(|server| {
                let client = redis::Client::open(server.url()).unwrap();
                let mut conn = client.get_connection().unwrap();
                let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(channel)
                    .query(&mut conn)
                    .unwrap();
                counts.first().is_some_and(|(_, n)| *n >= at_least)
            })
            .count()
    }

    /// Sets a resource's fence counter on one instance directly.
    fn set_counter(&self, instance: usize, resource: &str, value: u64) {
        let client = redis::Client::open(self.servers[instance].url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{}:{{{resource}}}:rl:fence", self.prefix))
            .arg(value)
            .query(&mut conn)
            .unwrap();
    }
}

const NO_QUARANTINE: Duration = Duration::ZERO;

/// Even instance counts, fewer than three, unparsable and duplicate URLs are refused with
/// `InvalidArgument` saying what is wrong; nothing is contacted.
#[tokio::test]
async fn bad_instance_lists_are_refused_with_invalid_argument() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["redis://127.0.0.1:1", "redis://127.0.0.1:2"],
            "odd number",
        ),
        (
            &[
                "redis://127.0.0.1:1",
                "redis://127.0.0.1:2",
                "redis://127.0.0.1:3",
                "redis://127.0.0.1:4",
            ],
            "odd number",
        ),
        (&["redis://127.0.0.1:1"], "odd number"),
        (
            &["redis://127.0.0.1:1", "not a url", "redis://127.0.0.1:3"],
            "cannot parse Redlock instance URL #2",
        ),
        (
            &[
                "redis://127.0.0.1:1",
                "redis://127.0.0.1:1",
                "redis://127.0.0.1:3",
            ],
            "listed twice",
        ),
    ];
    for (urls, expected) in cases {
        let error = Redlock::connect(urls, RedlockConfig::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, LockError::InvalidArgument(m) if m.contains(expected)),
            "{urls:?}: {error}"
        );
    }
}

/// Invariant: never more than one holder. Six clients (own connections to all three instances)
/// take turns; each pushes its fencing token to a shared log while holding the lock and checks
/// a shared "inside" flag. Nobody ever finds the flag set, and the log — in holding order — is
/// strictly increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_holder_at_a_time_and_fences_increase() {
    let trio = Trio::start();
    let inside = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let redlock = trio.client(&format!("c{i}"), NO_QUARANTINE).await;
        let (inside, log) = (inside.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let guard = redlock
                    .acquire("hot", &LockOptions::default(), Duration::from_secs(20))
                    .await
                    .expect("acquire");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                log.lock().unwrap().push(guard.fence().get());
                tokio::time::sleep(Duration::from_millis(1)).await;
                inside.store(false, Ordering::SeqCst);
                assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 60);
    assert!(log.windows(2).all(|w| w[0] < w[1]), "{log:?}");
}

/// With one of three instances killed mid-run (and later restarted empty), four contenders keep
/// taking the lock; exclusion holds and the fencing tokens, in holding order, strictly increase
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_carries_on_with_one_instance_killed_and_fences_keep_increasing() {
    let mut trio = Trio::start();
    let inside = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let redlock = trio.client(&format!("c{i}"), NO_QUARANTINE).await;
        let (inside, log, done) = (inside.clone(), log.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < 90 {
                let guard = redlock
                    .acquire("hot", &LockOptions::default(), Duration::from_secs(20))
                    .await
                    .expect("acquire with one instance down");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                log.lock().unwrap().push(guard.fence().get());
                inside.store(false, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
        }));
    }
    let progress = |n: usize| {
        let done = done.clone();
        async move {
            wait_for("progress", Duration::from_secs(20), || async {
                done.load(Ordering::SeqCst) >= n
            })
            .await
        }
    };
    progress(30).await;
    trio.servers[1].stop();
    progress(60).await;
    trio.servers[1].restart();
    for task in tasks {
        task.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    assert!(log.len() >= 90);
    assert!(log.windows(2).all(|w| w[0] < w[1]), "{log:?}");
}

/// Invariant: strictly increasing fences across instance failures, through the write-back path.
/// A majority of instances carry a counter far above the clock-based proposals (as an earlier
/// holder's write-back leaves them), so the first token must come from it and be written back;
/// one of those instances is then killed, later restarted empty while another is killed: every
/// token is still higher than every earlier one.
#[tokio::test]
async fn fences_keep_increasing_when_the_instance_with_the_highest_counter_fails() {
    let mut trio = Trio::start();
    let high = 5_000_000_000_000_000; // above any clock-based proposal until the year 2128
    trio.set_counter(1, "r", high);
    trio.set_counter(2, "r", high);
    let quarantine = Duration::from_millis(300);
    let redlock = trio.client("a", quarantine).await;
    let options = LockOptions::default();
    let wait = Duration::from_secs(5);
    let mut fences = Vec::new();

    let guard = redlock.acquire("r", &options, wait).await.unwrap();
    fences.push(guard.fence().get());
    assert!(
        fences[0] > high,
        "the token ignored the highest counter: {}",
        fences[0]
    );
    guard.release().await.unwrap();

    trio.servers[2].stop(); // one of the two that had the high counter before the write-back
    let guard = redlock.acquire("r", &options, wait).await.unwrap();
    fences.push(guard.fence().get());
    guard.release().await.unwrap();

    trio.servers[2].restart(); // back, empty, in quarantine for a while
    trio.servers[0].stop();
    // Instances 1 (written) and 2 (empty, once out of quarantine) make the majority now.
    let guard = redlock.acquire("r", &options, wait).await.unwrap();
    fences.push(guard.fence().get());
    guard.release().await.unwrap();

    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

/// With two of three instances down, acquisition fails within its wait (plus one per-instance
/// timeout) with `NoQuorum`, whose message names what every instance answered. Once an
/// instance returns, the same client acquires.
#[tokio::test]
async fn two_of_three_down_fails_with_a_clear_error_within_the_timeout() {
    let mut trio = Trio::start();
    let redlock = trio.client("a", NO_QUARANTINE).await;
    trio.servers[0].stop();
    trio.servers[2].stop();
    let wait = Duration::from_millis(400);
    let started = Instant::now();
    let error = redlock
        .acquire("r", &LockOptions::default(), wait)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took < wait + Duration::from_millis(400),
        "failed only after {took:?}"
    );
    let LockError::NoQuorum {
        needed,
        agreed,
        reports,
        ..
    } = &error
    else {
        panic!("expected NoQuorum, got {error}");
    };
    assert_eq!((*needed, *agreed, reports.len()), (2, 1, 3));
    assert!(matches!(reports[1].reply, InstanceReply::Agreed));
    assert!(
        matches!(
            reports[0].reply,
            InstanceReply::Failed(_) | InstanceReply::TimedOut
        ),
        "{:?}",
        reports[0]
    );
    let message = error.to_string();
    for url in trio.urls() {
        assert!(message.contains(&url), "{message}");
    }
    assert!(error.is_transient());

    trio.servers[2].restart();
    let guard = redlock
        .acquire("r", &LockOptions::default(), Duration::from_secs(5))
        .await
        .unwrap();
    guard.release().await.unwrap();
}

/// An instance restarted empty does not let two holders in. A holds a bare majority (one
/// instance was down when it acquired); that instance comes back empty, then one of A's two
/// instances restarts empty. Without the restart quarantine B could take the two empty instances
/// at once while A still believes it holds; with it, B gets the lock only after A's lost signal
/// has fired.
#[tokio::test]
async fn an_instance_restarted_empty_does_not_let_two_holders_in() {
    let mut trio = Trio::start();
    let quarantine = Duration::from_millis(800);
    let options = LockOptions::with_ttl(Duration::from_millis(800));
    let a = trio.client("a", quarantine).await;
    let b = trio.client("b", quarantine).await;

    trio.servers[2].stop();
    let guard = a
        .acquire("r", &options, Duration::from_secs(5))
        .await
        .unwrap();
    let lost = guard.lost();
    trio.servers[2].restart();
    trio.servers[1].restart();

    let lost_at = Arc::new(Mutex::new(None));
    let watcher = {
        let (lost, lost_at) = (lost.clone(), lost_at.clone());
        tokio::spawn(async move {
            lost.cancelled().await;
            *lost_at.lock().unwrap() = Some(Instant::now());
        })
    };
    let deadline = Instant::now() + Duration::from_secs(8);
    let second = loop {
        if let Ok(Some(second)) = b.try_acquire("r", &options).await {
            break second;
        }
        assert!(Instant::now() < deadline, "B never got the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let b_at = Instant::now();
    assert!(
        guard.is_lost(),
        "B holds the lock while A still believes it does"
    );
    watcher.await.unwrap();
    let a_lost_at = lost_at.lock().unwrap().expect("A's lost signal fired");
    assert!(a_lost_at <= b_at);
    second.release().await.unwrap();
    drop(guard);
}

/// The heartbeat keeps the lock through one instance's death (a majority still extends it); once
/// a second instance dies, no majority is left and the lost signal fires within about a TTL.
#[tokio::test]
async fn the_heartbeat_keeps_a_majority_and_lost_fires_when_it_cannot() {
    let mut trio = Trio::start();
    let redlock = trio.client("a", NO_QUARANTINE).await;
    let ttl = Duration::from_millis(600);
    let guard = redlock
        .acquire("r", &LockOptions::with_ttl(ttl), Duration::from_secs(5))
        .await
        .unwrap();
    trio.servers[0].stop();
    let since = Instant::now();
    while since.elapsed() < ttl * 3 {
        assert!(!guard.is_lost(), "lost with a majority still up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let views = redlock.inspect("r").await.unwrap();
    for view in &views[1..] {
        let lock = view.lock.as_ref().unwrap().as_ref().expect("held there");
        assert_eq!(lock.fence, guard.fence().get());
    }
    trio.servers[1].stop();
    let stopped = Instant::now();
    let lost = guard.lost();
    tokio::time::timeout(ttl * 2, lost.cancelled())
        .await
        .expect("the lost signal fired");
    assert!(stopped.elapsed() <= ttl + Duration::from_millis(100));
    drop(guard);
}

/// A holder that crashes (no release, no heartbeat) blocks others only until its TTL; and a
/// waiter is woken by a release announcement, not by its back-off.
#[tokio::test]
async fn a_crashed_holder_frees_after_its_ttl_and_a_release_wakes_a_waiter() {
    let trio = Trio::start();
    let (a, b) = (
        trio.client("a", NO_QUARANTINE).await,
        trio.client("b", NO_QUARANTINE).await,
    );
    // The waiter's back-off is far longer than the bound below: only the release announcement
    // can wake it in time.
    let c = trio
        .client_with("c", NO_QUARANTINE, |mut config| {
            config.retry_min = Duration::from_secs(3);
            config.retry_max = Duration::from_secs(3);
            config
        })
        .await;
    let ttl = Duration::from_millis(400);
    let crashed = a
        .try_acquire("r", &LockOptions::with_ttl(ttl).heartbeat(Heartbeat::Off))
        .await
        .unwrap()
        .unwrap();
    let crashed_at = Instant::now();
    std::mem::forget(crashed);
    let held = b
        .acquire("r", &LockOptions::default(), Duration::from_secs(5))
        .await
        .unwrap();
    let waited = crashed_at.elapsed();
    assert!(waited >= ttl - Duration::from_millis(20), "{waited:?}");
    assert!(waited < ttl + Duration::from_millis(300), "{waited:?}");

    let waiter = tokio::spawn(async move {
        let guard = c
            .acquire("r", &LockOptions::default(), Duration::from_secs(10))
            .await
            .unwrap();
        (Instant::now(), guard)
    });
    let channel = format!("{}:{{r}}:rl:released", trio.prefix);
    wait_for(
        "the waiter to listen on every instance (b still listens from its own wait)",
        Duration::from_secs(3),
        || async { trio.subscribed(&channel, 2) == 3 },
    )
    .await;
    let released_at = Instant::now();
    held.release().await.unwrap();
    let (acquired_at, guard) = waiter.await.unwrap();
    let switch = acquired_at.duration_since(released_at);
    assert!(
        switch < Duration::from_millis(60),
        "hand-off took {switch:?}"
    );
    guard.release().await.unwrap();
}
