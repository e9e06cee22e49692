//! The order store against a fresh, migrated Postgres database per test.

use lockstock::{
    order::{OrderId, Outcome, RejectReason},
    store::{self, CommitResult, OrderStore, StoreError},
};
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::helpers::{order, product_id};

const WORKER: &str = "test-worker";

/// A store whose product 1 has `stock` units.
async fn store_with_stock(pool: PgPool, stock: i32) -> OrderStore {
    let store = OrderStore::new(pool);
    store.set_stock(product_id(1), stock).await.unwrap();
    store
}

/// The migrations create the seed's three products with their stock and prices.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_seed_products_exist_after_migrating(pool: PgPool) {
    let rows: Vec<(i32, String, i32, String, i64)> =
        sqlx::query_as("SELECT id, name, stock, price::text, last_fence FROM products ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (1, "iPhone 15".to_owned(), 10, "999.00".to_owned(), 0),
            (2, "MacBook Pro".to_owned(), 5, "2499.00".to_owned(), 0),
            (3, "AirPods Pro".to_owned(), 20, "249.00".to_owned(), 0),
        ]
    );
}

/// A stale holder's commit is refused when a newer holder has claimed but not yet committed
/// (A claims 5, B claims 6, A commits), and the newer holder still commits afterwards.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_stale_commit_is_refused_when_a_newer_holder_has_claimed_but_not_committed(pool: PgPool) {
    let store = store_with_stock(pool, 1).await;
    let (a, b) = (order(1, 1), order(1, 1));

    let stock_a = store.claim_product(a.product_id, 5).await.unwrap();
    let stock_b = store.claim_product(b.product_id, 6).await.unwrap();
    assert_eq!((stock_a, stock_b), (1, 1), "both read the same stock");

    let refused = store
        .commit_fenced(&a, Outcome::from_stock(stock_a, a.quantity), 5, WORKER, 1)
        .await;
    assert!(
        matches!(refused, Err(StoreError::StaleFence { current: 6 })),
        "{refused:?}"
    );
    assert_eq!(
        store.outcome(a.id).await.unwrap(),
        None,
        "no outcome row for the stale holder"
    );
    assert_eq!(
        store.stock(product_id(1)).await.unwrap(),
        1,
        "no stock change"
    );

    let committed = store
        .commit_fenced(&b, Outcome::from_stock(stock_b, b.quantity), 6, WORKER, 1)
        .await
        .unwrap();
    assert_eq!(
        committed,
        CommitResult::Committed {
            outcome: Outcome::Fulfilled,
            remaining_stock: Some(0)
        }
    );
}

/// A stale holder's commit is refused after the newer holder has already committed
/// (A claims 5, B claims 6, B commits, A commits): the product is sold once, not oversold.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_stale_commit_is_refused_after_the_newer_holder_has_committed(pool: PgPool) {
    let store = store_with_stock(pool, 1).await;
    let (a, b) = (order(1, 1), order(1, 1));

    let stock_a = store.claim_product(a.product_id, 5).await.unwrap();
    let stock_b = store.claim_product(b.product_id, 6).await.unwrap();
    store
        .commit_fenced(&b, Outcome::from_stock(stock_b, b.quantity), 6, WORKER, 1)
        .await
        .unwrap();

    let refused = store
        .commit_fenced(&a, Outcome::from_stock(stock_a, a.quantity), 5, WORKER, 1)
        .await;
    assert!(
        matches!(refused, Err(StoreError::StaleFence { current: 6 })),
        "{refused:?}"
    );
    assert_eq!(
        store.stock(product_id(1)).await.unwrap(),
        0,
        "sold exactly once, never below zero"
    );
    assert_eq!(store.outcome(a.id).await.unwrap(), None);
    assert_eq!(store.outcome(b.id).await.unwrap(), Some(Outcome::Fulfilled));
}

/// A stale holder cannot record a rejection from its stale read either: `out_of_stock` is fenced
/// like a sale.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_stale_holder_cannot_record_out_of_stock_either(pool: PgPool) {
    let store = store_with_stock(pool, 0).await;
    let a = order(1, 1);
    store.claim_product(a.product_id, 5).await.unwrap();
    store.claim_product(a.product_id, 6).await.unwrap();

    let refused = store
        .commit_fenced(
            &a,
            Outcome::Rejected(RejectReason::OutOfStock),
            5,
            WORKER,
            1,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::StaleFence { current: 6 })),
        "{refused:?}"
    );
    assert_eq!(store.outcome(a.id).await.unwrap(), None);
}

/// A claim whose token is not strictly above the row's fence is refused, so no two holders can
/// ever share a token, and the high-water mark reports the highest token that claimed.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_claim_with_a_token_not_above_the_rows_fence_is_refused(pool: PgPool) {
    let store = OrderStore::new(pool);
    let p = product_id(2);
    assert_eq!(store.fence_high_water(p).await.unwrap(), 0);
    assert_eq!(store.claim_product(p, 7).await.unwrap(), 5);

    for stale in [7, 3] {
        let refused = store.claim_product(p, stale).await;
        assert!(
            matches!(refused, Err(StoreError::StaleFence { current: 7 })),
            "{refused:?}"
        );
    }
    assert_eq!(store.fence_high_water(p).await.unwrap(), 7);
    assert_eq!(store.max_fence_high_water().await.unwrap(), 7);
    assert_eq!(
        store.claim_product(p, 8).await.unwrap(),
        5,
        "a higher token claims again"
    );
}

/// Committing the same order twice has one effect: the second call reports the first outcome and
/// changes no stock, even under a newer token.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn committing_the_same_order_twice_has_one_effect(pool: PgPool) {
    let store = store_with_stock(pool, 5).await;
    let o = order(1, 2);

    let stock = store.claim_product(o.product_id, 1).await.unwrap();
    let first = store
        .commit_fenced(&o, Outcome::from_stock(stock, o.quantity), 1, WORKER, 1)
        .await
        .unwrap();
    assert_eq!(
        first,
        CommitResult::Committed {
            outcome: Outcome::Fulfilled,
            remaining_stock: Some(3)
        }
    );

    // Redelivered and processed again by the next holder.
    let stock = store.claim_product(o.product_id, 2).await.unwrap();
    let second = store
        .commit_fenced(
            &o,
            Outcome::from_stock(stock, o.quantity),
            2,
            "other-worker",
            2,
        )
        .await
        .unwrap();
    assert_eq!(second, CommitResult::AlreadyDecided(Outcome::Fulfilled));
    // And through the unfenced path and the rejection path too.
    let third = store
        .commit_unfenced(&o, Outcome::Fulfilled, WORKER, 3)
        .await
        .unwrap();
    assert_eq!(third, CommitResult::AlreadyDecided(Outcome::Fulfilled));
    let fourth = store
        .record_rejection(o.id, None, None, RejectReason::Malformed, WORKER, 4)
        .await
        .unwrap();
    assert_eq!(fourth, CommitResult::AlreadyDecided(Outcome::Fulfilled));

    assert_eq!(
        store.stock(product_id(1)).await.unwrap(),
        3,
        "decremented once"
    );
    let record = store.order(o.id).await.unwrap().unwrap();
    assert_eq!(
        (record.fence, record.worker.as_deref(), record.attempts),
        (Some(1), Some(WORKER), Some(1))
    );
}

/// Many concurrent commits of one order id (a message delivered to several workers at once)
/// produce exactly one outcome and one stock change.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn concurrent_commits_of_one_order_decide_it_once(pool: PgPool) {
    let store = store_with_stock(pool, 100).await;
    let o = order(1, 1);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .commit_unfenced(&o, Outcome::Fulfilled, &format!("w{i}"), 1)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut committed = 0;
    for task in tasks {
        if task.await.unwrap().is_committed() {
            committed += 1;
        }
    }
    assert_eq!(committed, 1);
    assert_eq!(store.stock(product_id(1)).await.unwrap(), 99);
}

/// The fenced path never takes stock below zero: successive holders decide from what they read,
/// and a sale whose stock vanished outside the fence is refused rather than applied.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_fenced_path_never_takes_stock_below_zero(pool: PgPool) {
    let store = store_with_stock(pool, 2).await;
    let mut outcomes = Vec::new();
    for fence in 1..=5u64 {
        let o = order(1, 1);
        let stock = store.claim_product(o.product_id, fence).await.unwrap();
        let result = store
            .commit_fenced(&o, Outcome::from_stock(stock, o.quantity), fence, WORKER, 1)
            .await
            .unwrap();
        outcomes.push(result.outcome());
    }
    let rejected = Outcome::Rejected(RejectReason::OutOfStock);
    assert_eq!(
        outcomes,
        vec![
            Outcome::Fulfilled,
            Outcome::Fulfilled,
            rejected,
            rejected,
            rejected
        ]
    );
    assert_eq!(store.stock(product_id(1)).await.unwrap(), 0);

    // The holder read 3, then an operator set the stock to 0: the sale is refused.
    store.set_stock(product_id(1), 3).await.unwrap();
    let o = order(1, 2);
    let stock = store.claim_product(o.product_id, 6).await.unwrap();
    store.set_stock(product_id(1), 0).await.unwrap();
    let refused = store
        .commit_fenced(&o, Outcome::from_stock(stock, o.quantity), 6, WORKER, 1)
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::InsufficientStock {
                stock: 0,
                quantity: 2,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(store.stock(product_id(1)).await.unwrap(), 0);
    assert_eq!(store.outcome(o.id).await.unwrap(), None);
}

/// An unknown product is reported as such by every call that names it, and its rejection is
/// recorded without a product row.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn an_unknown_product_is_reported_and_can_be_rejected(pool: PgPool) {
    let store = OrderStore::new(pool);
    let o = order(999, 1);
    let ghost = product_id(999);
    assert!(
        matches!(store.claim_product(ghost, 1).await, Err(StoreError::UnknownProduct(p)) if p == ghost)
    );
    assert!(matches!(
        store.stock(ghost).await,
        Err(StoreError::UnknownProduct(_))
    ));
    assert!(matches!(
        store.set_stock(ghost, 1).await,
        Err(StoreError::UnknownProduct(_))
    ));
    assert!(matches!(
        store.fence_high_water(ghost).await,
        Err(StoreError::UnknownProduct(_))
    ));
    assert!(matches!(
        store
            .commit_fenced(&o, Outcome::Fulfilled, 1, WORKER, 1)
            .await,
        Err(StoreError::UnknownProduct(_))
    ));
    assert!(matches!(
        store
            .commit_unfenced(&o, Outcome::Fulfilled, WORKER, 1)
            .await,
        Err(StoreError::UnknownProduct(_))
    ));
    assert_eq!(
        store.outcome(o.id).await.unwrap(),
        None,
        "refused commits left no row"
    );

    let recorded = store
        .record_rejection(
            o.id,
            Some(999),
            Some(1),
            RejectReason::UnknownProduct,
            WORKER,
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        recorded,
        CommitResult::Committed {
            outcome: Outcome::Rejected(RejectReason::UnknownProduct),
            remaining_stock: None
        }
    );
    let record = store.order(o.id).await.unwrap().unwrap();
    assert_eq!((record.product_id, record.quantity), (Some(999), Some(1)));
}

/// A poison message with a readable id gets one `rejected` row, even with no usable product or
/// quantity, and recording it again changes nothing.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_poison_rejection_is_recorded_once(pool: PgPool) {
    let store = OrderStore::new(pool);
    let id = OrderId::new_v4();
    let first = store
        .record_rejection(id, None, Some(0), RejectReason::InvalidQuantity, WORKER, 1)
        .await
        .unwrap();
    assert!(first.is_committed());
    let again = store
        .record_rejection(id, Some(1), Some(1), RejectReason::Malformed, WORKER, 2)
        .await
        .unwrap();
    assert_eq!(
        again,
        CommitResult::AlreadyDecided(Outcome::Rejected(RejectReason::InvalidQuantity))
    );
    let tally = store.tally(None).await.unwrap();
    assert_eq!((tally.fulfilled, tally.rejected), (0, 1));
}

/// The unfenced path (the `--no-lock` demo) oversells when two workers read the stock before
/// either commits: the schema deliberately allows negative stock.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_unfenced_path_oversells_when_reads_race(pool: PgPool) {
    let store = store_with_stock(pool, 1).await;
    let (a, b) = (order(1, 1), order(1, 1));
    let read_a = store.stock(a.product_id).await.unwrap();
    let read_b = store.stock(b.product_id).await.unwrap();
    store
        .commit_unfenced(&a, Outcome::from_stock(read_a, a.quantity), WORKER, 1)
        .await
        .unwrap();
    let second = store
        .commit_unfenced(&b, Outcome::from_stock(read_b, b.quantity), WORKER, 1)
        .await
        .unwrap();
    assert_eq!(
        second,
        CommitResult::Committed {
            outcome: Outcome::Fulfilled,
            remaining_stock: Some(-1)
        }
    );
    let tally = store.tally(Some(product_id(1))).await.unwrap();
    assert_eq!((tally.fulfilled, tally.fulfilled_quantity), (2, 2));
}

/// `create_products` makes products 1..=n with the given stock, resetting stock but never
/// lowering a fence, and `delete_orders_for` clears a product's outcomes for a new round.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn create_products_upserts_stock_and_keeps_fences(pool: PgPool) {
    let store = OrderStore::new(pool);
    store.claim_product(product_id(2), 9).await.unwrap();
    store.create_products(50, 7).await.unwrap();
    for id in [1, 2, 3, 50] {
        assert_eq!(store.stock(product_id(id)).await.unwrap(), 7);
    }
    assert!(matches!(
        store.stock(product_id(51)).await,
        Err(StoreError::UnknownProduct(_))
    ));
    assert_eq!(store.fence_high_water(product_id(2)).await.unwrap(), 9);

    let o = order(2, 1);
    store
        .commit_unfenced(&o, Outcome::Fulfilled, WORKER, 1)
        .await
        .unwrap();
    assert_eq!(store.delete_orders_for(product_id(2)).await.unwrap(), 1);
    assert_eq!(store.outcome(o.id).await.unwrap(), None);
}

/// Several processes migrating one empty database at once all succeed and apply each migration
/// exactly once (sqlx's advisory lock serialises them).
#[sqlx::test(migrations = false)]
async fn concurrent_migrations_apply_once(pool: PgPool) {
    let options = pool.connect_options().as_ref().clone();
    let migrators: Vec<_> = (0..4)
        .map(|_| {
            let options = options.clone();
            tokio::spawn(async move {
                // Separate pools, as separate processes would have.
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .unwrap();
                store::migrate(&pool).await
            })
        })
        .collect();
    for migrator in migrators {
        migrator.await.unwrap().unwrap();
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied,
        i64::try_from(store::MIGRATOR.iter().count()).unwrap()
    );
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(products, 3);
}

/// Fencing holds for EVERY interleaving, not just likely ones: for three holders, every order of
/// their six steps (claim, then commit) and every assignment of tokens to holders (a holder that
/// took its token earlier may claim later), one unit of stock is sold at most once and the ledger
/// balances.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn fencing_holds_for_every_interleaving_of_three_holders(pool: PgPool) {
    let interleavings = interleavings(&[2, 2, 2]);
    let token_orders = [
        [1, 2, 3],
        [1, 3, 2],
        [2, 1, 3],
        [2, 3, 1],
        [3, 1, 2],
        [3, 2, 1],
    ];
    let scenarios = interleavings.len() * token_orders.len();
    let store = OrderStore::new(pool);
    store
        .create_products(i32::try_from(scenarios).unwrap(), 1)
        .await
        .unwrap();

    let mut product = 0;
    for steps in &interleavings {
        for tokens in &token_orders {
            product += 1;
            let orders = [order(product, 1), order(product, 1), order(product, 1)];
            let mut read: [Option<i32>; 3] = [None; 3];
            for &holder in steps {
                let (o, fence) = (&orders[holder], tokens[holder]);
                match read[holder] {
                    None => match store.claim_product(o.product_id, fence).await {
                        Ok(stock) => read[holder] = Some(stock),
                        Err(StoreError::StaleFence { .. }) => read[holder] = Some(i32::MIN),
                        Err(e) => panic!("claim: {e}"),
                    },
                    Some(i32::MIN) => {} // refused at claim: this holder stops.
                    Some(stock) => {
                        match store
                            .commit_fenced(
                                o,
                                Outcome::from_stock(stock, o.quantity),
                                fence,
                                WORKER,
                                1,
                            )
                            .await
                        {
                            Ok(_) | Err(StoreError::StaleFence { .. }) => {}
                            Err(e) => panic!("commit: {e}"),
                        }
                    }
                }
            }
            let stock = store.stock(product_id(product)).await.unwrap();
            let tally = store.tally(Some(product_id(product))).await.unwrap();
            assert!(
                stock >= 0,
                "steps {steps:?} tokens {tokens:?}: stock {stock}"
            );
            assert_eq!(
                i64::from(stock) + tally.fulfilled_quantity,
                1,
                "steps {steps:?} tokens {tokens:?}: ledger does not balance"
            );
        }
    }
}

/// Every sequence of holder indices in which holder `i` appears `counts[i]` times.
fn interleavings(counts: &[usize]) -> Vec<Vec<usize>> {
    if counts.iter().all(|&c| c == 0) {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for (holder, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let mut rest = counts.to_vec();
        rest[holder] -= 1;
        for mut tail in interleavings(&rest) {
            tail.insert(0, holder);
            all.push(tail);
        }
    }
    all
}
