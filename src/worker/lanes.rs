//! Per-product lanes: at most one task per product in a process, so a hot product cannot fill
//! every concurrency slot with tasks waiting on the same lock.
//!
//! - When a job arrives for a product that has no active lane, then a lane opens and the caller
//!   starts a task for it (using one concurrency slot).
//! - When a lane is already active, then the job is parked in that lane's FIFO backlog and uses
//!   no slot; the lane's task takes it next (under the lock it already holds, when it can).
//! - When a lane's backlog is empty, then [`Lanes::next`] closes the lane atomically, so a job
//!   arriving a moment later opens a new one rather than being stranded.
//! - Parked jobs are bounded (`backlog_limit`); the puller waits for space before reserving more.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use tokio::sync::Notify;

use crate::order::{ProductId, PurchaseOrder};

/// One reserved message and its decoded order.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The raw message, exactly as in the processing list (needed to acknowledge it).
    pub(crate) payload: Vec<u8>,
    /// The decoded order.
    pub(crate) order: PurchaseOrder,
    /// How many times this worker has tried it.
    pub(crate) attempts: u32,
}

#[derive(Debug, Default)]
struct Inner {
    /// Active lanes and their parked jobs.
    lanes: HashMap<ProductId, VecDeque<Job>>,
    /// Parked jobs over all lanes.
    parked: usize,
}

/// The process's product lanes.
#[derive(Debug)]
pub(crate) struct Lanes {
    inner: Mutex<Inner>,
    /// Signalled when a parked job is taken (room in the backlog).
    space: Notify,
    /// Most jobs parked at once.
    backlog_limit: usize,
}

impl Lanes {
    pub(crate) fn new(backlog_limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            space: Notify::new(),
            backlog_limit,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `job` in its product's active lane (`None`), or opens the lane and hands the job
    /// back for a new lane task (`Some`).
    pub(crate) fn offer(&self, job: Job) -> Option<Job> {
        let mut inner = self.inner();
        let product = job.order.product_id;
        if let Some(backlog) = inner.lanes.get_mut(&product) {
            backlog.push_back(job);
            inner.parked += 1;
            None
        } else {
            inner.lanes.insert(product, VecDeque::new());
            Some(job)
        }
    }

    /// The lane's next job; `None` closes the lane.
    pub(crate) fn next(&self, product: ProductId) -> Option<Job> {
        let mut inner = self.inner();
        let job = inner.lanes.get_mut(&product).and_then(VecDeque::pop_front);
        match job {
            Some(job) => {
                inner.parked -= 1;
                drop(inner);
                self.space.notify_waiters();
                Some(job)
            }
            None => {
                inner.lanes.remove(&product);
                None
            }
        }
    }

    /// Waits until fewer than `backlog_limit` jobs are parked.
    pub(crate) async fn wait_for_space(&self) {
        loop {
            let notified = self.space.notified();
            if self.inner().parked < self.backlog_limit {
                return;
            }
            notified.await;
        }
    }

    /// Jobs parked right now.
    pub(crate) fn parked(&self) -> usize {
        self.inner().parked
    }
}
