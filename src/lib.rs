//! lockstock

pub mod lock;

pub mod order;
