//! lockstock
