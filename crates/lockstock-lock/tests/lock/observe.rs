//! The observer hook (issue 9 "History"): a contended run, recorded through `LockObserver`, is
//! a history a checker can trust — fences strictly increase in grant order and no two guards'
//! validity windows overlap.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lockstock_lock::{LockEvent, LockObserver, LockOptions, LockToken, ReleaseOutcome};

use crate::helpers::TestRedis;

/// Every event, with the local instant it was seen.
#[derive(Debug, Default)]
struct Recorder {
    events: Mutex<Vec<(Instant, LockEvent)>>,
}

impl LockObserver for Recorder {
    fn on_event(&self, event: &LockEvent) {
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), event.clone()));
    }
}

/// One guard's life as the history shows it.
#[derive(Debug)]
struct Hold {
    token: LockToken,
    fence: u64,
    /// When the grant was seen (after the server granted it).
    granted_seen: Instant,
    /// When its release was sent (the end of its validity window).
    release_sent: Instant,
}

#[tokio::test]
async fn a_recorded_contended_run_has_increasing_fences_and_disjoint_windows() {
    let redis = TestRedis::new();
    let recorder = Arc::new(Recorder::default());
    let mut tasks = Vec::new();
    for id in 0..4 {
        let config = redis
            .config(&format!("observed-{id}"))
            .with_observer(recorder.clone());
        let client = lockstock_lock::LockClient::connect(&redis.url, config)
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let options = LockOptions::default();
            for round in 0..20 {
                let guard = client
                    .acquire("hot", &options, Duration::from_secs(10))
                    .await
                    .unwrap();
                if round % 5 == 0 {
                    assert!(guard.extend().await.unwrap());
                }
                tokio::task::yield_now().await;
                assert_ne!(guard.release().await.unwrap(), ReleaseOutcome::NotHeld);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let events = recorder.events.lock().unwrap().clone();
    let mut holds: Vec<Hold> = Vec::new();
    let (mut extends, mut handoffs) = (0, 0);
    for (seen, event) in &events {
        match event {
            LockEvent::Grant {
                resource,
                token,
                fence,
                server_time_ms,
                sent_at,
                deadline,
            } => {
                assert_eq!(resource, "hot");
                assert!(
                    server_time_ms.is_some(),
                    "an observed grant carries its server time"
                );
                assert!(sent_at <= seen && deadline > seen, "{event:?}");
                holds.push(Hold {
                    token: *token,
                    fence: *fence,
                    granted_seen: *seen,
                    release_sent: *seen,
                });
            }
            LockEvent::Extend {
                token, deadline, ..
            } => {
                assert!(holds.iter().any(|h| h.token == *token) && *deadline > *seen);
                extends += 1;
            }
            LockEvent::Release { token, sent_at, .. }
            | LockEvent::HandOff { token, sent_at, .. } => {
                if matches!(event, LockEvent::HandOff { .. }) {
                    handoffs += 1;
                }
                let hold = holds
                    .iter_mut()
                    .find(|h| h.token == *token)
                    .expect("a release follows its grant");
                hold.release_sent = *sent_at;
            }
            LockEvent::Lost { .. } => panic!("nothing should be lost: {event:?}"),
        }
    }
    assert_eq!(holds.len(), 80, "one grant per acquisition");
    assert_eq!(extends, 16, "one extension every fifth round");
    assert!(
        handoffs > 0,
        "four contenders on one key: some releases hand off"
    );

    // Grant order is the order the grants were seen: fences strictly increase along it, and
    // each guard's window [grant seen, release sent] ends before the next one's begins.
    holds.sort_by_key(|h| h.granted_seen);
    for pair in holds.windows(2) {
        assert!(
            pair[1].fence > pair[0].fence,
            "fences must increase in grant order: {pair:?}"
        );
        assert!(
            pair[0].release_sent <= pair[1].granted_seen,
            "validity windows overlap: {pair:?}"
        );
    }
}

/// Without an observer nothing is recorded and the acquire script reads no clock (the
/// uncontended count stays at 5 commands, `calls.rs`); with one, the cycle emits a grant and a
/// release.
#[tokio::test]
async fn an_observed_cycle_emits_a_grant_then_a_release() {
    let redis = TestRedis::new();
    let recorder = Arc::new(Recorder::default());
    let client = lockstock_lock::LockClient::connect(
        &redis.url,
        redis.config("one").with_observer(recorder.clone()),
    )
    .await
    .unwrap();
    let guard = client
        .try_acquire("r", &LockOptions::default())
        .await
        .unwrap()
        .expect("free");
    let fence = guard.fence().get();
    guard.release().await.unwrap();
    let events: Vec<LockEvent> = recorder
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert!(
        matches!(
            events.as_slice(),
            [
                LockEvent::Grant { fence: f, server_time_ms: Some(t), .. },
                LockEvent::Release { outcome: ReleaseOutcome::Released, fence: g, .. },
            ] if *f == fence && *g == fence && *t > 1_600_000_000_000
        ),
        "{events:?}"
    );
}
