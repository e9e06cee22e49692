//! lockstock

pub mod lock;

pub mod order;
pub mod store;
