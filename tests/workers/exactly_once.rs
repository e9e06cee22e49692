//! Exactly one outcome per order, an exact stock ledger, and the race demo's two results.

use std::{collections::HashSet, time::Duration};

use sqlx::PgPool;

use crate::helpers::{Env, order};

/// Invariant: 1,000 orders over 4 worker processes and 20 products each get exactly one outcome,
/// no product goes below zero, and for every product initial = final + fulfilled quantity.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_thousand_orders_over_four_workers_get_exactly_one_outcome_each(pool: PgPool) {
    let env = Env::new(pool).await;
    let initial = 40;
    env.products(20, initial).await;
    let orders: Vec<_> = (0..1_000)
        .map(|i| order(1 + (i * 7 % 20), 1 + (i % 3)))
        .collect();
    let workers: Vec<_> = (0..4).map(|i| env.worker(&format!("w{i}"), &[])).collect();

    env.push(&orders).await;
    env.wait_decided(1_000, Duration::from_secs(60)).await;

    let outcomes = env.outcomes().await;
    let pushed: HashSet<_> = orders.iter().map(|o| o.id.as_uuid()).collect();
    assert_eq!(outcomes.len(), 1_000, "one row per order");
    assert_eq!(outcomes.keys().copied().collect::<HashSet<_>>(), pushed);
    for product in 1..=20 {
        let (stock, sold) = (env.stock(product).await, env.sold(product).await);
        assert!(stock >= 0, "product {product} oversold: stock {stock}");
        assert_eq!(
            i64::from(initial),
            i64::from(stock) + sold,
            "ledger of product {product}"
        );
    }
    for (id, (status, reason)) in &outcomes {
        assert!(
            status == "fulfilled" || reason.as_deref() == Some("out_of_stock"),
            "{id}: unexpected {status} {reason:?}"
        );
    }
    assert_eq!(
        env.processing_total().await,
        0,
        "acknowledged messages left in processing lists"
    );
    drop(workers);
}

/// The demo's point: with `--no-lock` concurrent workers oversell a stock of 1; with locks
/// exactly one order is fulfilled and the stock ends at 0.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn without_the_lock_workers_oversell_and_with_it_they_do_not(pool: PgPool) {
    let env = Env::new(pool).await;

    // Unlocked: 20 orders, stock 1, 4 workers, a 100 ms slow step between read and sale.
    env.products(1, 1).await;
    let unlocked: Vec<_> = (0..4)
        .map(|i| env.worker(&format!("unlocked{i}"), &["--no-lock", "--work-ms", "100"]))
        .collect();
    env.push(&(0..20).map(|_| order(1, 1)).collect::<Vec<_>>())
        .await;
    env.wait_decided(20, Duration::from_secs(30)).await;
    let oversold_stock = env.stock(1).await;
    let oversold_sales = env.sold(1).await;
    drop(unlocked);
    assert!(
        oversold_sales > 1,
        "the unlocked run sold {oversold_sales}: the race did not show"
    );
    assert!(oversold_stock < 0, "stock {oversold_stock}");

    // Locked: the same against a fresh product.
    env.store
        .set_stock(lockstock::order::ProductId::new(2).unwrap(), 1)
        .await
        .unwrap();
    let locked: Vec<_> = (0..4)
        .map(|i| env.worker(&format!("locked{i}"), &["--work-ms", "100"]))
        .collect();
    env.push(&(0..20).map(|_| order(2, 1)).collect::<Vec<_>>())
        .await;
    env.wait_decided(40, Duration::from_secs(30)).await;
    assert_eq!(env.sold(2).await, 1, "exactly one locked purchase succeeds");
    assert_eq!(env.stock(2).await, 0);
    drop(locked);
}
