//! Scheduling inside a worker: concurrency slots and per-product lanes.
//!
//! A *slot* is one running task; there are `concurrency` of them. A *lane* is the queue of one
//! product's orders in this process: at most one slot works on a product at a time, so a hot
//! product cannot fill every slot with tasks waiting on the same lock.
//!
//! - When an order arrives for a product with an active lane, then it is parked in that lane's
//!   FIFO and uses no slot; the lane's task takes it next (in the same lock hold when it can).
//! - When an order opens a new lane (or is a task of its own: a poison message, the unsafe
//!   `--no-lock` path), then it runs at once if a slot is free, else it waits in the ready FIFO
//!   and the next slot to finish its work takes it. The puller never blocks on slots, so busy
//!   lanes keep receiving their orders (and batch them) while other products wait their turn.
//! - When a lane's backlog is empty, then [`Lanes::next`] closes it atomically, so an order
//!   arriving a moment later opens a new lane rather than being stranded.
//! - Handing a slot over ([`Lanes::slot_next`]) and freeing it happen under one mutex, so a task
//!   queued in the ready FIFO is never left without a slot.
//! - Parked and ready orders are bounded (a [`PrefetchLimit`]: fixed, or following the pace of
//!   the orders taken in here); the puller waits for space.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use tokio::sync::Notify;

use super::prefetch::PrefetchLimit;
use crate::order::{Poison, ProductId, PurchaseOrder};

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

/// Work for a slot.
#[derive(Debug)]
pub(crate) enum Task {
    /// Run a product's lane, starting with this order.
    Lane(Job),
    /// The unsafe `--no-lock` path for one order.
    Unlocked(Job),
    /// A message that is not a valid order.
    Poison(Vec<u8>, Poison),
}

/// What [`Lanes::admit`] did with a task.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// A slot was free: run the task now in a new slot task.
    Run(Task),
    /// Parked in an active lane or queued for a slot; nothing to start.
    Queued,
}

#[derive(Debug)]
struct Inner {
    /// Active lanes and their parked orders.
    lanes: HashMap<ProductId, VecDeque<Job>>,
    /// Tasks waiting for a slot, oldest first.
    ready: VecDeque<Task>,
    /// Parked orders plus ready tasks.
    waiting: usize,
    /// Slots not running a task.
    free_slots: usize,
}

/// The process's slots and product lanes.
#[derive(Debug)]
pub(crate) struct Lanes {
    inner: Mutex<Inner>,
    /// Signalled when waiting work is taken (room in the backlog).
    space: Notify,
    /// Most orders waiting (parked or ready) at once.
    limit: PrefetchLimit,
}

impl Lanes {
    pub(crate) fn new(slots: usize, limit: PrefetchLimit) -> Self {
        Self {
            inner: Mutex::new(Inner {
                lanes: HashMap::new(),
                ready: VecDeque::new(),
                waiting: 0,
                free_slots: slots,
            }),
            space: Notify::new(),
            limit,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a task in: parks a lane order in its active lane, runs it in a free slot, or queues
    /// it for the next free slot.
    pub(crate) fn admit(&self, task: Task) -> Admitted {
        self.limit.admitted();
        let mut inner = self.inner();
        if let Task::Lane(job) = task {
            let product = job.order.product_id;
            if let Some(backlog) = inner.lanes.get_mut(&product) {
                backlog.push_back(job);
                inner.waiting += 1;
                return Admitted::Queued;
            }
            inner.lanes.insert(product, VecDeque::new());
            return Self::run_or_queue(&mut inner, Task::Lane(job));
        }
        Self::run_or_queue(&mut inner, task)
    }

    fn run_or_queue(inner: &mut Inner, task: Task) -> Admitted {
        if inner.free_slots > 0 {
            inner.free_slots -= 1;
            Admitted::Run(task)
        } else {
            inner.ready.push_back(task);
            inner.waiting += 1;
            Admitted::Queued
        }
    }

    /// Called by a slot task whose work is done: the next ready task for it, or `None` (and the
    /// slot is free again).
    pub(crate) fn slot_next(&self) -> Option<Task> {
        let mut inner = self.inner();
        match inner.ready.pop_front() {
            Some(task) => {
                inner.waiting -= 1;
                drop(inner);
                self.space.notify_waiters();
                Some(task)
            }
            None => {
                inner.free_slots += 1;
                None
            }
        }
    }

    /// The lane's next order; `None` closes the lane.
    pub(crate) fn next(&self, product: ProductId) -> Option<Job> {
        let mut inner = self.inner();
        let job = inner.lanes.get_mut(&product).and_then(VecDeque::pop_front);
        match job {
            Some(job) => {
                inner.waiting -= 1;
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

    /// The lane's next parked order, leaving the lane open even when there is none (for filling
    /// a batch while the lane's task still runs).
    pub(crate) fn pop_parked(&self, product: ProductId) -> Option<Job> {
        let mut inner = self.inner();
        let job = inner
            .lanes
            .get_mut(&product)
            .and_then(VecDeque::pop_front)?;
        inner.waiting -= 1;
        drop(inner);
        self.space.notify_waiters();
        Some(job)
    }

    /// Room for this many more waiting orders (at least 1 once there is any room).
    pub(crate) fn room(&self) -> usize {
        self.limit.get().saturating_sub(self.inner().waiting)
    }

    /// Waits until fewer orders wait than the limit allows.
    pub(crate) async fn wait_for_space(&self) {
        loop {
            let notified = self.space.notified();
            if self.inner().waiting < self.limit.get() {
                return;
            }
            notified.await;
        }
    }

    /// Takes every order that waits (parked in a lane or queued for a slot) out of the lanes, for
    /// giving back on shutdown: the raw messages, in no particular order. Lanes whose task is
    /// running stay open (their task finds them empty and closes them); lanes that had not
    /// started are closed.
    pub(crate) fn take_waiting(&self) -> Vec<Vec<u8>> {
        let mut inner = self.inner();
        let mut taken = Vec::with_capacity(inner.waiting);
        for task in std::mem::take(&mut inner.ready) {
            match task {
                Task::Lane(job) => {
                    let product = job.order.product_id;
                    taken.push(job.payload);
                    if let Some(parked) = inner.lanes.remove(&product) {
                        taken.extend(parked.into_iter().map(|job| job.payload));
                    }
                }
                Task::Unlocked(job) => taken.push(job.payload),
                Task::Poison(payload, _) => taken.push(payload),
            }
        }
        for parked in inner.lanes.values_mut() {
            taken.extend(parked.drain(..).map(|job| job.payload));
        }
        inner.waiting = 0;
        drop(inner);
        self.space.notify_waiters();
        taken
    }

    /// Orders parked or waiting for a slot right now.
    pub(crate) fn parked(&self) -> usize {
        self.inner().waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Quantity;

    fn job(product: i32) -> Job {
        let order = PurchaseOrder::new(ProductId::new(product).unwrap(), Quantity::new(1).unwrap());
        Job {
            payload: order.to_json(),
            order,
            attempts: 0,
        }
    }

    #[test]
    fn orders_of_an_active_lane_park_and_new_lanes_wait_for_a_slot() {
        let lanes = Lanes::new(1, PrefetchLimit::fixed(100));
        assert!(matches!(lanes.admit(Task::Lane(job(1))), Admitted::Run(_)));
        assert!(matches!(lanes.admit(Task::Lane(job(1))), Admitted::Queued)); // parked in lane 1
        assert!(matches!(lanes.admit(Task::Lane(job(2))), Admitted::Queued)); // waits for the slot
        assert_eq!(lanes.parked(), 2);
        let product1 = ProductId::new(1).unwrap();
        assert!(lanes.next(product1).is_some());
        assert!(lanes.next(product1).is_none()); // lane 1 closed
        assert!(matches!(lanes.slot_next(), Some(Task::Lane(j)) if j.order.product_id.get() == 2));
        assert!(lanes.slot_next().is_none()); // the slot is free again
        assert!(matches!(lanes.admit(Task::Lane(job(3))), Admitted::Run(_)));
    }

    #[test]
    fn taking_the_waiting_orders_empties_parked_and_ready_work() {
        let lanes = Lanes::new(1, PrefetchLimit::fixed(100));
        assert!(matches!(lanes.admit(Task::Lane(job(1))), Admitted::Run(_)));
        lanes.admit(Task::Lane(job(1))); // parked behind the running lane
        lanes.admit(Task::Lane(job(2))); // waits for the slot
        lanes.admit(Task::Lane(job(2))); // parked in the waiting lane
        assert_eq!(lanes.take_waiting().len(), 3);
        assert_eq!(lanes.parked(), 0);
        assert!(lanes.next(ProductId::new(1).unwrap()).is_none()); // the running lane closes
        assert!(lanes.slot_next().is_none());
        // Product 2's lane was closed: a new order for it opens a lane again.
        assert!(matches!(lanes.admit(Task::Lane(job(2))), Admitted::Run(_)));
    }
}
