//! The chaos harness's own tests: the fault proxy against a real Redis under each mode, and
//! (in `run.rs`) a seeded `lockctl chaos` run that must find no violation, a Redis-wipe run, and
//! the two self-tests (fence check disabled, hand-off discarding undone) that must find one.
#![allow(unreachable_pub)]

mod proxy;
mod run;
