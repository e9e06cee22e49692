//! Shared set-up for the pipeline tests.

use lockstock::{
    order::{ProductId, PurchaseOrder, Quantity},
    queue::{JobQueue, QueueConfig},
    services::SharedRedis,
};
use redis::aio::ConnectionManager;

use crate::redis_server::RedisServer;

/// A test's own Redis: a fresh server and a unique key prefix.
pub struct TestRedis {
    /// The server; killed when the test ends.
    pub server: RedisServer,
    /// `test-<uuid>`, the namespace of every key this test touches.
    pub prefix: String,
}

impl TestRedis {
    /// Starts a server for this test.
    pub fn start() -> Self {
        Self {
            server: RedisServer::start(),
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Queue config under this test's prefix for worker `worker`.
    pub fn queue_config(&self, worker: &str) -> QueueConfig {
        QueueConfig::namespaced(&self.prefix).with_worker_id(worker)
    }

    /// A queue handle for `worker` with its own connections (as a separate process would have).
    pub async fn queue(&self, worker: &str) -> JobQueue {
        self.connect()
            .await
            .queue(self.queue_config(worker))
            .expect("queue config")
    }

    /// A plain connection for looking at keys directly.
    pub async fn raw(&self) -> ConnectionManager {
        self.connect().await.connection()
    }

    /// A process's connections to the test redis, made as the binaries make them.
    async fn connect(&self) -> SharedRedis {
        SharedRedis::connect(&self.url())
            .await
            .expect("connect to the test redis")
    }
}

pub use crate::test_env::wait_for;

/// An order with a fresh id.
pub fn order(product: i32, quantity: i32) -> PurchaseOrder {
    PurchaseOrder::new(
        product_id(product),
        Quantity::new(quantity).expect("valid quantity"),
    )
}

/// A validated product id.
pub fn product_id(id: i32) -> ProductId {
    ProductId::new(id).expect("valid product id")
}
