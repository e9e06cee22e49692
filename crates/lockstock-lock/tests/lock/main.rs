//! Lock core against a real `redis-server` (a throwaway server and a unique key prefix per
//! test). No mocks.
#![allow(unreachable_pub)]

#[path = "../support/redis_server.rs"]
mod redis_server;

#[path = "../support/commandstats.rs"]
mod commandstats;

mod helpers;

mod calls;
mod errors;
mod fair;
mod fencing;
mod handoff;
mod hardening;
mod heartbeat;
mod mutex;
mod observe;
mod redlock;
mod rwlock;
mod semaphore;
