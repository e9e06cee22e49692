//! Read-only views of the queue and the locks, shared by the API's routes, `lockctl status` and
//! the live page. Each is a snapshot read in a few round trips, never one consistent instant.

mod locks;
mod queue;

pub use self::{
    locks::{HeldLock, held_locks},
    queue::{QueueView, queue_view},
};
