//! Bounded dead letters: a huge poison message becomes a small entry, reads are bounded, the list
//! has a cap, and requeue / purge move entries in batches with filters.

use std::time::Duration;

use lockstock::queue::{DEAD_PAYLOAD_PREFIX, MAX_DEAD_LETTERS};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::TestApp;

/// Dead-letters `payloads` as worker `worker` with `reason`.
async fn dead_letter_all(app: &TestApp, worker: &str, payloads: &[Vec<u8>], reason: &str) {
    let queue = app.queue(worker).await;
    queue.push_batch(payloads).await.unwrap();
    let reserved = queue
        .reserve_many(payloads.len(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(reserved.len(), payloads.len());
    for payload in &reserved {
        assert!(queue.dead_letter(payload, reason).await.unwrap());
    }
}

/// A 4 MB message of control bytes becomes an entry of a few KB that still names its length and
/// hash; `GET /queue` and `lockctl dead-letters list` stay small and print no control bytes.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn huge_poison_messages_become_bounded_dead_letters(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let huge = vec![0x1b_u8; 4 * 1024 * 1024];
    dead_letter_all(&app, "poison-worker", &[huge.clone(), huge], "not_json").await;

    let body = app.get("/queue").await;
    assert_eq!(body.status(), StatusCode::OK);
    let text = body.text().await.unwrap();
    assert!(text.len() < 64 * 1024, "GET /queue is {} bytes", text.len());
    let view: Value = serde_json::from_str(&text).unwrap();
    let letter = &view["recent_dead_letters"][0];
    assert_eq!(letter["truncated"], true);
    assert_eq!(letter["payload_bytes"], 4 * 1024 * 1024);
    assert_eq!(letter["payload_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        letter["payload"].as_str().unwrap().len(),
        DEAD_PAYLOAD_PREFIX
    );

    let listed = app.lockctl_on_keys(&["dead-letters", "list"]);
    assert!(listed.len() < 16 * 1024, "{} bytes", listed.len());
    assert!(
        !listed.contains('\u{1b}'),
        "control bytes reach the terminal"
    );
    // A truncated payload is not the message: it is never requeued, only purged.
    let requeued = app.lockctl_on_keys(&["dead-letters", "requeue"]);
    assert!(requeued.contains("requeued 0"), "{requeued}");
    let purged = app.lockctl_on_keys(&["dead-letters", "purge"]);
    assert!(purged.contains("purged 2"), "{purged}");
}

/// Requeue and purge take `--reason`, `--older-than` and `--limit`, oldest first.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn requeue_and_purge_take_filters(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let payloads = |tag: &str, n: usize| -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect()
    };
    dead_letter_all(&app, "w-a", &payloads("json", 3), "not_json").await;
    dead_letter_all(&app, "w-b", &payloads("bad", 2), "malformed: quantity").await;
    let queue = app.queue("inspector").await;

    let out = app.lockctl_on_keys(&["dead-letters", "requeue", "--older-than", "1d"]);
    assert!(out.contains("requeued 0"), "{out}");
    let out = app.lockctl_on_keys(&["dead-letters", "requeue", "--reason", "malformed"]);
    assert!(out.contains("requeued 2"), "{out}");
    assert_eq!(queue.depth().await.unwrap(), 2);
    let out = app.lockctl_on_keys(&["dead-letters", "purge", "--limit", "1"]);
    assert!(out.contains("purged 1"), "{out}");
    let left = queue.dead_letters(10).await.unwrap();
    let left: Vec<&str> = left.iter().map(|d| d.payload.as_str()).collect();
    assert_eq!(left, ["json-2", "json-1"], "the oldest went first");
}

/// The list keeps the newest `MAX_DEAD_LETTERS` and counts what it dropped; moving more entries
/// than one batch works across batches.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_dead_letter_list_is_capped(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let payloads: Vec<Vec<u8>> = (0..MAX_DEAD_LETTERS + 5)
        .map(|i| format!("m-{i}").into_bytes())
        .collect();
    dead_letter_all(&app, "w-cap", &payloads, "not_json").await;
    let queue = app.queue("inspector").await;
    assert_eq!(queue.dead_depth().await.unwrap(), MAX_DEAD_LETTERS);
    assert_eq!(queue.dead_dropped().await.unwrap(), 5);
    let listed = app.lockctl_on_keys(&["dead-letters", "list", "--limit", "1"]);
    assert!(
        listed.contains("5 older dead letter(s) were dropped"),
        "{listed}"
    );
    let out = app.lockctl_on_keys(&["dead-letters", "requeue"]);
    assert!(
        out.contains(&format!("requeued {MAX_DEAD_LETTERS}")),
        "{out}"
    );
    assert_eq!(queue.dead_depth().await.unwrap(), 0);
    assert_eq!(queue.depth().await.unwrap(), MAX_DEAD_LETTERS);
}
