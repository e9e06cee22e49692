//! Duplicate deliveries and poison messages.

use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{Env, order, wait_for};

/// The same message delivered twice (pushed twice, deterministically) is decided once: one row,
/// one stock decrement, and both copies acknowledged. A redelivery after the outcome was committed
/// (as after a crash between commit and acknowledgement) also changes nothing.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_message_delivered_twice_is_decided_once(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 10).await;
    let o = order(1, 3);
    let _worker = env.worker("w", &[]);

    env.push_raw(&[o.to_json(), o.to_json()]).await;
    wait_for(
        "both copies acknowledged",
        Duration::from_secs(10),
        || async {
            env.decided().await == 1
                && env.llen(&env.pending_key()).await == 0
                && env.processing_total().await == 0
        },
    )
    .await;
    assert_eq!(env.stock(1).await, 7);

    env.push_raw(&[o.to_json()]).await; // redelivered after its commit
    wait_for(
        "the redelivery acknowledged",
        Duration::from_secs(10),
        || async { env.llen(&env.pending_key()).await == 0 && env.processing_total().await == 0 },
    )
    .await;
    assert_eq!(env.decided().await, 1);
    assert_eq!(env.stock(1).await, 7, "a redelivered order was sold twice");
}

/// Poison never crashes a worker: an identifiable order gets a `rejected` row with the reason,
/// anything else goes to the dead letter list with the reason, and valid orders keep flowing.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn poison_messages_are_rejected_or_dead_lettered_and_the_worker_carries_on(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 10).await;
    let id = |n: u32| format!("00000000-0000-4000-8000-{n:012}");
    let mut worker = env.worker("w", &[]);
    let poison: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        b"[1, 2, 3]".to_vec(),
        br#"{"product_id": 1, "quantity": 1}"#.to_vec(),
        br#"{"id": "nope", "product_id": 1, "quantity": 1}"#.to_vec(),
        format!(r#"{{"id": "{}", "product_id": 1, "quantity": 0}}"#, id(1)).into_bytes(),
        format!(r#"{{"id": "{}", "product_id": 1, "quantity": -4}}"#, id(2)).into_bytes(),
        format!(
            r#"{{"id": "{}", "product_id": "one", "quantity": 1}}"#,
            id(3)
        )
        .into_bytes(),
        format!(r#"{{"id": "{}", "product_id": 999, "quantity": 1}}"#, id(4)).into_bytes(),
        format!(r#"{{"id": "{}", "product_id": 1}}"#, id(5)).into_bytes(),
        format!(
            r#"{{"id": "{}", "product_id": 1, "quantity": 1, "pad": "{}"}}"#,
            id(6),
            "x".repeat(70_000)
        )
        .into_bytes(),
    ];
    env.push_raw(&poison).await;
    let valid = order(1, 2);
    env.push(&[valid]).await;

    wait_for("every message handled", Duration::from_secs(15), || async {
        env.llen(&env.pending_key()).await == 0
            && env.processing_total().await == 0
            && env.decided().await >= 6
    })
    .await;
    let outcomes = env.outcomes().await;
    let reason = |n: u32| {
        outcomes
            .get(&id(n).parse().unwrap())
            .and_then(|(_, r)| r.clone())
    };
    assert_eq!(reason(1).as_deref(), Some("invalid_quantity"));
    assert_eq!(reason(2).as_deref(), Some("invalid_quantity"));
    assert_eq!(reason(3).as_deref(), Some("malformed"));
    assert_eq!(reason(4).as_deref(), Some("unknown_product"));
    assert_eq!(reason(5).as_deref(), Some("malformed"));
    assert_eq!(
        outcomes.get(&valid.id.as_uuid()).map(|(s, _)| s.as_str()),
        Some("fulfilled")
    );
    assert_eq!(env.stock(1).await, 8);

    let dead = env.queue().await.dead_letters(100).await.unwrap();
    let mut reasons: Vec<_> = dead.iter().map(|d| d.reason.clone()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "invalid_id",
            "missing_id",
            "not_an_object",
            "not_json",
            "too_large"
        ]
    );
    assert!(
        dead.iter().any(|d| d.payload == "not json at all"),
        "dead letters keep the original payload"
    );

    worker.signal("TERM");
    assert!(
        worker.wait_exit(Duration::from_secs(10)).await.success(),
        "{}",
        worker.log()
    );
}

/// Hardening hole 5: a redelivered copy inside one batch must not count twice against the stock.
/// Stock 3; orders A, X, X (a copy of X), Y are pulled in this order, so X's copy waits in the
/// same product lane as the original and lands in one lock hold with it. Exactly one row per
/// order, every one of A, X and Y fulfilled (3 units for stock 3, none lost to the copy), the
/// stock at 0 and both copies of X acknowledged.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_copy_in_the_same_batch_does_not_cost_a_later_order_its_unit(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 3).await;
    let (a, x, y) = (order(1, 1), order(1, 1), order(1, 1));
    // Queued before the worker starts: one pull takes all four, in this order, into one lane.
    env.push_raw(&[a.to_json(), x.to_json(), x.to_json(), y.to_json()])
        .await;
    let worker = env.worker("w", &["--work-ms", "20"]);

    wait_for(
        "every message acknowledged",
        Duration::from_secs(15),
        || async {
            env.decided().await == 3
                && env.llen(&env.pending_key()).await == 0
                && env.processing_total().await == 0
        },
    )
    .await;
    let outcomes = env.outcomes().await;
    for (name, o) in [("A", &a), ("X", &x), ("Y", &y)] {
        assert_eq!(
            outcomes
                .get(&o.id.as_uuid())
                .map(|(status, _)| status.as_str()),
            Some("fulfilled"),
            "order {name}: {outcomes:?}\n{}",
            worker.log()
        );
    }
    assert_eq!(env.sold(1).await, 3);
    assert_eq!(env.stock(1).await, 0);
}
