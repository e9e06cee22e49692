//! The chaos harness's own tests: the fault proxy against a real Redis under each mode, and
//! (in `run.rs`) a seeded `lockctl chaos` run that must find no violation, plus the self-test
//! with the fence check disabled that must find one.
#![allow(unreachable_pub)]

mod proxy;
mod run;
