//! Lock core against a real `redis-server` (one throwaway server per test binary run, a unique
//! key prefix per test). No mocks.
#![allow(unreachable_pub)]

#[path = "../support/redis_server.rs"]
mod redis_server;

mod helpers;

mod errors;
mod fencing;
mod handoff;
mod heartbeat;
mod mutex;
